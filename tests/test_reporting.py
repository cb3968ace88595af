"""pctkit.engine.reporting: what a person watching a run sees.

In plain mode (batch jobs, pipes) every report is one complete, timestamped line,
never cut or wrapped, whatever the terminal width.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console

from pctkit.engine import reporting
from pctkit.engine.reporting import Reporter, format_duration, record_summary

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "

RECORD: dict[str, Any] = {
    "kind": "train",
    "stage": "cross_training",
    "iteration": 3,
    "terms": {
        "loss_strong": 0.8657445311546326,
        "loss_cls": 0.7610045671463013,
        "loss_h2p": 0.952919602394104,
        "loss_p2h": 1.262767934662179e-08,
        "mean_w": 1.5969030542350993e-08,
        "loss": 2.5796685218811035,
    },
    "lr": {"hybrid": 0.0016973322935783738, "pseudo": 0.0016973322935783738},
    "method": {"J": [0.91, 0.25, 0.5, 0.75]},
}


def _console(width: int = 80, terminal: bool = False) -> tuple[Console, io.StringIO]:
    output = io.StringIO()
    return Console(file=output, width=width, force_terminal=terminal, color_system=None), output


def test_record_summary_lists_the_total_first_every_term_min_j_and_the_rate() -> None:
    summary = record_summary(RECORD)
    assert summary == (
        "loss=2.58 loss_strong=0.8657 loss_cls=0.761 loss_h2p=0.9529 loss_p2h=1.263e-08 "
        "mean_w=1.597e-08 min_J=0.250 lr=0.0017"
    )
    # Nets on different rates get one each.
    assert record_summary({"terms": {"loss_ce": 0.5}, "lr": {"hybrid": 0.1, "pseudo": 0.2}}) == (
        "loss_ce=0.5 lr_hybrid=0.1 lr_pseudo=0.2"
    )


def test_plain_lines_are_whole_timestamped_and_carry_progress_terms_speed_and_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter(float(second) for second in range(0, 1000, 2))  # 2 s between readings
    monkeypatch.setattr(reporting.time, "monotonic", lambda: next(clock))
    console, output = _console(width=80)
    reporter = Reporter(console, log_format="plain")
    with reporter.task("cross training (pct)", 1500) as (advance, describe):
        for _ in range(3):
            advance(1)
        describe(record_summary(RECORD))
    lines = output.getvalue().splitlines()
    assert len(lines) == 3  # started, the record, finished: nothing wrapped onto another line
    assert all(re.match(STAMP, line) for line in lines)
    assert lines[0].endswith("cross training (pct) started (1500 to do)")
    record_line = lines[1]
    assert len(record_line) > 80  # longer than the console, yet whole
    assert re.search(
        r"cross training \(pct\) 3/1500 \d+\.\d\d it/s elapsed \d+:\d\d eta \d+:\d\d(:\d\d)? ", record_line
    )
    assert record_line.endswith(record_summary(RECORD))
    for part in ("loss_p2h=1.263e-08", "min_J=0.250", "lr=0.0017"):
        assert part in record_line
    assert re.search(r"cross training \(pct\) finished 3/1500 in \d+:\d\d$", lines[2])


def test_plain_progress_without_records_at_most_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: now[0])
    console, output = _console()
    with Reporter(console, log_format="plain").task("pseudo labels", 100) as (advance, _):
        for _ in range(50):
            now[0] += 2.0  # 100 s in all
            advance(1)
    lines = output.getvalue().splitlines()
    progress = [line for line in lines if re.search(r"pseudo labels \d+/100 ", line)]
    assert len(progress) == 1 and "30/100 0.50 it/s" in progress[0]  # after 60 s, at the current pace
    assert "eta 2:20" in progress[0]  # 70 left at 0.5 it/s


def test_auto_is_plain_off_a_terminal_and_messages_lose_their_markup() -> None:
    console, output = _console()
    reporter = Reporter(console)  # log_format="auto"
    assert reporter.plain
    reporter.message("[bold]pctkit[/] run [cyan]tiny[/] -> runs/tiny")
    reporter.warning("skipping damaged checkpoint [x]")
    lines = output.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"pctkit run tiny -> runs/tiny", lines[0])
    assert re.fullmatch(STAMP + r"warning: skipping damaged checkpoint \[x\]", lines[1])
    assert not Reporter(_console(terminal=True)[0]).plain


def test_a_disabled_reporter_says_nothing() -> None:
    console, output = _console()
    reporter = Reporter(console, enabled=False, log_format="plain")
    reporter.message("hello")
    with reporter.task("evaluation", 3) as (advance, describe):
        advance(3)
        describe("done")
    assert output.getvalue() == ""


def test_rich_mode_draws_a_bar_with_the_status() -> None:
    console, output = _console(width=200, terminal=True)
    with Reporter(console, log_format="rich").task("retraining", 10) as (advance, describe):
        advance(4)
        describe("loss=0.5")
    assert (
        "retraining" in output.getvalue() and "4/10" in output.getvalue() and "loss=0.5" in output.getvalue()
    )


def test_a_task_inside_another_gets_its_own_lines_or_a_row_removed_when_it_ends() -> None:
    # The validation inside a training stage: its progress shows without ending the stage's.
    console, output = _console()
    reporter = Reporter(console, log_format="plain")
    with reporter.task("retraining", 10) as (advance, _):
        advance(5)
        with reporter.task("validation of the retrained net", 3) as (advance_images, _):
            advance_images(3)
        advance(5)
    text = re.sub(STAMP, "", output.getvalue())
    assert re.fullmatch(
        r"retraining started \(10 to do\)\n"
        r"validation of the retrained net started \(3 to do\)\n"
        r"validation of the retrained net finished 3/3 in 0:00\n"
        r"retraining finished 10/10 in 0:00\n",
        text,
    )

    console, output = _console(width=200, terminal=True)
    reporter = Reporter(console, log_format="rich")
    with reporter.task("retraining", 10) as (advance, _):
        outer = reporter._progress
        assert outer is not None
        with reporter.task("validation of the retrained net", 3) as (advance_images, _):
            assert reporter._progress is outer  # a row of the same live display, not a second one
            assert [task.description for task in outer.tasks] == [
                "retraining",
                "validation of the retrained net",
            ]
            advance_images(3)
        assert [task.description for task in outer.tasks] == ["retraining"]
        advance(10)
    assert reporter._progress is None
    assert "10/10" in output.getvalue()


def test_rich_mode_cuts_the_status_first_in_a_narrow_terminal() -> None:
    console, output = _console(width=100, terminal=True)
    reporter = Reporter(console, log_format="rich")
    with reporter.task("cross training (pct)", 1500) as (advance, describe):
        advance(3)
        describe(record_summary(RECORD))
        with reporter.task("validation of the hybrid net", 300) as (advance_images, _):
            advance_images(100)
            assert reporter._progress is not None
            console.print(reporter._progress.make_tasks_table(reporter._progress.tasks))
    frame = output.getvalue().split("\n")
    assert any("cross training (pct)" in line and "3/1500" in line and "loss=2.58" in line for line in frame)
    assert any("validation of the hybrid net" in line and "100/300" in line for line in frame)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (73, "1:13"), (4000, "1:06:40"), (float("inf"), "?")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_resumed_stage_counts_from_where_it_continues() -> None:
    console, output = _console()
    with Reporter(console, log_format="plain").task("cross training", 400, start=200) as (advance, _):
        advance(200)
    lines = output.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"cross training continues at 200 of 400 \(200 to do\)", lines[0])
    assert re.fullmatch(STAMP + r"cross training finished 400/400 in .*", lines[-1])
    console, output = _console(width=200, terminal=True)
    with Reporter(console, log_format="rich").task("retraining", 10, start=6) as (advance, _):
        advance(1)
    assert "7/10" in output.getvalue()
