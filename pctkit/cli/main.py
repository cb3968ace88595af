"""``pctkit``: validate, run, list, schema, and the commands around a run.

User mistakes end with a message and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pctkit import __version__, registry
from pctkit.cli import recipes_cmd
from pctkit.components.contracts import DataError
from pctkit.recipe import Recipe, RecipeError, RecipeIssue, load_recipe

app = typer.Typer(
    name="pctkit",
    help="Progressive cross training for semi-and-weakly supervised semantic segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)
app.add_typer(recipes_cmd.app)
console = Console()
errors = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe key: section.key=value (TOML value).", metavar="KEY=VALUE"
    ),
]


class UserError(Exception):
    """A mistake the user can fix; printed without a traceback."""


# --------------------------------------------------------------------------- recipes


def builtin_recipes() -> dict[str, Path]:
    """Recipes shipped inside the package, by name."""
    folder = resources.files("pctkit") / "recipes"
    found: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name.removesuffix(".toml")] = Path(str(entry))
    return dict(sorted(found.items()))


def resolve_recipe(recipe: str) -> Path:
    """A recipe path, or the file of a built-in recipe name."""
    path = Path(recipe)
    if path.exists() or path.suffix == ".toml" or "/" in recipe:
        return path
    recipes = builtin_recipes()
    if recipe in recipes:
        return recipes[recipe]
    import difflib

    close = difflib.get_close_matches(recipe, list(recipes), n=2)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UserError(
        f"no recipe file {recipe!r} and no built-in recipe of that name.{hint} "
        f"Built-in recipes: {', '.join(recipes)}."
    )


def _print_issues(error: RecipeError) -> None:
    errors.print(f"[bold red]{len(error.issues)} problem(s)[/] in recipe [cyan]{error.file}[/]:")
    for issue in error.issues:
        where = issue.location(error.file)
        errors.print(
            f"  [bold]{issue.path or '<recipe>'}[/]: {issue.message}"
            + (f"  [dim]\\[{where}][/]" if where else ""),
            highlight=False,
        )
        if issue.hint:
            errors.print(f"      [green]hint[/]: {issue.hint}", highlight=False)


def _load(recipe: str, overrides: list[str] | None) -> tuple[Path, Recipe]:
    path = resolve_recipe(recipe)
    return path, load_recipe(path, overrides or [])


# --------------------------------------------------------------------------- commands


@app.command()
def validate(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in recipe name.")],
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    nproc: Annotated[int, typer.Option(help="Workers the job will use (batch divisibility).")] = 1,
) -> None:
    """Check a recipe before submitting a job: schema, names, data, and a build check."""
    from pctkit.engine.checks import check_recipe

    path = resolve_recipe(recipe)
    try:
        parsed = load_recipe(path, overrides or [])
    except RecipeError as error:
        if as_json:
            console.print_json(
                json.dumps(
                    {"valid": False, "recipe": str(path), "issues": [i.to_dict() for i in error.issues]}
                )
            )
        else:
            _print_issues(error)
        raise typer.Exit(1) from None
    issues, checked = check_recipe(parsed, world_size=nproc)
    _locate(issues, path, overrides or [])
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "valid": not issues,
                    "recipe": str(path),
                    "checked": checked,
                    "issues": [i.to_dict() for i in issues],
                }
            )
        )
        raise typer.Exit(1 if issues else 0)
    if issues:
        _print_issues(RecipeError(issues, str(path)))
        raise typer.Exit(1)
    console.print(f"[bold green]valid[/]: {path}")
    for line in checked:
        console.print(f"  [green]✓[/] {line}", highlight=False)
    settings = parsed.cross_training
    console.print(
        f"  {settings.mode} for {settings.iterations} iterations ({settings.strong_batch_size} strong + "
        f"{settings.weak_batch_size} weak), retraining "
        + (f"{parsed.retrain.iterations} iterations" if parsed.retrain.enabled else "off"),
        highlight=False,
    )


def _locate(issues: list[RecipeIssue], path: Path, overrides: list[str]) -> None:
    """Give the build and data checks' issues their TOML line, or mark them as coming
    from a ``--set`` override."""
    from pctkit.recipe.loader import key_lines, line_of

    locations = key_lines(path.read_text(encoding="utf-8"))
    overridden = {tuple(o.split("=", 1)[0].strip().split(".")) for o in overrides}
    for issue in issues:
        key = tuple(issue.path.split(".")) if issue.path else ()
        if any(key[: len(o)] == o for o in overridden):
            issue.source = "--set"
        elif issue.line is None:
            issue.line = line_of(locations, key)


def _launch_torchrun(nproc: int) -> None:
    """Re-run this command under torchrun with ``nproc`` workers.

    torchrun runs in a session of its own, and this process passes SIGINT and SIGTERM
    on to it: each worker then gets a signal exactly once (from torchrun), checkpoints
    and stops, instead of once from the terminal and again from torchrun.
    """
    import os
    import signal
    import subprocess

    arguments = [a for a in sys.argv[1:]]
    cleaned: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        if argument == "--nproc":
            skip = True
            continue
        if argument.startswith("--nproc="):
            continue
        cleaned.append(argument)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "pctkit",
        *cleaned,
    ]
    errors.print(f"[dim]launching: {' '.join(command)}[/]")
    process = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
    forwarded: list[int] = []

    def forward(signal_number: int, frame: object) -> None:
        forwarded.append(signal_number)
        process.send_signal(signal_number)

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, forward)
    code = process.wait()
    # torchrun reports the signal as its own failure (exit 1); say "interrupted" as a
    # single-process run does.
    raise typer.Exit(130 if forwarded and code else code)


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="Recipe file or built-in recipe name.")],
    overrides: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run directory (default: the recipe's experiment.output_dir / experiment.name)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory.")] = None,
    nproc: Annotated[int, typer.Option(help="Launch this many workers with torchrun (DDP).")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train: cross training, pseudo labels, retraining, evaluation."""
    if nproc > 1:
        from pctkit.engine.distributed import launched_by_torchrun as _under_torchrun

        if _under_torchrun():
            raise UserError("--nproc launches torchrun; under torchrun already, leave it out")
        _launch_torchrun(nproc)
    from pctkit.engine.distributed import barrier
    from pctkit.engine.pipeline import Run, prepare_run_dir
    from pctkit.engine.reporting import Reporter

    _, parsed = _load(recipe, overrides)
    run_dir = resume or out or Path(parsed.experiment.output_dir) / parsed.experiment.name
    # Run refuses a recipe it cannot train before anything is written; it also joins
    # the process group under torchrun, so rank 0 alone prepares the directory.
    runner = Run(parsed, run_dir, Reporter(errors, enabled=not quiet))
    if runner.world.is_main:
        prepare_run_dir(parsed, run_dir, resume=resume is not None, overwrite=overwrite)
    barrier()
    outcome = runner.execute()
    if runner.world.is_main:
        show_results(outcome.results, run_dir)


