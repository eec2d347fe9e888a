"""Rendering a :class:`~rnnexp.report.aggregate.SweepReport`: rich tables for the terminal
(:func:`print_report`), ``report.md`` (:func:`to_markdown`) and ``report.csv`` /
``report_pivot.csv`` (:func:`write_report`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rnnexp.report.aggregate import MISSING_VALUE, SEED_KEY, SOLVED, Pivot, Summary, SweepReport
from rnnexp.report.load import COMPLETED, COUNTED, FAILED, MISSING, Job

CSV_FILE = "report.csv"
PIVOT_CSV_FILE = "report_pivot.csv"
MD_FILE = "report.md"
PLOT_FILE = "report_pivot.png"


def jobs_text(report: SweepReport) -> str:
    """``12 jobs``, or with a sweeper that picks its jobs, that the number is unknown."""
    note = report.plan.note() if report.plan is not None else ""
    return f"{len(report.jobs)} jobs" + (f" ({note})" if note else "")


def caption(report: SweepReport) -> str:
    """The constants and what each row aggregates over, as one line."""
    parts = []
    if report.constants:
        parts.append("constant: " + " ".join(f"{k}={v}" for k, v in report.constants.items()))
    seeds = {job.overrides.get(SEED_KEY, MISSING_VALUE) for job in report.jobs}
    if SEED_KEY in report.swept:
        parts.append(f"mean ± std over {SEED_KEY} ({len(seeds)} values)")
    return "; ".join(parts)


def main_header(report: SweepReport) -> list[str]:
    """The columns of the main table."""
    solved = [SOLVED] if report.has_solved else []
    return [*report.group_keys, *report.metric_names, *solved, "jobs", *COUNTED]


def main_rows(report: SweepReport) -> list[list[str]]:
    """The main table's cells as text (mean ± std), one list per group."""
    rows = []
    for s in report.summaries:
        solved = [s.value(SOLVED)] if report.has_solved else []
        rows.append(
            [
                *s.key,
                *(s.value(m) for m in report.metric_names),
                *solved,
                str(len(s.jobs)),
                *(str(s.counts[c]) for c in COUNTED),
            ]
        )
    return rows


def csv_rows(report: SweepReport) -> list[list[str]]:
    """The main table for ``report.csv``: numbers in their own columns (``<metric>_mean``,
    ``<metric>_std``, ``<metric>_n``; ``solved`` and ``solved_n``), header first."""
    header = [*report.group_keys]
    for name in report.metric_names:
        header += [f"{name}_mean", f"{name}_std", f"{name}_n"]
    if report.has_solved:
        header += [SOLVED, f"{SOLVED}_n"]
    header += ["jobs", COMPLETED, *COUNTED]
    rows = [header]
    for s in report.summaries:
        row = list(s.key)
        for name in report.metric_names:
            stat = s.metrics.get(name)
            row += (
                ["", "", "0"]
                if stat is None
                else [repr(stat.mean), "" if stat.std is None else repr(stat.std), str(stat.n)]
            )
        if report.has_solved:
            row += ["", "0"] if s.solved is None else [str(s.solved[0]), str(s.solved[1])]
        row += [str(len(s.jobs)), *(str(s.counts[c]) for c in (COMPLETED, *COUNTED))]
        rows.append(row)
    return rows


def pivot_rows(p: Pivot) -> list[list[str]]:
    """The pivot as text, header first (row-key names, then one column per col group)."""
    header = [*p.rows, *p.column_labels()] if p.rows else ["", *p.column_labels()]
    rows = [header]
    for row in p.row_keys or [()]:
        label = list(row) if p.rows else [p.value]
        rows.append([*label, *(p.cell_text(row, col) for col in p.col_keys)])
    return rows


def pivot_title(p: Pivot) -> str:
    across = f" across {', '.join(p.cols)}" if p.cols else ""
    down = f" by {', '.join(p.rows)}" if p.rows else ""
    over = f"; aggregated over {', '.join(p.averaged_over)}" if p.averaged_over else ""
    return f"{p.value}{down}{across}{over}"


def problem_jobs(report: SweepReport) -> list[tuple[Job, str]]:
    """Each job that did not complete, with one line: job, its swept values, state, reason."""
    problems = []
    for job in report.jobs:
        if job.state == COMPLETED:
            continue
        values = " ".join(f"{k}={job.overrides.get(k, MISSING_VALUE)}" for k in report.swept)
        reason = job.error if job.state in (FAILED, MISSING) else f"status {job.status}"
        problems.append((job, f"job {job.name} ({values}): {job.state}: {reason}"))
    return problems


def main_table(report: SweepReport) -> Table:
    """The main table for the terminal: one row per group, counts of problem jobs in red."""
    header = main_header(report)
    table = Table(
        title=Text(f"sweep {report.sweep} — {jobs_text(report)}"),
        caption=Text(caption(report)) if caption(report) else None,
        title_justify="left",
        caption_justify="left",
    )
    for i, column in enumerate(header):
        table.add_column(Text(column), justify="left" if i < len(report.group_keys) else "right")
    counted = {header.index(c) for c in COUNTED}
    for row in main_rows(report):
        table.add_row(
            *(Text(c, style="red" if i in counted and c != "0" else "") for i, c in enumerate(row))
        )
    return table


