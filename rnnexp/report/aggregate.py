"""Grouping and aggregating a sweep's jobs: :func:`split_keys` finds the swept keys,
:func:`summarize` groups the jobs by every swept key but the seed and aggregates them
(:class:`Summary`: mean ± std per metric, the solved count, jobs per state), :func:`pivot`
lays one value out on rows x columns, and :func:`build_report` does it all for one sweep
folder (:class:`SweepReport`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnexp.errors import RnnexpError
from rnnexp.report.load import (
    COMPLETED,
    COUNTED,
    MULTIRUN_FILE,
    Job,
    SweepPlan,
    load_sweep,
    read_plan,
)

SEED_KEY = "train.seed"
SOLVED = "solved"
MISSING_VALUE = "—"  # a key that a job does not override while others do


@dataclass
class Stat:
    """Mean and sample standard deviation (n - 1; ``None`` for fewer than 2) of n values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        if len(values) < 2:
            std = None
        elif all(math.isfinite(v) for v in values):
            std = statistics.stdev(values)
        else:  # a NaN/inf metric (a diverged run) shows as such instead of crashing stdev
            std = math.nan
        return cls(statistics.fmean(values), std, len(values))

    def __str__(self) -> str:
        if self.std is None:
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} ± {self.std:.2g}"


@dataclass
class Summary:
    """The aggregate of one group of jobs (one combination of swept values, all seeds)."""

    key: tuple[str, ...]
    """The group's value of each grouping key."""
    jobs: list[Job]
    metrics: dict[str, Stat]
    """Mean ± std of each ``final`` metric (except ``solved``) over the completed jobs."""
    solved: tuple[int, int] | None
    """(jobs solved, completed jobs that report ``solved``), or ``None`` if none does."""
    counts: dict[str, int]
    """Jobs per state: ``completed``, ``failed``, ``unfinished``, ``missing``."""

    @property
    def not_completed(self) -> int:
        return sum(self.counts[state] for state in COUNTED)

    def value(self, name: str) -> str:
        """The cell text of a metric (or ``solved``) for this group; empty when absent."""
        if name == SOLVED:
            return "" if self.solved is None else f"{self.solved[0]}/{self.solved[1]}"
        stat = self.metrics.get(name)
        return "" if stat is None else str(stat)


@dataclass
class Pivot:
    """One value laid out with groups of ``rows`` keys down and ``cols`` keys across."""

    rows: list[str]
    cols: list[str]
    value: str
    row_keys: list[tuple[str, ...]]
    col_keys: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Summary]
    averaged_over: list[str]
    """Swept keys in neither rows nor cols (and the seed): each cell aggregates over them."""

    def column_labels(self) -> list[str]:
        if not self.cols:
            return [self.value]
        return [
            " ".join(f"{k}={v}" for k, v in zip(self.cols, key, strict=True))
            for key in self.col_keys
        ]

    def cell_text(self, row: tuple[str, ...], col: tuple[str, ...]) -> str:
        """The value, with the number of jobs that did not complete, e.g. ``2/3 (1 failed)``."""
        summary = self.cells.get((row, col))
        if summary is None:
            return ""
        text = summary.value(self.value) or "n/a"
        notes = [f"{summary.counts[s]} {s}" for s in COUNTED if summary.counts[s]]
        return f"{text} ({', '.join(notes)})" if notes else text


@dataclass
class SweepReport:
    """Everything ``rnnexp report`` shows and writes for one sweep folder."""

    sweep: Path
    jobs: list[Job]
    swept: list[str]
    """Keys whose values differ across jobs, in command-line order (the seed included)."""
    constants: dict[str, str]
    group_keys: list[str]
    """The swept keys but the seed: one table row per combination of their values."""
    summaries: list[Summary]
    metric_names: list[str]
    has_solved: bool
    pivot: Pivot | None = None
    plan: SweepPlan | None = None
    """What ``multirun.yaml`` asked for; ``None`` without a readable one."""


def split_keys(jobs: Sequence[Job]) -> tuple[list[str], dict[str, str]]:
    """(swept keys, constants): a key is swept when its value differs across jobs or some
    jobs lack it; otherwise it is a constant. Keys keep their command-line order."""
    keys: dict[str, None] = {}
    for job in jobs:
        keys.update(dict.fromkeys(job.overrides))
    swept, constants = [], {}
    for key in keys:
        values = {job.overrides.get(key) for job in jobs}
        if len(values) == 1 and None not in values:
            constants[key] = values.pop()
        else:
            swept.append(key)
    return swept, constants


def sort_value(value: str) -> tuple[int, float, str]:
    """Sort numbers numerically, then other strings, then a missing value."""
    if value == MISSING_VALUE:
        return (2, 0.0, "")
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, "") if not math.isnan(number) else (1, 0.0, value)


