"""``rnnexp report``: build a sweep folder's report, print it and write it there
(:mod:`rnnexp.report`: load, aggregate, render)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from rnnexp.report.aggregate import SweepReport, build_report
from rnnexp.report.render import print_report, write_report


def run(
    sweep: Path,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    value: str | None = None,
    console: Console | None = None,
) -> SweepReport:
    """``rnnexp report``: build, print and write the report; returns it."""
    console = console or Console()
    report = build_report(sweep, rows, cols, value)
    print_report(report, console)
    paths = write_report(report)
    console.print("written to " + ", ".join(str(p) for p in paths), highlight=False, soft_wrap=True)
    return report