def show_results(results: dict[str, Any], run_dir: Path) -> None:
    """The end-of-run table: mIoU of each net, plain and with image labels."""
    table = Table(title="Validation mIoU", title_justify="left")
    table.add_column("net")
    table.add_column("plain", justify="right")
    table.add_column("with image labels", justify="right")
    for role, summary in results["nets"].items():
        table.add_row(role, f"{summary['miou']:.4f}", f"{summary['miou_with_labels']:.4f}")
    console.print(table)
    quality = results.get("pseudo_labels")
    if quality and quality.get("miou") is not None:
        console.print(
            f"pseudo labels: {quality['images']} images, mIoU against hidden masks {quality['miou']:.4f}"
        )
    seconds = results.get("seconds", {})
    if seconds:
        console.print(
            "time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()), highlight=False
        )
    peaks = results.get("peak_memory_gib", {})
    if peaks:
        console.print(
            "peak memory: "
            + ", ".join(f"{k} {v if isinstance(v, str) else f'{v:.2f} GiB'}" for k, v in peaks.items()),
            highlight=False,
        )
    console.print(
        f"outputs: [cyan]{run_dir}[/] (recipe.toml, metrics.jsonl, *_net.safetensors, predictions.png)"
    )


@app.command("list")
def list_components(
    kind: Annotated[str | None, typer.Argument(help=f"One of: {', '.join(registry.KINDS)}.")] = None,
    pattern: Annotated[str, typer.Option(help="Wildcard on names, e.g. '*net*'.")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Registered components: origin, description and parameters."""
    if kind is not None and kind not in registry.KINDS:
        singular_kinds = {registry.singular(k): k for k in registry.KINDS}
        if kind in singular_kinds:
            kind = singular_kinds[kind]
        else:
            raise UserError(f"unknown kind {kind!r}; kinds: {', '.join(registry.KINDS)}")
    components = registry.list_components(kind, pattern)
    problems = registry.problems(kind)
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "components": [
                        {
                            "kind": c.kind,
                            "name": c.name,
                            "origin": c.origin,
                            "description": c.description,
                            "parameters": c.parameters.model_json_schema().get("properties", {}),
                        }
                        for c in components
                    ],
                    "problems": [str(p) for p in problems],
                },
                default=str,
            )
        )
        return
    for each_kind in [kind] if kind else list(registry.KINDS):
        rows = [c for c in components if c.kind == each_kind]
        if not rows:
            continue
        table = Table(title=each_kind, title_justify="left", show_lines=False)
        table.add_column("name", style="bold cyan")
        table.add_column("origin")
        table.add_column("description")
        table.add_column("parameters")
        for component in rows:
            table.add_row(
                component.name,
                "built-in" if component.builtin else component.origin,
                component.description,
                _describe_parameters(component),
            )
        console.print(table)
    for problem in problems:
        errors.print(f"[yellow]unusable[/]: {problem}", highlight=False)


def _describe_parameters(component: registry.Component) -> str:
    lines = []
    for name, info in component.parameters.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        default = "required" if info.is_required() else f"= {info.default!r}"
        lines.append(f"{name}: {annotation} {default}")
    return "\n".join(lines) or "-"


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option(help="Write the JSON Schema to this file.")] = None,
) -> None:
    """The recipe JSON Schema (plugins' parameters included), for editor completion."""
    from pctkit.recipe.json_schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    from pctkit.artifacts.io import atomic_write_text

    atomic_write_text(out, text)
    errors.print(f"wrote {out}")


@app.command()
def version() -> None:
    """Print the pctkit version."""
    console.print(f"pctkit {__version__}")


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console entry point: user mistakes become messages and exit code 1."""
    from pctkit.engine.pipeline import RunError
    from pctkit.engine.trainer import NonFiniteLossError, TrainingInterrupted

    try:
        # Without standalone mode click returns the exit code of typer.Exit instead.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except RecipeError as error:
        _print_issues(error)
        sys.exit(1)
    except TrainingInterrupted as error:
        target = error.run_dir if error.run_dir is not None else "RUN_DIR"
        errors.print(f"[yellow]interrupted[/]: {error}. Resume with: pctkit resume {target}", highlight=False)
        sys.exit(130)
    except (
        UserError,
        RunError,
        DataError,
        registry.RegistryError,
        NonFiniteLossError,
        FileNotFoundError,
    ) as error:
        # Escaped: messages quote things like pip extras ('pctkit[plots]'), not markup.
        errors.print(f"[bold red]error[/]: {escape(str(error))}", highlight=False)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        errors.print("aborted")
        sys.exit(130)
    except __import__("click").exceptions.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


def _issue_list(issues: list[RecipeIssue]) -> list[dict[str, Any]]:
    return [issue.to_dict() for issue in issues]


# The commands around a run live in their own module and register on ``app``.
from pctkit.cli import run_tools  # noqa: E402, F401
