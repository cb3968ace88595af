"""A whole run: the run directory prepared, the context built once, the stages run.

:func:`run` starts (or, with ``resume=True``, continues) a run of a recipe in a run
directory; :func:`resume` continues one with the recipe saved in it. Under ``torchrun``
every worker calls the same function: rank 0 alone writes files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from pctkit.artifacts.checkpoints import Checkpoints
from pctkit.artifacts.lock import RunLock
from pctkit.artifacts.models import WeightsFileError, read_tensors
from pctkit.artifacts.run_dir import Progress, RunDirectory, RunDirectoryError
from pctkit.artifacts.tensorboard import TensorBoardLog
from pctkit.engine.build import build_data, resolve_device
from pctkit.engine.context import RunContext, RunOutputs
from pctkit.engine.data_identity import check_inputs
from pctkit.engine.distributed import WorldInfo, all_reduce_max, barrier, init_distributed
from pctkit.engine.errors import RunError
from pctkit.engine.memory import keep_freed_memory, reset_peak_memory
from pctkit.engine.provenance import record_environment
from pctkit.engine.reporting import Reporter
from pctkit.engine.settings_checks import batch_issues, device_issues
from pctkit.engine.stages import stages_of
from pctkit.engine.state import seed_generators
from pctkit.recipe import Recipe, load_recipe, resolved_toml, validate_recipe_data
from pctkit.recipe.resume_rules import recipe_differences, with_current_defaults
from pctkit.recipe.text import parse_recipe_text

T = TypeVar("T")


@dataclass
class RunOutcome:
    """What a finished run reports."""

    run_dir: Path
    results: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    world: WorldInfo = field(default_factory=WorldInfo)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's operations (0: leave torch's choice)."""
    if threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch; optionally force deterministic kernels."""
    seed_generators(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


# --------------------------------------------------------------------------- the directory


def prepare_run_dir(recipe: Recipe, run_dir: RunDirectory, *, resume: bool, overwrite: bool) -> None:
    """Create the run directory and write the resolved recipe, or check it on resume."""
    current = recipe.model_dump(mode="json")
    if resume:
        if run_dir.lost_recipe_json():  # resumed from recipe.toml: write the JSON again
            run_dir.write_recipe_json(current)
            return
        _check_resumable(run_dir)
        differences = recipe_differences(with_current_defaults(run_dir.read_recipe()), current)
        if differences:
            raise RunError(
                "cannot resume: the recipe differs from the one the run was started with:\n  "
                + "\n  ".join(differences)
                + f"\nResume with the saved recipe ({run_dir.recipe_toml}) or start a new run."
            )
        if not run_dir.recipe_toml.is_file():  # resumed from recipe.json: write it again
            run_dir.write_recipe_toml(_recipe_toml(recipe, run_dir))
        return
    path = run_dir.path
    if _holds_files(run_dir):
        if not overwrite:
            raise RunError(_exists_message(run_dir))
        for child in path.iterdir():
            if child.name == RunDirectory.LOCK:
                continue  # the lock this process holds stays
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    run_dir.write_recipe(_recipe_toml(recipe, run_dir), current)


def _check_resumable(run_dir: RunDirectory) -> None:
    """Refuse a folder that holds no run: neither ``recipe.json`` nor, for a run whose
    JSON was lost, ``recipe.toml`` beside the run's other files."""
    if not (run_dir.holds_run() or run_dir.lost_recipe_json()):
        raise RunError(f"cannot resume: {run_dir} holds no run (no {RunDirectory.RECIPE_JSON})")


def _recipe_toml(recipe: Recipe, run_dir: RunDirectory) -> str:
    """The run's resolved recipe as TOML, with a header saying what it is."""
    header = (
        "The resolved recipe of this run: every key, defaults included.\n"
        f"Re-run it with: pctkit run {run_dir.recipe_toml}"
    )
    return resolved_toml(recipe, header=header)


def _exists_message(run_dir: RunDirectory) -> str:
    """Why a new run may not start in ``run_dir``, and the ways on."""
    path = run_dir.path
    try:
        complete = run_dir.read_results() is not None
    except RunDirectoryError:
        complete = False
    if complete:
        return (
            f"run directory {path} holds a finished run (its results: {run_dir.results_file}). "
            "Train again elsewhere with --out DIR, or in its place with --overwrite."
        )
    return (
        f"run directory {path} already exists. Resume it with `pctkit resume {path}`, "
        "choose another with --out, or replace it with --overwrite."
    )


