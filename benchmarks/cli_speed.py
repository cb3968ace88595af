"""How long pctkit's commands take to start, against importing torch.

Each command runs as a fresh process, as a user runs it. The commands run in rounds,
each round every command once in turn (so that a machine busy with other work slows all
alike); the first round only warms the file cache. A command's ratio is the median over
rounds of its time divided by its reference's time in the same round:

- ``pctkit --help``, ``list``, ``schema``, ``recipes``: <= 0.3 x ``python -c "import torch"``;
- ``pctkit validate recipes/quickstart.toml``, its build check included:
  <= 1.5 x ``python -c "import torch, timm"``.

    python benchmarks/cli_speed.py              # 7 timed rounds, about a minute on 2 cores
    python benchmarks/cli_speed.py --check      # exit 1 if a target is missed

Prints every ratio with its target and writes ``benchmarks/results/cli_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "cli_speed.json"


@dataclass(frozen=True)
class Command:
    """One timed command: its name, its arguments, and the reference it is compared with."""

    name: str
    argv: list[str]
    reference: str | None = None
    target: float | None = None


def pctkit_command() -> list[str]:
    """The ``pctkit`` entry point of this Python's environment, as a user runs it."""
    script = Path(sys.executable).with_name("pctkit")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pctkit"]


def commands(recipe: str) -> list[Command]:
    """Every timed command; references first."""
    pctkit = pctkit_command()
    torch_ref, timm_ref = "import torch", "import torch, timm"
    light = 0.3
    return [
        Command(torch_ref, [sys.executable, "-c", "import torch"]),
        Command(timm_ref, [sys.executable, "-c", "import torch, timm"]),
        Command("pctkit --help", [*pctkit, "--help"], torch_ref, light),
        Command("pctkit list", [*pctkit, "list"], torch_ref, light),
        Command("pctkit schema", [*pctkit, "schema"], torch_ref, light),
        Command("pctkit recipes", [*pctkit, "recipes"], torch_ref, light),
        Command(f"pctkit validate {recipe}", [*pctkit, "validate", recipe], timm_ref, 1.5),
    ]


def environment() -> dict[str, str]:
    """The benchmark's environment: one thread (a shared machine), no network, no colour."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "100"})
    return env


def run_once(command: Command, env: dict[str, str]) -> float:
    """Wall seconds of one run; a failing command stops the benchmark."""
    started = time.perf_counter()
    finished = subprocess.run(command.argv, cwd=REPOSITORY, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        output = finished.stdout[-2000:] + finished.stderr[-2000:]
        raise SystemExit(f"{command.name!r} exited {finished.returncode}:\n{output}")
    return seconds


def measure(timed: list[Command], rounds: int) -> dict[str, list[float]]:
    """Seconds of every command in each timed round (after one warm-up round)."""
    env = environment()
    seconds: dict[str, list[float]] = {command.name: [] for command in timed}
    for round_index in range(rounds + 1):
        for command in timed:
            value = run_once(command, env)
            if round_index:
                seconds[command.name].append(value)
        if round_index:
            print(
                f"round {round_index}/{rounds}: "
                + ", ".join(f"{name} {values[-1]:.2f}s" for name, values in seconds.items()),
                flush=True,
            )
    return seconds


def summarise(timed: list[Command], seconds: dict[str, list[float]]) -> dict[str, Any]:
    """Median seconds of every command; the median per-round ratio of each to its reference."""
    rows: dict[str, Any] = {}
    for command in timed:
        row: dict[str, Any] = {"median_seconds": statistics.median(seconds[command.name])}
        if command.reference is not None and command.target is not None:
            ratios = [
                value / reference
                for value, reference in zip(seconds[command.name], seconds[command.reference], strict=True)
            ]
            ratio = statistics.median(ratios)
            row.update(
                reference=command.reference,
                ratio=ratio,
                ratio_per_round=ratios,
                target=command.target,
                met=ratio <= command.target,
            )
        rows[command.name] = row
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after one warm-up round)")
    parser.add_argument("--recipe", default="recipes/quickstart.toml", help="the recipe `validate` checks")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    if arguments.rounds < 1:
        parser.error("--rounds must be at least 1")

    timed = commands(arguments.recipe)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    seconds = measure(timed, arguments.rounds)
    rows = summarise(timed, seconds)

    print(f"\n{'command':<40} {'median s':>9} {'ratio':>7}  target")
    for name, row in rows.items():
        if "ratio" not in row:
            print(f"{name:<40} {row['median_seconds']:>9.2f}")
            continue
        verdict = "met" if row["met"] else "MISSED"
        print(
            f"{name:<40} {row['median_seconds']:>9.2f} {row['ratio']:>7.2f}  "
            f"<= {row['target']} x {row['reference']!r}: {verdict}"
        )
    import timm  # for the versions in the record, after the timing
    import torch

    record = {
        "commands": rows,
        "seconds": seconds,
        "rounds": arguments.rounds,
        "all_met": all(row.get("met", True) for row in rows.values()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "wall_seconds": time.perf_counter() - started,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {arguments.out}")
    if arguments.check and not record["all_met"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
