"""``rnnexp report``: build a sweep folder's report, print it and write it there
(:mod:`rnnexp.report`: load, aggregate, render)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from rnnexp.errors import RnnexpError
from rnnexp.report.aggregate import SweepReport, build_report
from rnnexp.report.render import PLOT_FILE, plot_pivot, print_report, write_report


def run(
    sweep: Path,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    value: str | None = None,
    console: Console | None = None,
    plot: bool = False,
) -> SweepReport:
    """``rnnexp report``: build, print and write the report (with ``plot``, the pivot's
    picture too: :func:`rnnexp.report.render.plot_pivot`); returns it."""
    console = console or Console()
    report = build_report(sweep, rows, cols, value)
    if plot and report.pivot is None:
        raise RnnexpError("--plot draws the pivot: give --rows (and --cols), e.g. --rows cell")
    print_report(report, console)
    paths = write_report(report)
    if plot and report.pivot is not None:
        paths.append(plot_pivot(report.pivot, report.sweep / PLOT_FILE))
    console.print("written to " + ", ".join(str(p) for p in paths), highlight=False, soft_wrap=True)
    return report
