"""Reading a sweep folder: the jobs its ``multirun.yaml`` asked for (:func:`read_plan`,
:func:`expand_sweep`) and its job folders as :class:`Job` records (:func:`load_sweep`,
:func:`load_job`), and the one reader of a run's ``metrics.json`` (:func:`read_metrics`).

:data:`METRICS_FILE` is defined here, not in :mod:`rnnexp.train.record` (which imports
torch), so that ``rnnexp report`` and the sweep bookkeeping start without torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rnnexp.config import parse_override
from rnnexp.errors import RnnexpError

METRICS_FILE = "metrics.json"  # a run folder's record of itself (rnnexp.train.record.RunRecord)
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of the whole sweep, at the sweep folder's top
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# A job folder: its job number, then (sweeps since job folders were named) "_" and its
# overrides (conf/config.yaml's hydra.sweep.subdir, :func:`job_dirname`): 0, 12, 3_cell=gru
JOB_DIR = re.compile(r"(\d+)(?:_.*)?", re.DOTALL)
JOB_DIRNAME_MAX = 120
"""The longest job folder name :func:`job_dirname` makes (file systems allow 255 bytes)."""
UNSAFE = re.compile(r"[^A-Za-z0-9._,=+~-]")
# Overrides that say how a job ran, not what it ran (where it resumed from, on which device,
# with how many threads, with a progress bar): never a swept key of a report, as they are
# no part of a job folder's name (conf/config.yaml's override_dirname.exclude_keys, less
# train.init_from, which changes what runs). A job continued in place with train.resume
# keeps its place in the table.
RUN_KEYS = frozenset(
    {"train.resume", "train.device", "train.num_threads", "train.progress", "hparams_search"}
)

# Job states as the report counts them; `running` and `interrupted` are both unfinished.
COMPLETED, FAILED, UNFINISHED, MISSING = "completed", "failed", "unfinished", "missing"
COUNTED = (FAILED, UNFINISHED, MISSING)


@dataclass
class Job:
    """One job folder of a sweep, as read from disk."""

    name: str
    """The job number, as text: ``0``, ``1``, ... (what reports and messages call it)."""
    status: str
    """``completed``, ``failed``, ``running``, ``interrupted`` or ``missing`` (no metrics.json)."""
    overrides: dict[str, str]
    """``key -> value`` of the job's command-line overrides (``+``/``++`` prefixes dropped),
    less those that say how it ran (:data:`RUN_KEYS`)."""
    final: dict[str, float] = field(default_factory=dict)
    """Test-set metrics; only for a completed job."""
    error: str | None = None
    """Why the job failed, or what is wrong with its files."""
    metric: str | None = None
    """The task's main metric (``best.metric``), when recorded."""
    folder: str | None = None
    """The folder name (``3_cell=gru,train.seed=1``, or ``3`` in older sweeps); ``None``
    for a job that never started."""

    @property
    def state(self) -> str:
        """``completed``, ``failed``, ``unfinished`` or ``missing``."""
        if self.status in (COMPLETED, FAILED, MISSING):
            return self.status
        return UNFINISHED


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


def read_metrics(path: str | Path) -> dict[str, Any] | None:
    """A run's ``metrics.json`` as a dict; ``path`` is the run folder or the file itself.
    ``None`` when there is no such file; a :class:`ValueError` (``unreadable metrics.json:
    <why>``) when it cannot be read or does not hold a JSON object."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ValueError(f"unreadable {METRICS_FILE}: {err}") from err
    return data


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["cell=gru", "+x=1", "~y"]`` -> ``{"cell": "gru", "x": "1", "~y": ""}``, less the
    :data:`RUN_KEYS`."""
    parsed: dict[str, str] = {}
    for item in map(parse_override, overrides):
        if item.key not in RUN_KEYS:
            parsed[item.key if item.prefix != "~" else f"~{item.key}"] = item.value or ""
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


