"""``rnnexp train``: Hydra's task function around the training loop.

:data:`main` is ``hydra.main`` around :func:`run`: Hydra parses the command line
(overrides, ``-m``, ``--cfg``, ...) and calls :func:`run` once per run or sweep job, which
checks the config, records the run (``metrics.json``), calls
:func:`rnnexp.train.loop.train` and ends in one documented way: completed, failed with one
line, or interrupted with the command that continues.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig
from rich.console import Console

from rnnexp import __version__
from rnnexp.config import CONFIG_NAME, CONFIG_PATH
from rnnexp.errors import RnnexpError, print_error
from rnnexp.report.load import read_metrics
from rnnexp.schema import check_config
from rnnexp.tasks.base import metric_mode
from rnnexp.train.callbacks import History
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord, git_commit
from rnnexp.train.resume import resume_command
from rnnexp.train.sweep import (
    JobSignals,
    exit_code,
    note_job,
    requeued_checkpoint,
    rewind_history,
)

log = logging.getLogger(__name__)
console = Console(stderr=True)


def run(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run (or one job of a sweep) in its own folder.

    It is a plain module-level function, and :data:`main` wraps it with ``hydra.main``:
    launchers that run jobs in other processes (joblib, submitit) pickle the task
    function by reference, which needs the name ``rnnexp.cli.train.run`` to resolve to it.

    Returns the best validation value over the run of ``train.objective`` (null: the
    task's metric), for sweepers like Optuna (:func:`objective_value`).
    """
    with quiet_write_errors():
        return run_job(cfg)


@contextlib.contextmanager
def quiet_write_errors() -> Iterator[None]:
    """While a run goes, a full disk is one line (from the write that fails in the main
    thread), not a traceback for each ``train.log`` line (``logging.raiseExceptions``) and
    one from TensorBoard's writer thread (:func:`_thread_error`)."""
    raise_exceptions, excepthook = logging.raiseExceptions, threading.excepthook
    logging.raiseExceptions, threading.excepthook = False, _thread_error
    try:
        yield
    finally:
        logging.raiseExceptions, threading.excepthook = raise_exceptions, excepthook


def parallel_jobs(hydra_cfg: DictConfig) -> int:
    """How many jobs of a sweep run at once on this machine: the joblib launcher's
    ``n_jobs`` (``-1``: one per core), else 1 (Hydra's basic launcher runs them in turn;
    submitit's jobs have machines of their own)."""
    launcher = hydra_cfg.get("launcher") or {}
    if hydra_cfg.mode != RunMode.MULTIRUN or "joblib" not in str(launcher.get("_target_")):
        return 1
    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return cores if n_jobs < 0 else min(n_jobs, cores)


class JobTag(logging.Filter):
    """Prefix every log line with ``[job N]`` (sweeps), once however many handlers see it."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = f"[{tag}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_tagged", False):
            record.msg, record.job_tagged = self.tag + str(record.msg), True
        return True


def tag_log_lines(tag: str) -> None:
    """Tag the lines of this job's handlers (Hydra sets them up anew for each job)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobTag(tag))


def run_job(cfg: DictConfig) -> float | None:
    """:func:`run`'s body: check the config, record, train, and end in one documented way
    (completed; failed with one line; interrupted with the command that continues)."""
    hydra_cfg = HydraConfig.get()
    note_job(hydra_cfg)  # a sweep's job: the command counts its sweep's jobs at the end
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    if sweeping:  # parallel jobs' lines interleave in the console: each says whose it is
        tag_log_lines(f"job {hydra_cfg.job.num}")
    try:
        check_config(cfg)  # a bad key or value (rnnexp.schema): before anything is built
        check_objective(cfg)
        requeues = continue_requeued(cfg, hydra_cfg, run_dir)
        if cfg.train.num_threads is None and (jobs := parallel_jobs(hydra_cfg)) > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))  # no oversubscription
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if k[:6] != "hydra/"}
        record = RunRecord(
            run_dir,
            task=cfg.task.name,
            cell=cfg.cell.name,
            choices=choices,
            overrides=overrides,
            seed=cfg.train.seed,
            run_dir=str(run_dir),
            rnnexp_version=__version__,
            torch_version=torch.__version__,
            command=" ".join(sys.argv),
            **git_commit(),
            **({"requeues": requeues} if requeues else {}),
        )
    except RnnexpError as err:
        return failed(RunRecord(run_dir, write=False, overrides=overrides), err, sweeping)
    # SIGTERM (kill, SLURM) and Ctrl-C raise Interrupted: the run records `interrupted`
    signals = JobSignals.start(run_dir)
    try:
        data = train(cfg, run_dir, record)
        value = objective_value(cfg, data, run_dir)
    except RnnexpError as err:
        return failed(record, err, sweeping)
    except OSError as err:  # e.g. TensorBoard's event file on a full disk
        what = f"cannot write in {run_dir}: {err.strerror or err}"
        return failed(record, RnnexpError(f"{what}; free space, or set hydra.run.dir"), sweeping)
    except KeyboardInterrupt as err:
        interrupted(record, run_dir, overrides)
        if sweeping:
            raise
        sys.exit(exit_code(err))
    except SystemExit:  # submitit's signal handler requeued the job (time limit, preemption)
        note = "stopped by the scheduler and requeued: the job continues from checkpoints/last.pt"
        record.finish(status="interrupted", note=f"{note} at step {record.data.get('steps')}")
        log.warning("%s at step %s", note, record.data.get("steps"))
        raise
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        if sweeping:  # a bug: its traceback in the job's log
            log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
            return None
        raise
    finally:
        if signals is not None:  # None off the main thread
            signals.restore()
    return value


