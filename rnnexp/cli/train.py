"""``rnnexp train``: Hydra's task function around the training loop.

:data:`main` is ``hydra.main`` around :func:`run`: Hydra parses the command line
(overrides, ``-m``, ``--cfg``, ...) and calls :func:`run` once per run or sweep job, which
checks the config, records the run (``metrics.json``), calls
:func:`rnnexp.train.loop.train` and ends in one documented way: completed, failed with one
line, or interrupted with the command that continues.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console

from rnnexp import __version__
from rnnexp.config import CONFIG_NAME, CONFIG_PATH
from rnnexp.errors import RnnexpError
from rnnexp.schema import check_config
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord, git_commit
from rnnexp.train.resume import resume_command
from rnnexp.train.sweep import JobSignals, exit_code, note_job

log = logging.getLogger(__name__)
console = Console(stderr=True)


def run(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run (or one job of a sweep) in its own folder.

    It is a plain module-level function, and :data:`main` wraps it with ``hydra.main``:
    launchers that run jobs in other processes (joblib, submitit) pickle the task
    function by reference, which needs the name ``rnnexp.cli.train.run`` to resolve to it.

    Returns the best validation value of the task's metric, for sweepers like Optuna.
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


def run_job(cfg: DictConfig) -> float | None:
    """:func:`run`'s body: check the config, record, train, and end in one documented way
    (completed; failed with one line; interrupted with the command that continues)."""
    hydra_cfg = HydraConfig.get()
    note_job(hydra_cfg)  # a sweep's job: the command counts its sweep's jobs at the end
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_config(cfg)  # a bad key or value (rnnexp.schema): before anything is built
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
            torch_threads=torch.get_num_threads(),
            command=" ".join(sys.argv),
            **git_commit(),
        )
    except RnnexpError as err:
        return failed(RunRecord(run_dir, write=False, overrides=overrides), err, sweeping)
    # SIGTERM (kill, SLURM) and Ctrl-C raise Interrupted: the run records `interrupted`
    signals = JobSignals.start(run_dir)
    try:
        data = train(cfg, run_dir, record)
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
    except Exception as err:
        record.update(status="failed", error=f"{type(err).__name__}: {err}")
        if sweeping:  # a bug: its traceback in the job's log
            log.exception("job %s failed; the sweep goes on", hydra_cfg.job.num)
            return None
        raise
    finally:
        if signals is not None:  # None off the main thread
            signals.restore()
    return data["best"]["value"]


def failed(record: RunRecord, err: RnnexpError, sweeping: bool) -> None:
    """Record ``failed`` with the error and print it in one line; a single run exits 1,
    a sweep's job returns so that the sweep goes on (:mod:`rnnexp.train.sweep`'s exit code)."""
    unrecorded = record.finish(status="failed", error=str(err))
    console.print(f"[bold red]error:[/] {err}{unrecorded}", highlight=False, soft_wrap=True)
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


# `rnnexp train` calls this: Hydra parses sys.argv (overrides, -m, --cfg, ...) and calls run.
main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)(run)