def _holds_files(run_dir: RunDirectory) -> bool:
    """Whether the folder exists with something in it besides its lock file."""
    path = run_dir.path
    return path.is_dir() and any(child.name != RunDirectory.LOCK for child in path.iterdir())


def open_run_dir(
    recipe: Recipe, run_dir: RunDirectory, *, resume: bool, overwrite: bool, purpose: str
) -> RunLock:
    """Lock the run directory for this process, then prepare it (see
    :func:`prepare_run_dir`); a directory another process holds is refused at once,
    with nothing written into it."""
    RunLock.check(run_dir.lock_file)  # in use elsewhere: say so first, writing nothing
    if not resume and _holds_files(run_dir) and not overwrite:
        prepare_run_dir(recipe, run_dir, resume=False, overwrite=False)  # raises, writing nothing
    if resume:
        _check_resumable(run_dir)
    lock = RunLock.acquire(run_dir.lock_file, purpose)
    try:
        prepare_run_dir(recipe, run_dir, resume=resume, overwrite=overwrite)
        if resume:
            Checkpoints(run_dir).remove_partials()
    except BaseException:
        lock.release()
        raise
    return lock


def on_main_process(world: WorldInfo, device: torch.device, work: Callable[[], T]) -> T | None:
    """Run ``work`` on rank 0 alone; every rank raises if it failed there (the other
    ranks would otherwise wait for rank 0 forever)."""
    result: T | None = None
    failure: BaseException | None = None
    if world.is_main:
        try:
            result = work()
        except Exception as error:  # re-raised below, on every rank
            failure = error
    failed = torch.tensor([1.0 if failure is not None else 0.0], device=device)
    if world.distributed and bool(all_reduce_max(failed).item() > 0) and failure is None:
        raise RunError("rank 0 could not start the run (its message says why)")
    if failure is not None:
        raise failure
    return result


# --------------------------------------------------------------------------- the run