def continue_requeued(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> int:
    """A submitit job started again in its own folder (requeued after a time limit or a
    preemption, :func:`rnnexp.train.sweep.requeued_checkpoint`) continues its run from
    ``checkpoints/last.pt``: ``train.resume`` is set to the folder and ``history.csv``
    rewound to that checkpoint's step. Returns how many times the job was requeued (0: its
    first start, or nothing to continue from)."""
    last = requeued_checkpoint(hydra_cfg, run_dir) if cfg.train.resume is None else None
    if last is None:
        return 0
    step = Checkpoint.load(last).step
    rewind_history(run_dir / History.FILE, step)
    cfg.train.resume = str(run_dir)
    before = read_metrics(run_dir) or {}
    log.info("requeued: continuing %s from checkpoints/last.pt (step %d)", run_dir, step)
    return int(before.get("requeues") or 0) + 1


def check_objective(cfg: DictConfig) -> None:
    """Before the run: ``train.objective`` is a metric whose mode rnnexp knows
    (:func:`rnnexp.tasks.base.metric_mode`), and one other than the task's own metric is
    read back from ``history.csv`` (:func:`objective_value`), so that callback must run."""
    name = cfg.train.objective
    if name is None:
        return
    try:
        task = get_class(str(cfg.task._target_))
    except (ImportError, ValueError):  # building the task says what is wrong with it
        return
    metric_mode(task, name)
    if name != task.metric and "history" not in (cfg.get("callbacks") or {}):
        raise RnnexpError(
            f"train.objective={name} is read from {History.FILE}, which ~callbacks.history "
            "switched off; keep callbacks.history, or set train.objective=null"
        )


def objective_value(cfg: DictConfig, data: dict, run_dir: Path) -> float | None:
    """What the task function returns: the best val value over the run of
    ``train.objective`` (null or the task's metric: ``metrics.json``'s ``best.value``;
    another metric: the best of its ``val/<name>`` rows in ``history.csv``, which holds
    every evaluation, also those before a resume). A metric the task does not report is
    one :class:`RnnexpError` line naming those it does."""
    best = data["best"]
    name = cfg.train.objective
    if name is None or name == best["metric"]:
        return best["value"]
    values = []
    with contextlib.suppress(FileNotFoundError), open(run_dir / History.FILE) as handle:
        rows = csv.DictReader(handle)
        values = [float(row["value"]) for row in rows if row["name"] == f"val/{name}"]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        reported = ", ".join(sorted(best.get("val") or {}))
        raise RnnexpError(
            f"train.objective={name} is not a val metric of task {cfg.task.name}; give null "
            f"(its {best['metric']}) or one of: {reported}"
        )
    mode = metric_mode(get_class(str(cfg.task._target_)), name)
    return min(values) if mode == "min" else max(values)


def check_extras(argv: list[str]) -> None:
    """A sweep with a sweeper or launcher plugin that is not installed is one line naming
    the extra that installs it (``hparams_search=...`` picks the Optuna sweeper,
    ``hydra/launcher=slurm`` submitit's launcher)."""
    wants_optuna = any(
        arg.lstrip("+").startswith("hparams_search=") or arg == "hydra/sweeper=optuna"
        for arg in argv
    )
    if wants_optuna and importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise RnnexpError(
            "hparams_search needs the Optuna sweeper (hydra-optuna-sweeper), which is not "
            "installed; pip install 'rnnexp[optuna]'"
        )
    launcher = next((a.partition("=")[2] for a in argv if a.startswith("hydra/launcher=")), "")
    wants_submitit = launcher == "slurm" or launcher.startswith("submitit_")
    if wants_submitit and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        raise RnnexpError(
            f"hydra/launcher={launcher} needs submitit's launcher (hydra-submitit-launcher), "
            "which is not installed; pip install 'rnnexp[slurm]'"
        )


def failed(record: RunRecord, err: RnnexpError, sweeping: bool) -> None:
    """Record ``failed`` with the error and print it in one line; a single run exits 1,
    a sweep's job returns so that the sweep goes on (:mod:`rnnexp.train.sweep`'s exit code)."""
    unrecorded = record.finish(status="failed", error=str(err))
    print_error(err, unrecorded)
    if not sweeping:
        sys.exit(1)


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """An ``OSError`` in a background thread (TensorBoard's event writer on a full disk)
    is reported by the main thread at its next write, in one line; others as usual."""
    if not issubclass(args.exc_type, OSError):
        threading.__excepthook__(args)


def interrupted(record: RunRecord, run_dir: Path, overrides: list[str]) -> None:
    """Record ``interrupted`` and print how to continue from the last complete checkpoint
    (``metrics.json``'s ``steps`` is the step of ``last.pt``)."""
    if (run_dir / "checkpoints" / "last.pt").is_file():
        command = resume_command(overrides, run_dir)
        unrecorded = record.finish(status="interrupted", resume_command=command)
        message = f"interrupted; checkpoints/last.pt holds step {record.data.get('steps')}. "
        message += f"Continue with: {command}{unrecorded}"
    else:
        unrecorded = record.finish(status="interrupted")
        message = "interrupted before the first checkpoint (train.eval_every); nothing to resume"
        message += unrecorded
    console.print(f"[bold yellow]{message}[/]", highlight=False, soft_wrap=True)


# Hydra parses sys.argv (overrides, -m, --cfg, ...) and calls run.
hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)(run)


def main() -> None:
    """What ``rnnexp train`` calls: :func:`check_extras` (one line and exit code 2, the
    extra's name not taken for markup), then Hydra's main around :func:`run`."""
    try:
        check_extras(sys.argv[1:])
    except RnnexpError as err:
        print_error(err)
        sys.exit(2)
    hydra_main()
