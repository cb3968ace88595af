"""pctkit.recipe.writer: the resolved recipe as TOML, every default spelled out."""

from __future__ import annotations

from pathlib import Path

from tiny_run import TINY_NET_TOML

from pctkit import registry
from pctkit.recipe import load_recipe, resolved_toml

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"

SMALL_RECIPE = f"""\
[experiment]
name = "small"

[data]
type = "digit_scenes"

{TINY_NET_TOML}
[cross_training]
iterations = 4
strong_batch_size = 2
weak_batch_size = 2

[optimizer]
type = "adamw"

[retrain]
iterations = 3
batch_size = 4
"""


def _write(folder: Path, text: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_resolved_toml_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(QUICKSTART)
    text = resolved_toml(recipe, header="resolved\nsecond line")
    assert text.startswith("# resolved\n# second line\n")
    # Every default is spelled out, the method's parameters included.
    assert "[method]" in text and "score_power = 8.0" in text and "h2p_weight = 1.0" in text
    assert "weight_rule = " in text and "[retrain.model.backbone]" in text and "[checkpoint]" in text
    again = load_recipe(_write(tmp_path, text))
    assert again.model_dump() == recipe.model_dump()
    # And it is a fixed point.
    assert resolved_toml(again, header="resolved\nsecond line") == text


def test_short_arrays_stay_on_one_line(tmp_path: Path) -> None:
    text = resolved_toml(load_recipe(_write(tmp_path, SMALL_RECIPE)))
    assert "out_indices = [1, 3]" in text
    assert "scales = [0.5, 0.75, 1.0, 1.25, 1.5]" in text


def test_resolved_toml_leaves_out_unset_optional_parameters(tmp_path: Path) -> None:
    # A plugin parameter typed `X | None = None`: TOML has no null, so it is left out
    # and reads back as its default.
    def optional_net(*, weights_file: str | None = None, width: int = 4) -> None:
        """A backbone with an optional parameter."""

    registry.register("backbones", "optional_net")(optional_net)
    try:
        recipe = load_recipe(
            _write(tmp_path, SMALL_RECIPE),
            ['model.backbone={type = "optional_net"}', 'retrain.model.backbone={type = "optional_net"}'],
        )
        assert recipe.model.backbone.parameters() == {"weights_file": None, "width": 4}
        text = resolved_toml(recipe)
        assert "weights_file" not in text and "width = 4" in text
        assert load_recipe(_write(tmp_path, text, "resolved.toml")).model_dump() == recipe.model_dump()
    finally:
        registry.reset()