def pivot_table(p: Pivot) -> Table:
    """The pivot for the terminal."""
    header, *rows = pivot_rows(p)
    table = Table(title=Text(f"pivot: {pivot_title(p)}"), title_justify="left")
    for i, column in enumerate(header):
        table.add_column(Text(column), justify="left" if i < max(len(p.rows), 1) else "right")
    for row in rows:
        table.add_row(*map(Text, row))
    return table


def _md_table(rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(rows[0]), line(["---"] * len(rows[0])), *map(line, rows[1:])])


def to_markdown(report: SweepReport) -> str:
    """``report.md``: the main table, the pivot if any, and the jobs that did not complete."""
    parts = [f"# Sweep report: {report.sweep}", ""]
    note = caption(report)
    parts += [f"{jobs_text(report)}. {note}".rstrip(), ""]
    parts += [_md_table([main_header(report), *main_rows(report)]), ""]
    if report.pivot is not None:
        parts += [
            f"## Pivot: {pivot_title(report.pivot)}",
            "",
            _md_table(pivot_rows(report.pivot)),
            "",
        ]
    problems = [line for _, line in problem_jobs(report)]
    if problems:
        parts += ["## Jobs that did not complete", "", *(f"- {line}" for line in problems), ""]
    return "\n".join(parts)


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_report(report: SweepReport) -> list[Path]:
    """Write ``report.csv``, ``report.md`` and (with a pivot) ``report_pivot.csv`` into the
    sweep folder; a stale ``report_pivot.csv`` is removed when there is no pivot."""
    paths = [report.sweep / CSV_FILE, report.sweep / MD_FILE]
    paths[0].write_text(_csv_text(csv_rows(report)), encoding="utf-8")
    paths[1].write_text(to_markdown(report), encoding="utf-8")
    pivot_path = report.sweep / PIVOT_CSV_FILE
    if report.pivot is not None:
        pivot_path.write_text(_csv_text(pivot_rows(report.pivot)), encoding="utf-8")
        paths.append(pivot_path)
    else:
        pivot_path.unlink(missing_ok=True)
    return paths


def print_report(report: SweepReport, console: Console) -> None:
    """Print the main table, the pivot and one line per job that did not complete."""
    console.print(main_table(report))
    if report.pivot is not None:
        console.print(pivot_table(report.pivot))
    for job, line in problem_jobs(report):
        console.print(
            line,
            style="red" if job.state == FAILED else "yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _point(summary: Summary | None, value: str) -> tuple[float, float]:
    """(y, error bar) of one pivot cell: the solved fraction (no bar), or mean and std."""
    if summary is None:
        return math.nan, 0.0
    if value == SOLVED:
        solved = summary.solved
        return (solved[0] / solved[1], 0.0) if solved and solved[1] else (math.nan, 0.0)
    stat = summary.metrics.get(value)
    if stat is None:
        return math.nan, 0.0
    return stat.mean, stat.std or 0.0


def plot_pivot(p: Pivot, path: Path) -> Path:
    """The pivot as a picture (``rnnexp report --plot``): the columns' values along x, one
    line per row (e.g. ``--rows cell --cols task.lag``: one line per cell against the lag),
    the mean over seeds with the standard deviation as error bars, or the solved fraction.
    Without ``--cols`` the rows go along x as one line. Numeric x values are spaced as
    numbers (on a log scale when they are positive and span a factor of 20 or more), others
    evenly."""
    from rnnexp import plots  # matplotlib only for --plot

    lines, xs = (p.row_keys, p.col_keys) if p.cols else ([()], p.row_keys)
    labels = [" ".join(x) for x in xs]
    try:
        positions = [float(label) for label in labels]
    except ValueError:
        positions = list(range(len(labels)))
    fig, (ax,) = plots.new_figure(rows=1, width=7.0, row_height=4.0)
    for line in lines:
        cells = [p.cells.get((line, x) if p.cols else (x, ())) for x in xs]
        points = [_point(cell, p.value) for cell in cells]
        name = (
            " ".join(f"{k}={v}" for k, v in zip(p.rows, line, strict=True)) if p.cols else p.value
        )
        ax.errorbar(positions, [y for y, _ in points], yerr=[e for _, e in points],
                    marker="o", capsize=3, label=name)  # fmt: skip
    numeric = positions != list(range(len(labels)))
    if numeric and min(positions) > 0 and max(positions) >= 20 * min(positions):
        ax.set_xscale("log")  # lags 10..1000: evenly spread decades, not a crowded left end
        ax.minorticks_off()
    ax.set_xticks(positions, labels)
    ax.set_xlabel(" ".join(p.cols) if p.cols else " ".join(p.rows))
    ax.set_ylabel("solved fraction" if p.value == SOLVED else f"{p.value} (mean ± std)")
    if p.value == SOLVED:
        ax.set_ylim(-0.05, 1.05)
    over = ", ".join(p.averaged_over) or "nothing"
    ax.set_title(f"{p.value} over {over}", fontsize=10)
    if p.cols:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return plots.save_figure(fig, path)
