"""pctkit.recipe.migrate: recipes in the old spellings keep working, with a note each.

Each old recipe below must give the very Recipe its current spelling gives, and a
note (shown by ``pctkit validate`` and ``pctkit run``) that names the old key, its TOML
line and the new spelling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_run import TINY_NET_TOML, run_cli

from pctkit.recipe import RecipeIssue, load_recipe, resolved_toml
from pctkit.recipe.migrate import migrate

BASE = f"""\
[experiment]
name = "old"
seed = 1
{{experiment}}
[data]
type = "digit_scenes"

{TINY_NET_TOML}
[cross_training]
iterations = 4
strong_batch_size = 2
weak_batch_size = 2
{{cross_training}}
{{method}}
[optimizer]
type = "adamw"

[retrain]
iterations = 3
batch_size = 4
"""


def _recipe(
    tmp_path: Path, name: str, experiment: str = "", cross_training: str = "", method: str = ""
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(BASE.format(experiment=experiment, cross_training=cross_training, method=method))
    return path


def _load(path: Path) -> tuple[dict[str, Any], list[RecipeIssue]]:
    notes: list[RecipeIssue] = []
    return load_recipe(path, notes=notes).model_dump(), notes


OLD_PCT = """\
mode = "pct"
score_power = 4.0
score_momentum = 0.9
skip_nonfinite = true

[cross_training.loss_weights]
strong = 1.0
cls = 0.5
h2p = 2.0
p2h = 3.0
"""
NEW_PCT = """
[method]
type = "pct"
score_power = 4.0
score_momentum = 0.9
strong_weight = 1.0
cls_weight = 0.5
h2p_weight = 2.0
p2h_weight = 3.0
"""


def test_old_pct_spelling_gives_the_same_recipe_and_a_note_per_key(tmp_path: Path) -> None:
    old_path = _recipe(tmp_path, "old", cross_training=OLD_PCT)
    old, notes = _load(old_path)
    new, new_notes = _load(_recipe(tmp_path, "new", experiment="skip_nonfinite = true\n", method=NEW_PCT))
    assert old == new and new_notes == []
    by_path = {note.path: note for note in notes}
    assert set(by_path) == {
        "cross_training.mode",
        "cross_training.score_power",
        "cross_training.score_momentum",
        "cross_training.skip_nonfinite",
        "cross_training.loss_weights.strong",
        "cross_training.loss_weights.cls",
        "cross_training.loss_weights.h2p",
        "cross_training.loss_weights.p2h",
    }
    assert all(note.message.startswith("deprecated: ") for note in notes)
    assert (
        by_path["cross_training.mode"].hint
        == 'write [method] type = "pct" (its parameters go in [method] too)'
    )
    assert by_path["cross_training.loss_weights.h2p"].hint == "write [method] h2p_weight = 2.0"
    assert by_path["cross_training.skip_nonfinite"].hint == "write [experiment] skip_nonfinite = true"
    # Each note points at the line the old key is on.
    lines = old_path.read_text().splitlines()
    assert lines[by_path["cross_training.score_power"].line - 1] == "score_power = 4.0"  # type: ignore[operator]
    assert lines[by_path["cross_training.loss_weights.p2h"].line - 1] == "p2h = 3.0"  # type: ignore[operator]


def test_an_ablation_mode_becomes_its_method_and_drops_what_it_has_no_use_for(tmp_path: Path) -> None:
    old, notes = _load(_recipe(tmp_path, "old", cross_training='mode = "hybrid"\nscore_power = 4.0\n'))
    new, _ = _load(_recipe(tmp_path, "new", method='\n[method]\ntype = "hybrid"\n'))
    assert old == new
    by_path = {note.path: note for note in notes}
    assert by_path["cross_training.score_power"].message == (
        "deprecated: method 'hybrid' has no parameter 'score_power'; the key has no effect"
    )
    assert by_path["cross_training.score_power"].hint == "remove it"


def test_the_mode_replaces_a_method_section_of_another_type() -> None:
    raw: dict[str, Any] = {
        "cross_training": {"mode": "supervised", "loss_weights": {"strong": 2.0}},
        "method": {"type": "pct", "score_power": 2.0},
    }
    notes = migrate(raw)
    assert raw["method"] == {"type": "supervised"}
    assert raw["cross_training"] == {}
    assert [note.path for note in notes] == ["cross_training.mode", "cross_training.loss_weights.strong"]
    assert "has no parameter 'strong_weight'" in notes[1].message


def test_new_spellings_win_over_old_ones_and_nothing_to_migrate_is_untouched() -> None:
    raw: dict[str, Any] = {
        "experiment": {"skip_nonfinite": False},
        "cross_training": {"skip_nonfinite": True, "score_power": 2.0},
        "method": {"type": "pct", "score_power": 6.0},
    }
    migrate(raw)
    assert raw["experiment"]["skip_nonfinite"] is False and raw["method"]["score_power"] == 6.0
    current = {"cross_training": {"iterations": 3}, "method": {"type": "hybrid"}}
    assert migrate(current) == [] and current == {
        "cross_training": {"iterations": 3},
        "method": {"type": "hybrid"},
    }


def test_the_resolved_recipe_of_an_old_one_is_in_the_new_spelling(tmp_path: Path) -> None:
    text = resolved_toml(load_recipe(_recipe(tmp_path, "old", cross_training=OLD_PCT)))
    assert 'mode = "pct"' not in text and "loss_weights" not in text
    assert "[method]" in text and "h2p_weight = 2.0" in text
    assert "skip_nonfinite = true" in text.split("[experiment]")[1].split("[")[0]


def test_validate_shows_the_notes_as_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _recipe(tmp_path, "old", cross_training='mode = "hybrid"\n')
    assert (
        run_cli(["validate", str(path), "--set", "data.num_weak=4", "--set", "data.num_val=4"], monkeypatch)
        == 0
    )
    err = capsys.readouterr().err
    assert "warning" in err and "cross_training.mode" in err and '[method] type = "hybrid"' in err
    assert f"{path}:" in err  # with its file and line


def test_validate_shows_the_notes_beside_other_mistakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _recipe(tmp_path, "old", cross_training='mode = "hybrid"\n')
    path.write_text(path.read_text().replace("[optimizer]", "[optimizer]\nmomentun = 0.9", 1))
    assert run_cli(["validate", str(path)], monkeypatch) == 1
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "optimizer.momentun" in output  # the mistake
    assert "cross_training.mode" in output and '[method] type = "hybrid"' in output  # and the old spelling
