"""Draw docs/images/architecture.png, the data flow of docs/architecture.md.

    python scripts/draw_architecture.py

One row, left to right, the way a run flows: the recipe file, the recipe model, the
registry, the method and components it resolves, the stages over one loop, the run
directory. Under each box, the package that holds it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "architecture.png"

STEPS = [
    ("recipe file", "TOML\n+ --set overrides", "recipes/", "#e5e7eb"),
    ("recipe model", "Pydantic, validated\nall issues at once", "pctkit/recipe/", "#dbeafe"),
    ("registry", "entry points\npctkit.<kind>", "pctkit/registry.py", "#ede9fe"),
    (
        "method + components",
        "method (pct, hybrid, ...)\nbackbone, head, losses,\ndataset, augmentations,\noptimizer, schedule",
        "pctkit/methods/\npctkit/components/",
        "#fde68a",
    ),
    (
        "stages",
        "cross training\npseudo labels\nretraining\nevaluation\n(one loop + hooks)",
        "pctkit/engine/",
        "#dcfce7",
    ),
    (
        "run directory",
        "recipe, metrics,\ncheckpoints, weights,\npseudo labels, results",
        "pctkit/artifacts/",
        "#fee2e2",
    ),
]


def box(axes: Axes, x: float, title: str, body: str, where: str, colour: str) -> None:
    """One step: a titled box centred at ``x``, its package below."""
    width, height = 1.9, 2.2
    axes.add_patch(
        FancyBboxPatch(
            (x - width / 2, -height / 2),
            width,
            height,
            boxstyle="round,pad=0.03,rounding_size=0.12",
            facecolor=colour,
            edgecolor="#374151",
            linewidth=1.2,
        )
    )
    axes.text(x, height / 2 - 0.28, title, ha="center", va="center", fontsize=11, weight="bold")
    axes.text(x, -0.15, body, ha="center", va="center", fontsize=8.5, linespacing=1.35)
    axes.text(
        x, -height / 2 - 0.38, where, ha="center", va="top", fontsize=8, family="monospace", color="#374151"
    )


def main() -> None:
    """Draw the figure and write it."""
    figure, axes = plt.subplots(figsize=(15, 3.6), dpi=120)
    spacing = 2.45
    for index, (title, body, where, colour) in enumerate(STEPS):
        box(axes, index * spacing, title, body, where, colour)
        if index:
            axes.add_patch(
                FancyArrowPatch(
                    ((index - 1) * spacing + 0.98, 0),
                    (index * spacing - 0.98, 0),
                    arrowstyle="-|>",
                    mutation_scale=16,
                    color="#374151",
                    linewidth=1.4,
                )
            )
    axes.text(
        spacing * (len(STEPS) - 1) / 2,
        1.55,
        "cli/ (one module per command) drives the flow; imports point one way: cli -> engine -> "
        "methods, components, artifacts, recipe -> registry",
        ha="center",
        fontsize=9,
        style="italic",
    )
    axes.set_xlim(-1.1, spacing * (len(STEPS) - 1) + 1.1)
    axes.set_ylim(-2.0, 1.8)
    axes.axis("off")
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
