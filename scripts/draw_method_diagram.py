"""Draw docs/images/pct.png, the method diagram of docs/method.md.

    python scripts/draw_method_diagram.py

Boxes are the networks and the data, arrows the four loss terms of one PCT iteration
(named as in the method: supervised, cls, H2P, P2H), and a second panel the retraining.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "pct.png"

HYBRID = "#dbeafe"
PSEUDO = "#fde68a"
DATA = "#e5e7eb"
LOSS = "#fee2e2"
RETRAIN = "#dcfce7"


def box(
    axes: Axes, x: float, y: float, width: float, height: float, text: str, colour: str, **style: object
) -> None:
    """A rounded box centred on (x, y) with centred text."""
    axes.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=colour,
            edgecolor="#374151",
            linewidth=1.2,
        )
    )
    axes.text(x, y, text, ha="center", va="center", fontsize=style.get("size", 10.5), wrap=True)


def arrow(
    axes: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    bend: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.0),
    colour: str = "#374151",
) -> None:
    """An arrow from ``start`` to ``end``, with a label near its middle."""
    axes.add_patch(
        FancyArrowPatch(
            start,
            end,
            connectionstyle=f"arc3,rad={bend}",
            arrowstyle="-|>",
            mutation_scale=14,
            linewidth=1.4,
            color=colour,
        )
    )
    if label:
        middle = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        axes.text(*middle, label, ha="center", va="center", fontsize=9.5, color=colour)


def draw() -> plt.Figure:
    figure, axes = plt.subplots(figsize=(13.6, 6.2), dpi=110)
    axes.set_xlim(0, 13.6)
    axes.set_ylim(0, 6.2)
    axes.axis("off")

    axes.text(0.2, 5.95, "Stage 1: one iteration of progressive cross training", fontsize=13, weight="bold")
    box(axes, 1.35, 4.3, 2.3, 1.1, "strong half ($b_s$ images)\nimage + mask + labels $y$", DATA)
    box(axes, 1.35, 1.9, 2.3, 1.1, "weak half ($b_w$ images)\nimage + labels $y$", DATA)
    box(axes, 4.4, 4.3, 1.9, 1.0, "hybrid net H", HYBRID, size=12)
    box(axes, 4.4, 1.9, 1.9, 1.0, "pseudo net P", PSEUDO, size=12)

    # Both nets see the same whole batch.
    arrow(axes, (2.5, 4.3), (3.45, 4.3))
    arrow(axes, (2.5, 1.9), (3.45, 1.9))
    arrow(axes, (2.5, 4.0), (3.45, 2.2))
    arrow(axes, (2.5, 2.2), (3.45, 4.0))

    # The four loss terms, named as in the method, and what sets the weight of the last.
    box(axes, 8.0, 5.3, 4.1, 0.55, "supervised: $L_{CCE}$(H, ground truth) on the strong half", LOSS, size=10)
    box(axes, 8.0, 4.6, 4.1, 0.55, "cls: soft margin on max-pooled H vs $y$, whole batch", LOSS, size=10)
    box(axes, 8.0, 3.55, 4.1, 0.55, "H2P: $L_{CCE}$(P, $\\hat{Y}_h$) on the weak half", LOSS, size=10)
    box(
        axes,
        8.0,
        2.3,
        4.1,
        1.2,
        "dynamic evaluation of P on the strong half\n$J_c$ = IoU of class c from momentum counts (m = 0.99)\n"
        "$w_n = (\\mathrm{min}_{c \\in y_n} J_c)^{\\gamma}$,  $\\gamma$ = 8",
        "#ede9fe",
        size=10,
    )
    box(
        axes,
        8.0,
        0.8,
        4.1,
        0.55,
        "P2H: $w_n \\cdot L_{CCE}$(H, $\\hat{Y}_p$) on the weak half",
        LOSS,
        size=10,
    )
    arrow(axes, (5.35, 4.55), (5.95, 5.2))
    arrow(axes, (5.35, 4.4), (5.95, 4.6))
    arrow(axes, (5.35, 4.0), (5.95, 3.6), "$\\hat{Y}_h$", offset=(-0.05, 0.3))
    arrow(axes, (5.35, 2.1), (5.95, 2.3), colour="#5b21b6")
    arrow(axes, (5.35, 1.6), (5.95, 0.9), "$\\hat{Y}_p$", offset=(-0.2, -0.15), colour="#92400e")
    arrow(axes, (8.0, 1.7), (8.0, 1.08), "$w_n$", offset=(0.25, 0.0), colour="#5b21b6")
    axes.text(
        0.2,
        0.55,
        "$\\hat{Y}$: class-aware prediction, the argmax over the classes in $y$ only\n"
        "(ground truth replaces it where an image has a mask).\n"
        "L = the sum of the four terms: one backward pass, both optimizers step.",
        fontsize=9.5,
        ha="left",
        va="center",
        color="#374151",
    )

    # Stage 2, in its own column.
    axes.plot([10.45, 10.45], [0.3, 6.0], color="#d1d5db", linewidth=1.0)
    axes.text(10.7, 5.95, "Stage 2: retraining", fontsize=13, weight="bold")
    box(
        axes,
        12.05,
        4.9,
        2.7,
        0.95,
        "the final H labels every\nweak image (scales, flips, $y$)",
        HYBRID,
        size=10,
    )
    box(axes, 12.05, 3.45, 2.7, 0.8, "pseudo labels\n(palette PNGs)", DATA, size=10)
    box(
        axes,
        12.05,
        2.0,
        2.7,
        0.95,
        "a fresh net: plain CE on\nground truth + pseudo labels",
        RETRAIN,
        size=10,
    )
    box(axes, 12.05, 0.7, 2.7, 0.7, "mIoU on validation\n(no image labels needed)", DATA, size=10)
    arrow(axes, (12.05, 4.42), (12.05, 3.85))
    arrow(axes, (12.05, 3.05), (12.05, 2.48))
    arrow(axes, (12.05, 1.52), (12.05, 1.05))
    figure.tight_layout(pad=0.3)
    return figure


def main() -> None:
    """Draw the diagram and write it next to the docs."""
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    draw().savefig(OUTPUT, facecolor="white")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