def job_dirname(num: int | str, overrides: str = "") -> str:
    """A sweep job's folder name: its number, then ``_`` and its overrides as Hydra's
    ``hydra.job.override_dirname`` gives them (``cell=gru,optim.lr=0.001``), with every
    character other than letters, digits and ``._,=+~-`` (``/``, spaces, brackets, ...)
    replaced by ``_`` and cut to :data:`JOB_DIRNAME_MAX` characters; just the number
    when there are none. The ``rnnexp.job_dir`` resolver of ``hydra.sweep.subdir``."""
    name = str(num)
    if overrides:
        name = f"{name}_{UNSAFE.sub('_', str(overrides))}"
    return name[:JOB_DIRNAME_MAX]


def job_number(name: str) -> int | None:
    """The job number of a job folder's name (``3_cell=gru`` -> 3, ``12`` -> 12), or
    ``None`` for a name that is not a job folder's (``.submitit``, ``report_pivot.png``)."""
    match = JOB_DIR.fullmatch(name)
    return int(match.group(1)) if match else None


def find_job_dirs(sweep: Path) -> list[Path]:
    """The job folders of a sweep folder (``0_cell=gru,...``, or ``0``, ``1``, ... in older
    sweeps), in job order; none (no job started yet) is fine for a folder with a
    ``multirun.yaml``."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise RnnexpError(
            f"{sweep} is not a folder; give a sweep folder such as outputs/multirun/<timestamp>"
        )
    jobs = sorted(
        (p for p in sweep.iterdir() if p.is_dir() and job_number(p.name) is not None),
        key=lambda p: (job_number(p.name), p.name),
    )
    if not jobs and not (sweep / MULTIRUN_FILE).is_file():
        sweeps = sorted(p.name for p in sweep.iterdir() if p.is_dir() and _holds_jobs(p))
        hint = f" (it holds sweeps: pick one, e.g. {sweep / sweeps[-1]})" if sweeps else ""
        raise RnnexpError(
            f"{sweep} holds no job folders (0_<overrides>, 1_<overrides>, ...); give one "
            f"sweep folder such as outputs/multirun/<timestamp>{hint}"
        )
    return jobs


def _holds_jobs(folder: Path) -> bool:
    """Whether ``folder`` has a job folder (``0_...``, or ``0``) with Hydra files in it."""
    return any(job_number(p.name) is not None and (p / ".hydra").is_dir() for p in folder.iterdir())


def load_job(job_dir: Path) -> Job:
    """Read one job folder. A missing metrics.json gives status ``missing``; unreadable
    files give ``failed`` with the reason in ``error``, so no job is ever dropped."""
    job_dir = Path(job_dir)
    num = job_number(job_dir.name)
    label = job_dir.name if num is None else str(num)  # what reports call the job
    error = None
    overrides: list[str] | None = None
    try:
        loaded = yaml.safe_load((job_dir / OVERRIDES_FILE).read_text(encoding="utf-8"))
        if isinstance(loaded, list):
            overrides = [str(o) for o in loaded]
    except (OSError, yaml.YAMLError):
        pass  # fall back on metrics.json's copy

    try:
        data = read_metrics(job_dir / METRICS_FILE)
    except ValueError as err:  # "unreadable metrics.json: ..."
        return Job(label, FAILED, parse_overrides(overrides or []), error=str(err),
                   folder=job_dir.name)  # fmt: skip
    if data is None:
        return Job(label, MISSING, parse_overrides(overrides or []), error=f"no {METRICS_FILE}",
                   folder=job_dir.name)  # fmt: skip

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
    return Job(label, status, parse_overrides(overrides), final, error, metric, job_dir.name)


def load_sweep(sweep: Path, plan: SweepPlan | None = None) -> list[Job]:
    """Every job of a sweep folder, in job order: each job folder, and each job of ``plan``
    (by default :func:`read_plan` of the folder) that has no folder, as ``missing`` with
    the overrides it would have run with."""
    jobs = [(job_number(d.name), load_job(d)) for d in find_job_dirs(sweep)]
    plan = read_plan(sweep) if plan is None else plan
    expected = plan.jobs if plan is not None and plan.jobs is not None else []
    started = {num for num, _ in jobs}
    for num, overrides in enumerate(expected):
        if num not in started:
            reason = f"never started (listed in {MULTIRUN_FILE})"
            jobs.append((num, Job(str(num), MISSING, parse_overrides(overrides), error=reason)))
    return [job for _, job in sorted(jobs, key=lambda pair: (pair[0], pair[1].folder or ""))]