def _start(recipe: Recipe) -> tuple[torch.device, WorldInfo]:
    """The device and the worker's place; refuses a recipe it cannot train."""
    device = resolve_device(recipe.experiment.device)
    world = init_distributed(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    # The same checks `pctkit validate` runs, so a job fails before it trains.
    problems = batch_issues(recipe, world.world_size) + device_issues(recipe, world.world_size)
    if problems:
        raise RunError(
            "; ".join(
                f"{issue.path}: {issue.message}" + (f"; {issue.hint}" if issue.hint else "")
                for issue in problems
            )
        )
    return device, world


def run(
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    stop_after: dict[str, int] | None = None,
) -> RunOutcome:
    """Run every stage of ``recipe`` not yet complete in ``run_dir``; returns the results.

    Args:
        resume: continue the run in ``run_dir`` (its recipe must match, but for the
            keys a resume may change); otherwise start one there.
        overwrite: replace an existing run directory.
        reporter: progress and messages (rank 0 only); default: stderr.
        stop_after: testing aid: ``{stage: iteration}`` stops there as a SIGTERM would.

    Raises:
        RunError: the recipe cannot run here, or the directory does not fit.
    """
    device, world = _start(recipe)
    reporter = reporter or Reporter()
    reporter.enabled = reporter.enabled and world.is_main
    reporter.warnings = reporter.warnings and world.is_main
    directory = RunDirectory(run_dir)
    purpose = f"pctkit {'resume' if resume else 'run'} of {recipe.experiment.name}"
    lock = on_main_process(
        world,
        device,
        lambda: open_run_dir(recipe, directory, resume=resume, overwrite=overwrite, purpose=purpose),
    )
    try:
        return _run_stages(recipe, directory, device, world, reporter, stop_after, resume)
    finally:
        if lock is not None:
            lock.release()


def _run_stages(
    recipe: Recipe,
    directory: RunDirectory,
    device: torch.device,
    world: WorldInfo,
    reporter: Reporter,
    stop_after: dict[str, int] | None,
    resume: bool = False,
) -> RunOutcome:
    run_dir = directory.path
    barrier()
    set_threads(recipe.experiment.threads)
    if device.type == "cpu":
        keep_freed_memory()
    seed_everything(recipe.experiment.seed, recipe.experiment.deterministic)
    reset_peak_memory(device)
    started = time.perf_counter()
    command = "resume" if resume else "run"
    reporter.message(f"[bold]pctkit[/] {command} [cyan]{recipe.experiment.name}[/] -> {run_dir}")
    if world.is_main:
        record_environment(directory, recipe, reporter)
    # Read after the barrier: under torchrun rank 0 may just have replaced the directory.
    progress = _read_progress(directory, reporter)
    finished = _finished_results(directory, progress, recipe)
    if finished is not None:
        reporter.message(
            f"{run_dir} is complete: nothing to do. `pctkit eval {run_dir}` evaluates it again; "
            "`pctkit run --overwrite` trains it again."
        )
        return RunOutcome(directory.path, finished, {"total": time.perf_counter() - started}, world)
    data = build_data(recipe)
    on_main_process(world, device, lambda: check_inputs(directory, recipe, data, reporter, resume=resume))
    context = RunContext(
        recipe=recipe,
        run_dir=directory,
        device=device,
        world=world,
        data=data,
        reporter=reporter,
        progress=progress,
        stop_after=dict(stop_after or {}),
        tensorboard=TensorBoardLog.open(directory.tensorboard) if world.is_main else None,
    )
    reporter.message(
        f"data: {len(data.strong_indices)} strong + {len(data.train) - len(data.strong_indices)} weak "
        f"training images, {len(data.val)} validation images, {data.num_classes} classes; "
        f"device {device}, {world.world_size} worker(s), {recipe.experiment.precision}"
    )
    outputs = RunOutputs()
    for stage in stages_of(recipe.retrain.enabled):
        stage.run(context, outputs)
    return RunOutcome(directory.path, outputs.results, {"total": time.perf_counter() - started}, world)


def _finished_results(directory: RunDirectory, progress: Progress, recipe: Recipe) -> dict[str, Any] | None:
    """``results.json`` of a run whose every stage is complete and whose nets are all on
    disk and intact, else ``None`` (a missing or damaged net is then written again from
    the last checkpoint of the stage that wrote it)."""
    if not all(progress.done(stage.name) for stage in stages_of(recipe.retrain.enabled)):
        return None
    try:
        results = directory.read_results()
    except RunDirectoryError:  # damaged: the evaluation runs again and rewrites it
        return None
    if results is None:
        return None
    for role in results.get("nets", {}):
        try:
            read_tensors(directory.net_weights(role))  # checked against its checksum
        except WeightsFileError:
            return None  # the stage that wrote it writes it again from its last checkpoint
    return results


def _read_progress(directory: RunDirectory, reporter: Reporter) -> Progress:
    """The run's progress; a damaged ``progress.json`` counts as none: every stage then
    continues from its newest checkpoint, with the same results (the stage times of
    earlier sessions are lost)."""
    try:
        return directory.read_progress()
    except RunDirectoryError as error:
        reporter.warning(f"{error}; each stage continues from its newest checkpoint")
        return Progress()


def resume(
    run_dir: Path,
    *,
    reporter: Reporter | None = None,
    stop_after: dict[str, int] | None = None,
    overrides: list[str] | None = None,
) -> RunOutcome:
    """Continue the run in ``run_dir`` with the recipe saved in it; ``overrides``
    (``key=value``) may change the keys a resume may change, such as a data location."""
    directory = RunDirectory(run_dir)
    _check_resumable(directory)
    lost_json = directory.lost_recipe_json()
    reporter = reporter or Reporter()
    # Only rank 0 warns about the run's files (every rank reads them).
    reporter.warnings = reporter.warnings and os.environ.get("RANK", "0") == "0"
    if directory.recipe_toml.is_file():
        # The TOML, not the JSON: keys a resume may change can be edited there.
        recipe = load_recipe(directory.recipe_toml, overrides)
        if lost_json:
            reporter.warning(
                f"{directory.recipe_json_problem()}: resuming with the same recipe from "
                f"{directory.recipe_toml}, and writing {RunDirectory.RECIPE_JSON} again"
            )
    else:
        recipe = validate_recipe_data(directory.read_recipe(), file=str(directory.recipe_json))
        if overrides:
            raw, lines, overridden = parse_recipe_text(
                resolved_toml(recipe), overrides, str(directory.recipe_json)
            )
            recipe = validate_recipe_data(raw, lines, overridden, str(directory.recipe_json))
        reporter.warning(
            f"{directory.recipe_toml} is missing: resuming with the same recipe from {directory.recipe_json}"
        )
    return run(recipe, run_dir, resume=True, reporter=reporter, stop_after=stop_after)
