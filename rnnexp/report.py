"""``rnnexp report``: summarize a sweep (a Hydra multirun folder) over seeds.

A sweep folder ``outputs/multirun/<timestamp>/`` holds Hydra's ``multirun.yaml`` (the
sweep as asked for) and one job folder per job that started (``0``, ``1``, ...), each with
``.hydra/overrides.yaml`` and ``metrics.json``. The functions here are pure steps that the
CLI chains: :func:`read_plan` expands ``multirun.yaml`` into the jobs the sweep asked for,
:func:`load_sweep` reads the jobs into :class:`Job` records (those that never started as
``missing``), :func:`split_keys` finds the swept keys, :func:`summarize` groups the
jobs by every swept key but the seed and aggregates them, :func:`pivot` lays one value
out on rows x columns, and the ``*_table`` / :func:`to_markdown` / :func:`write_report`
functions render the result. Nothing here imports torch, so the command starts fast.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from rnnexp.errors import RnnexpError

METRICS_FILE = "metrics.json"  # = rnnexp.runinfo.METRICS_FILE (not imported: it loads torch)
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of the whole sweep, at the sweep folder's top
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEED_KEY = "train.seed"
SOLVED = "solved"
CSV_FILE = "report.csv"
PIVOT_CSV_FILE = "report_pivot.csv"
MD_FILE = "report.md"
MISSING_VALUE = "—"  # a key that a job does not override while others do

# Job states as the report counts them; `running` and `interrupted` are both unfinished.
COMPLETED, FAILED, UNFINISHED, MISSING = "completed", "failed", "unfinished", "missing"
COUNTED = (FAILED, UNFINISHED, MISSING)


@dataclass
class Job:
    """One job folder of a sweep, as read from disk."""

    name: str
    """The folder name: ``0``, ``1``, ..."""
    status: str
    """``completed``, ``failed``, ``running``, ``interrupted`` or ``missing`` (no metrics.json)."""
    overrides: dict[str, str]
    """``key -> value`` of the job's command-line overrides (``+``/``++`` prefixes dropped)."""
    final: dict[str, float] = field(default_factory=dict)
    """Test-set metrics; only for a completed job."""
    error: str | None = None
    """Why the job failed, or what is wrong with its files."""
    metric: str | None = None
    """The task's main metric (``best.metric``), when recorded."""

    @property
    def state(self) -> str:
        """``completed``, ``failed``, ``unfinished`` or ``missing``."""
        if self.status in (COMPLETED, FAILED, MISSING):
            return self.status
        return UNFINISHED


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
class SweepPlan:
    """The jobs a sweep asked for, from its ``multirun.yaml``."""

    sweeper: str
    """The sweeper's class name, e.g. ``BasicSweeper`` or ``OptunaSweeper``."""
    jobs: list[list[str]] | None
    """Each job's overrides, in job order (job ``i`` is folder ``i``); ``None`` when the
    sweeper chooses its jobs as it goes (Optuna), so the number expected is unknown."""

    def note(self) -> str:
        """What the report says about the expected jobs; empty when they are known."""
        if self.jobs is not None:
            return ""
        return f"expected number of jobs unknown: {self.sweeper} chooses them as it runs"


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


