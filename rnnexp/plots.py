"""Figures: one matplotlib setup for every picture rnnexp draws (headless, Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from rnnexp.atomic import atomic_write  # noqa: E402
from rnnexp.errors import RnnexpError  # noqa: E402

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}  # by the file name's suffix
TARGET_COLOR = "tab:blue"  # the seed's picture: target in blue ...
PREDICTION_COLOR = "tab:orange"  # ... prediction in orange


def new_figure(rows: int = 1, width: float = 10.0, row_height: float = 2.4) -> tuple[Figure, list]:
    """A figure with ``rows`` stacked axes sharing the x axis."""
    fig, axes = plt.subplots(
        rows, 1, figsize=(width, row_height * rows), sharex=True, squeeze=False
    )
    return fig, list(axes[:, 0])


def figure_format(path: Path) -> str:
    """The file format named by ``path``'s suffix (.png, .svg, .pdf), or a one-line error."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise RnnexpError(f"cannot tell the figure format of {path}: name it .png, .svg or .pdf")
    return fmt


def save_png(fig: Figure, path: Path, fmt: str = "png") -> Path:
    """Write ``fig`` to ``path`` (atomically: readers never see a half-written file)."""
    return atomic_write(
        path, lambda handle: fig.savefig(handle, format=fmt, dpi=100, bbox_inches="tight")
    )


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` in the format ``path``'s suffix names (:func:`figure_format`),
    atomically, and close it."""
    fmt = figure_format(path)
    try:
        return save_png(fig, path, fmt)
    finally:
        close(fig)


def close(fig: Figure) -> None:
    plt.close(fig)
