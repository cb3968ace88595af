"""pctkit.tomlio: TOML in and out."""

from __future__ import annotations

import pytest

from pctkit import tomlio


def test_dumps_leaves_out_none_writes_the_header_and_reads_back() -> None:
    data = {
        "experiment": {"name": "x", "note": None},
        "model": {"backbone": {"type": "timm", "sizes": [1, 3]}},
    }
    text = tomlio.dumps(data, header="first\nsecond")
    assert text.startswith("# first\n# second\n\n")
    assert "note" not in text
    assert tomlio.loads(text) == {
        "experiment": {"name": "x"},
        "model": {"backbone": {"type": "timm", "sizes": [1, 3]}},
    }


def test_short_arrays_on_one_line_long_ones_one_item_per_line() -> None:
    text = tomlio.dumps({"a": {"short": [1, 3], "long": [f"item number {i}" for i in range(12)]}})
    assert "short = [1, 3]\n" in text
    assert "long = [\n" in text  # over 100 characters on one line
    assert tomlio.loads(text)["a"]["long"][11] == "item number 11"


def test_loads_raises_the_decode_error() -> None:
    with pytest.raises(tomlio.TOMLDecodeError):
        tomlio.loads("a = = 1")