# --- loading -------------------------------------------------------------------------------


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["cell=gru", "+x=1", "~y"]`` -> ``{"cell": "gru", "x": "1", "~y": ""}``."""
    parsed: dict[str, str] = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        parsed[key.lstrip("+")] = value
    return parsed


def expand_sweep(overrides: Sequence[str], params: dict[str, str] | None = None) -> list[list[str]]:
    """Each job's overrides, in job order, exactly as Hydra's ``BasicSweeper`` makes them
    from a sweep's command-line ``overrides`` and its ``hydra.sweeper.params``: Hydra's own
    override parser and expansion (``a=1,2``, ``range()``, ``choice()``, ``glob()`` over
    rnnexp's config groups), so ``["cell=elman,gru", "train.seed=range(2)"]`` gives 4 jobs."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rnnexp.config import CONFIG_PATH

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONFIG_PATH))
    arguments = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def read_plan(sweep: Path) -> SweepPlan | None:
    """The jobs that ``sweep/multirun.yaml`` asks for (``hydra.overrides.task`` expanded by
    :func:`expand_sweep`); ``None`` when the file is absent, unreadable or has no overrides.
    A sweeper other than the basic one gets ``jobs=None``: its count is not guessed."""
    from hydra.errors import HydraException

    try:
        loaded = yaml.safe_load((Path(sweep) / MULTIRUN_FILE).read_text(encoding="utf-8"))
        hydra = loaded["hydra"]
        overrides = [str(o) for o in hydra["overrides"]["task"]]
        sweeper = hydra["sweeper"]
        target = str(sweeper["_target_"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    if target != BASIC_SWEEPER:
        return SweepPlan(target.rpartition(".")[2], None)
    params = {str(k): str(v) for k, v in (sweeper.get("params") or {}).items()}
    try:
        return SweepPlan("BasicSweeper", expand_sweep(overrides, params))
    except HydraException as err:  # e.g. a glob over a group this install does not have
        return SweepPlan(f"BasicSweeper (cannot expand its overrides: {err})", None)


def find_job_dirs(sweep: Path) -> list[Path]:
    """The job folders (named 0, 1, 2, ...) of a sweep folder, in job order; none (no
    job started yet) is fine for a folder with a ``multirun.yaml``."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise RnnexpError(
            f"{sweep} is not a folder; give a sweep folder such as outputs/multirun/<timestamp>"
        )
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not jobs and not (sweep / MULTIRUN_FILE).is_file():
        sweeps = sorted(p.name for p in sweep.iterdir() if p.is_dir() and _holds_jobs(p))
        hint = f" (it holds sweeps: pick one, e.g. {sweep / sweeps[-1]})" if sweeps else ""
        raise RnnexpError(
            f"{sweep} holds no job folders (0, 1, 2, ...); give one sweep folder "
            f"such as outputs/multirun/<timestamp>{hint}"
        )
    return jobs


def _holds_jobs(folder: Path) -> bool:
    """Whether ``folder`` has a job folder (``0``, ``1``, ...) with Hydra files in it."""
    return any(p.name.isdigit() and (p / ".hydra").is_dir() for p in folder.iterdir())


def load_job(job_dir: Path) -> Job:
    """Read one job folder. A missing metrics.json gives status ``missing``; unreadable
    files give ``failed`` with the reason in ``error``, so no job is ever dropped."""
    job_dir = Path(job_dir)
    error = None
    overrides: list[str] | None = None
    try:
        loaded = yaml.safe_load((job_dir / OVERRIDES_FILE).read_text(encoding="utf-8"))
        if isinstance(loaded, list):
            overrides = [str(o) for o in loaded]
    except (OSError, yaml.YAMLError):
        pass  # fall back on metrics.json's copy

    path = job_dir / METRICS_FILE
    if not path.is_file():
        return Job(
            job_dir.name, MISSING, parse_overrides(overrides or []), error=f"no {METRICS_FILE}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return Job(
            job_dir.name,
            FAILED,
            parse_overrides(overrides or []),
            error=f"unreadable {METRICS_FILE}: {err}",
        )

    if overrides is None:
        overrides = [str(o) for o in data.get("overrides") or []]
    status = str(data.get("status", "running"))
    final: dict[str, float] = {}
    if status == COMPLETED:
        for name, value in (data.get("final") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                final[name] = float(value)
    if status == FAILED:
        error = str(data.get("error") or "failed (no error recorded)")
    best = data.get("best")
    metric = best.get("metric") if isinstance(best, dict) else None
    return Job(job_dir.name, status, parse_overrides(overrides), final, error, metric)


def load_sweep(sweep: Path, plan: SweepPlan | None = None) -> list[Job]:
    """Every job of a sweep folder, in job order: each job folder, and each job of ``plan``
    (by default :func:`read_plan` of the folder) that has no folder, as ``missing`` with
    the overrides it would have run with."""
    jobs = {int(d.name): load_job(d) for d in find_job_dirs(sweep)}
    plan = read_plan(sweep) if plan is None else plan
    expected = plan.jobs if plan is not None and plan.jobs is not None else []
    for num, overrides in enumerate(expected):
        if num not in jobs:
            reason = f"never started (listed in {MULTIRUN_FILE})"
            jobs[num] = Job(str(num), MISSING, parse_overrides(overrides), error=reason)
    return [jobs[num] for num in sorted(jobs)]


# --- grouping and aggregation ----------------------------------------------------------------


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


# --- rendering -------------------------------------------------------------------------------


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
