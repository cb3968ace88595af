"""``pctkit``: the command line. This module assembles the app from one module per
command and turns user mistakes into messages with exit code 1, never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Any

import click
import typer
from rich.markup import escape

from pctkit import registry
from pctkit.artifacts.io import ArtifactError, no_room
from pctkit.cli import components, export, predict, recipes, report, run, schema, validate
from pctkit.cli.app import UserError, console, errors, print_issues
from pctkit.cli.evaluate import evaluate_command
from pctkit.components.contracts import DataError, ParameterError, ParameterErrors
from pctkit.engine.errors import NonFiniteLossError, RunError, TrainingInterrupted
from pctkit.recipe import RecipeError
from pctkit.version import __version__

try:
    from typer.exceptions import TyperException
except ImportError:  # typer before 0.29 raises click's own errors
    TyperException = None  # type: ignore[assignment,misc]

app = typer.Typer(
    name="pctkit",
    help="Progressive cross training for semi-and-weakly supervised semantic segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    add_completion=False,
)
app.command()(validate.validate)
app.command()(run.run)
app.command()(run.resume)
app.command()(export.export)
app.command()(predict.predict)
app.command("eval")(evaluate_command)
app.command()(report.report)
app.command("list")(components.list_components)
app.command()(schema.schema)
app.add_typer(recipes.app)


@app.command()
def version() -> None:
    """Print the pctkit version."""
    console.print(f"pctkit {__version__}")


def main() -> None:
    """Console entry point: user mistakes become messages and exit code 1."""
    # Recipes' deprecated names are reported once, as recipe notes; not again as raw warnings.
    warnings.filterwarnings("ignore", category=registry.DeprecatedNameWarning)
    # SIGTERM (a batch system stopping the job) outside a training loop, whose own handler
    # checkpoints first, ends like Ctrl-C: a message, not a silent kill.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Without standalone mode click returns the exit code of typer.Exit instead.
        code = app(standalone_mode=False, prog_name="pctkit")
        if isinstance(code, int) and code:
            sys.exit(code)
    except RecipeError as error:
        print_issues(error)
        sys.exit(1)
    except TrainingInterrupted as error:
        if os.environ.get("RANK", "0") != "0":
            sys.exit(error.exit_code)  # under torchrun, rank 0 says it once for all
        target = error.run_dir if error.run_dir is not None else "RUN_DIR"
        errors.print(
            f"[yellow]interrupted[/]: {escape(str(error))}. Resume with: pctkit resume {escape(str(target))}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(error.exit_code)
    except (
        UserError,
        RunError,
        DataError,
        ParameterError,
        ParameterErrors,
        ArtifactError,
        registry.RegistryError,
        NonFiniteLossError,
        FileNotFoundError,
    ) as error:
        # Escaped: messages quote things like pip extras ('pctkit[plots]'), not markup.
        errors.print(f"[bold red]error[/]: {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except OSError as error:  # a file pctkit writes or reads outside its own checks
        message = escape(os_error_message(error))
        errors.print(f"[bold red]error[/]: {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        errors.print(INTERRUPTED)
        sys.exit(130)
    except USAGE_ERRORS as error:  # an unknown option, a missing argument: usage, exit 2
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        errors.print(INTERRUPTED)
        sys.exit(130)


USAGE_ERRORS: tuple[type[Any], ...] = (click.exceptions.ClickException,)
"""Errors in the command line itself. Typer 0.29 and later raise those of its own copy of
click, which share ``TyperException`` as their base."""
if TyperException is not None:
    USAGE_ERRORS += (TyperException,)

INTERRUPTED = (
    "[yellow]interrupted[/]: stopped before the command finished. A run continues from its newest "
    "checkpoint with `pctkit resume RUN_DIR`."
)


def os_error_message(error: OSError) -> str:
    """An operating-system error as one line: what failed, on which file, and for a full
    disk, a quota or a file-size limit, what to do."""
    files = [str(name) for name in (error.filename, error.filename2) if name is not None]
    text = f"{error.strerror or error}" + (f": {' -> '.join(files)}" if files else "")
    if no_room(error) is not None:
        text += (
            ". Make room (or raise the limit); a run continues from its newest checkpoint with "
            "`pctkit resume RUN_DIR`"
        )
    return text


def _interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt
