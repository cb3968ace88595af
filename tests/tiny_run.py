"""Tiny runs, shared by the tests: settings that make a run take seconds, and helpers.

Not a test module: the tests import it. It holds

- :data:`TINY_NET_TOML`, the net of every tiny recipe written in a test: a
  ``test_resnet`` backbone and a ``fusion`` head with 8 channels;
- ``--set`` overrides that shrink a built-in recipe (:data:`TINY_SCENES`,
  :data:`TINY_STAGES`, :data:`TINY_QUICKSTART`), and :func:`set_options`;
- :func:`subprocess_environment`, the environment of a ``pctkit`` subprocess;
- a tiny complete run (:data:`RECIPE`, :func:`finished_run`), shared by the tests of
  resuming, exporting and reporting: digit scenes of 32 px, the tiny net and 6
  iterations per stage, on one CPU thread, so that a run in this process and one in a
  subprocess compute the same floating-point operations in the same order. Random
  rescaling, crops and colour jitter are on, so that exact resumption covers the
  augmentation's randomness too.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent

TINY_NET_TOML = """\
[model.backbone]
type = "timm"
model_name = "test_resnet"
out_indices = [1, 3]
output_stride = 32

[model.head]
type = "fusion"
channels = 8
"""

# ``--set`` overrides that shrink a built-in recipe. A test that wants other values
# appends its own overrides: of two for the same key, the later one wins.
FEW_SCENES = ["data.num_strong=4", "data.num_weak=4", "data.num_val=4"]
TINY_SCENES = [
    *FEW_SCENES,
    "data.canvas_size=32",
    "data.min_digit_size=8",
    "data.max_digit_size=16",
    "data.stroke_dilation=0",
]
TINY_STAGES = [
    "cross_training.iterations=2",
    "cross_training.strong_batch_size=2",
    "cross_training.weak_batch_size=2",
    "cross_training.eval_interval=0",
    "retrain.iterations=2",
    "retrain.batch_size=2",
    "retrain.eval_interval=0",
    "retrain.pseudo_labels.scales=[1.0]",
]
TINY_QUICKSTART = [*TINY_SCENES, *TINY_STAGES, "evaluation.num_pictures=2"]
"""The quickstart shrunk to seconds: a handful of 32-pixel scenes, two iterations a stage."""


def set_options(overrides: list[str]) -> list[str]:
    """Command-line options that apply ``overrides``: ``--set`` before each."""
    return [part for override in overrides for part in ("--set", override)]


RECIPE = f"""
[experiment]
name = "tiny"
seed = 0
output_dir = "{{output_dir}}"
device = "cpu"

[data]
type = "digit_scenes"
num_strong = 4
num_weak = 8
num_val = 4
canvas_size = 32
min_digit_size = 8
max_digit_size = 16
digit_classes = [0, 1, 2]

[augmentation]
scale_range = [0.75, 1.25]
crop_size = 32
color_jitter = 0.2

[method]
type = "pct"

{TINY_NET_TOML}
[cross_training]
iterations = 6
strong_batch_size = 2
weak_batch_size = 2
log_interval = 1
eval_interval = 3

[optimizer]
type = "adamw"
lr = 2e-3

[retrain]
iterations = 6
batch_size = 4
log_interval = 1
eval_interval = 3

[retrain.pseudo_labels]
scales = [1.0]
flip = false
batch_size = 4

[evaluation]
batch_size = 4
num_pictures = 2
"""


def write_recipe(folder: Path) -> Path:
    """Write the tiny recipe into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(RECIPE.format(output_dir=folder / "runs"), encoding="utf-8")
    return path


def subprocess_environment(**changes: str) -> dict[str, str]:
    """The environment of a ``pctkit`` subprocess: one thread, offline, wide output,
    then ``changes``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "300", **changes}


def run_in_process(recipe_path: Path, run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Run the recipe to its end in this process, on one thread; returns the run folder."""
    from pctkit.engine.reporting import Reporter
    from pctkit.engine.run import run
    from pctkit.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides or [])
    with one_thread():
        run(recipe, run_dir, reporter=Reporter(enabled=False))
    return run_dir


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (the subprocesses' setting)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_FINISHED: dict[str, Path] = {}


def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run per test session (callers must not change its weights)."""
    if "run" not in _FINISHED:
        folder = tmp_path_factory.mktemp("tiny")
        _FINISHED["run"] = run_in_process(write_recipe(folder), folder / "reference")
    return _FINISHED["run"]


def run_cli(arguments: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run the ``pctkit`` console entry point in this process; returns its exit code."""
    from pctkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["pctkit", *arguments])
    monkeypatch.setenv("COLUMNS", "300")
    try:
        with one_thread():
            main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


# --------------------------------------------------------------------------- crash hooks


def hooked_main() -> None:
    """``python -c '...hooked_main()' STAGE AFTER SIGNAL -- pctkit arguments``.

    Runs the ``pctkit`` CLI, and sends SIGNAL to this very process at a known point:
    for a training stage, during the forward pass of the iteration after the periodic
    checkpoint at iteration AFTER; for ``pseudo_labels``, before writing label number
    AFTER + 1. A SIGKILL there is a crash mid-step; a SIGTERM lets the step finish.
    """
    stage_name, after, signal_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    arguments = sys.argv[sys.argv.index("--") + 1 :]
    signal_number = getattr(signal, signal_name)

    if stage_name == "pseudo_labels":
        import pctkit.engine.pseudo_labels as pseudo_labels

        save = pseudo_labels.save_palette_png
        written = [0]

        def save_then_stop(*args: Any, **kwargs: Any) -> None:
            if written[0] == after:
                os.kill(os.getpid(), signal_number)
            written[0] += 1
            save(*args, **kwargs)

        pseudo_labels.save_palette_png = save_then_stop
    else:
        import pctkit.artifacts.checkpoints as checkpoints
        import pctkit.engine.loop as loop

        write = checkpoints.write
        forward_backward = loop.forward_backward

        def signalled_forward_backward(*args: Any) -> Any:
            loop.forward_backward = forward_backward  # once
            os.kill(os.getpid(), signal_number)
            return forward_backward(*args)

        def write_then_arm(folder: Path, state: Any, metadata: Any) -> None:
            write(folder, state, metadata)
            point = (metadata["stage"], metadata["iteration"], metadata["kind"])
            if point == (stage_name, after, "periodic"):
                loop.forward_backward = signalled_forward_backward

        checkpoints.write = write_then_arm

    from pctkit.cli.main import main

    sys.argv = ["pctkit", *arguments]
    main()


def hooked_command(stage_name: str, after: int, signal_name: str, arguments: list[str]) -> list[str]:
    """The command line that runs :func:`hooked_main` in a fresh interpreter."""
    script = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import tiny_run; tiny_run.hooked_main()"
    return [sys.executable, "-c", script, stage_name, str(after), signal_name, "--", *arguments]