def group_key(job: Job, keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(job.overrides.get(key, MISSING_VALUE) for key in keys)


def group_jobs(jobs: Iterable[Job], keys: Sequence[str]) -> dict[tuple[str, ...], list[Job]]:
    """Jobs grouped by their values of ``keys``, groups in natural value order."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(group_key(job, keys), []).append(job)
    return {k: groups[k] for k in sorted(groups, key=lambda k: [sort_value(v) for v in k])}


def metric_names(jobs: Iterable[Job]) -> list[str]:
    """The ``final`` metrics of the completed jobs (``solved`` excluded), first seen first."""
    names: dict[str, None] = {}
    for job in jobs:
        names.update(dict.fromkeys(n for n in job.final if n != SOLVED))
    return list(names)


def aggregate(key: tuple[str, ...], jobs: Sequence[Job]) -> Summary:
    """Mean ± std of every metric over the group's completed jobs, the solved count and the
    number of jobs in each state."""
    done = [job for job in jobs if job.state == COMPLETED]
    metrics = {}
    for name in metric_names(done):
        stat = Stat.of([job.final[name] for job in done if name in job.final])
        if stat is not None:
            metrics[name] = stat
    solved_flags = [job.final[SOLVED] for job in done if SOLVED in job.final]
    solved = (sum(1 for s in solved_flags if s >= 0.5), len(solved_flags)) if solved_flags else None
    counts = {state: 0 for state in (COMPLETED, *COUNTED)}
    for job in jobs:
        counts[job.state] += 1
    return Summary(key, list(jobs), metrics, solved, counts)


def summarize(jobs: Sequence[Job], keys: Sequence[str]) -> list[Summary]:
    """One :class:`Summary` per combination of ``keys`` (aggregating over all other keys)."""
    return [aggregate(key, group) for key, group in group_jobs(jobs, keys).items()]


def default_value(jobs: Sequence[Job]) -> str:
    """``solved`` when the jobs report it, else the task's main metric, else the first one."""
    if any(SOLVED in job.final for job in jobs):
        return SOLVED
    names = metric_names(jobs)
    for job in jobs:
        if job.metric in names:
            return job.metric
    if not names:
        raise RnnexpError("no completed job has final metrics, so there is nothing to pivot")
    return names[0]


def pivot(
    jobs: Sequence[Job], rows: Sequence[str], cols: Sequence[str], value: str | None = None
) -> Pivot:
    """Lay ``value`` (a metric of ``final`` or ``solved``) out with one row per combination
    of ``rows`` keys and one column per combination of ``cols`` keys."""
    swept, constants = split_keys(jobs)
    known = [*swept, *constants]
    for key in (*rows, *cols):
        if key not in known:
            raise RnnexpError(
                f"unknown key {key!r} for --rows/--cols; this sweep's keys: "
                f"{', '.join(swept) or '(none)'}"
            )
    if set(rows) & set(cols):
        raise RnnexpError(f"a key is in both --rows and --cols: {sorted(set(rows) & set(cols))}")
    value = value or default_value(jobs)
    names = metric_names(jobs)
    has_solved = any(SOLVED in job.final for job in jobs)
    if value not in names and not (value == SOLVED and has_solved):
        choices = [*names, *([SOLVED] if has_solved else [])]
        raise RnnexpError(
            f"unknown --value {value!r}; the jobs' final metrics: "
            f"{', '.join(choices) or '(none: no job completed)'}"
        )
    keys = [*rows, *cols]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], Summary] = {}
    for key, group in group_jobs(jobs, keys).items():
        cells[key[: len(rows)], key[len(rows) :]] = aggregate(key, group)
    row_keys = _ordered({r for r, _ in cells})
    col_keys = _ordered({c for _, c in cells})
    averaged = [key for key in swept if key not in keys]
    return Pivot(list(rows), list(cols), value, row_keys, col_keys, cells, averaged)


def _ordered(keys: Iterable[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return sorted(keys, key=lambda k: [sort_value(v) for v in k])


def build_report(
    sweep: Path,
    rows: Sequence[str] = (),
    cols: Sequence[str] = (),
    value: str | None = None,
) -> SweepReport:
    """Load a sweep folder and compute its main table (and the pivot if rows/cols given)."""
    if value is not None and not rows and not cols:
        raise RnnexpError("--value picks the pivot's value: give --rows and/or --cols with it")
    sweep = Path(sweep)
    plan = read_plan(sweep)
    jobs = load_sweep(sweep, plan)
    if not jobs:
        raise RnnexpError(f"{sweep}: its {MULTIRUN_FILE} lists no jobs and it holds no job folders")
    swept, constants = split_keys(jobs)  # jobs that never started count: they were asked for
    group_keys = [key for key in swept if key != SEED_KEY]
    report = SweepReport(
        sweep=sweep,
        jobs=jobs,
        swept=swept,
        constants=constants,
        group_keys=group_keys,
        summaries=summarize(jobs, group_keys),
        metric_names=metric_names(jobs),
        has_solved=any(SOLVED in job.final for job in jobs),
        plan=plan,
    )
    if rows or cols:
        report.pivot = pivot(jobs, rows, cols, value)
    return report
