"""``pctkit.cli.main``: the entry point turns errors into one-line messages and exit
codes (the commands' own errors are tested with each command)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from tiny_run import run_cli

from pctkit.cli.main import os_error_message


def test_an_operating_system_error_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert run_cli(["recipes", "copy", "quickstart", str(not_a_folder / "mine.toml")], monkeypatch) == 1
    error = capsys.readouterr().err
    assert "error: " in error and str(not_a_folder) in error and "Traceback" not in error


def test_no_room_errors_say_how_to_continue() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "runs/x/hybrid_net.safetensors")
    message = os_error_message(full)
    assert message.startswith("No space left on device: runs/x/hybrid_net.safetensors. Make room")
    assert "pctkit resume" in message
    assert os_error_message(OSError(errno.EACCES, "Permission denied", "a")) == "Permission denied: a"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["list", "--bogus"], "No such option: --bogus"), (["run"], "Missing argument")],
)
def test_command_line_mistakes_print_usage_and_exit_2(
    arguments: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(arguments, monkeypatch) == 2
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert message in output and "Usage: pctkit" in output and "Traceback" not in output
