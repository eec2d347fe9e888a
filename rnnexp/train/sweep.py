"""Stopping and ending ``rnnexp train`` (a run or a sweep, ``-m``) in one documented way.

**Signals.** SIGTERM (``kill``, a SLURM time limit) and SIGINT (Ctrl-C) stop every job of a
sweep, whichever launcher runs them, and each job that was running records
``interrupted`` in its ``metrics.json``. A job in the command's own process (a single run,
the basic launcher) gets the signal as :class:`Interrupted` from :class:`JobSignals`. Jobs
in worker processes (``hydra/launcher=joblib``: loky workers) are separate processes that
a signal to the command does not reach, so the command (:func:`stop_jobs_on_signals`)
passes SIGTERM on to each worker that is running a job, waits until those jobs have
recorded ``interrupted``, and only then stops, letting the launcher end its workers. Each
job registers its process in a folder named by ``$RNNEXP_SWEEP_JOBS`` while it runs, which
is how the command knows which workers are busy: an idle loky worker killed by a signal
would make loky kill the busy ones before they could record anything.

**Exit code** (:func:`exit_code`, :func:`sweep_exit_code`): a sweep runs every job, whatever
happens to the others; a job that fails records ``status: failed`` and its ``error``.
When all jobs have run, the command exits 0 if every job of the sweep (as ``rnnexp
report`` counts them, from ``multirun.yaml``) completed and 1 if any did not; stopped by
signal N it exits 128 + N (130 for Ctrl-C, 143 for SIGTERM).

**Requeue** (``hydra/launcher=slurm``, or any submitit launcher): a job stopped by its time
limit or by preemption is requeued by submitit (the launcher's ``checkpoint()`` resubmits
the same call), and SLURM requeues a preempted job by itself. The job then starts again in
its own folder, and :func:`requeued_checkpoint` finds the ``checkpoints/last.pt`` that its
unfinished run left there: the job continues from it (``train.resume`` set to the folder),
``history.csv`` drops the rows logged after that checkpoint (:func:`rewind_history`) and
TensorBoard those events, so what is recorded is one run, as if it had not been stopped.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from rnnexp.atomic import atomic_write
from rnnexp.report.load import COMPLETED, METRICS_FILE, job_dirname, load_sweep, read_metrics

JOBS_ENV = "RNNEXP_SWEEP_JOBS"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 60.0
"""How long the command waits for its workers' jobs to record ``interrupted``."""
REPEAT_S = 3.0
"""A repeat of a stop signal sooner than this after the one that raised is the same
request (a terminal's Ctrl-C reaches every process of a sweep, and the command passes it
on too): ignored. Later, the interrupt is raised again."""
RUNNING, SWEEPS = "running", "sweeps"  # subfolders of $RNNEXP_SWEEP_JOBS
SUBMITIT = "hydra_plugins.hydra_submitit_launcher."  # the launchers that requeue jobs
UNFINISHED = ("running", "interrupted")  # a run that a requeued job continues

# hydra.sweep.subdir (conf/config.yaml), ${rnnexp.job_dir:${hydra.job.num},<override_dirname>},
# names each job's folder (0_cell=gru,optim.lr=0.001). Hydra resolves it in the process that
# runs the job (the command's, a joblib worker, a submitit job), each of which imports this
# module with rnnexp.cli.train, the task function.
OmegaConf.register_new_resolver("rnnexp.job_dir", job_dirname, replace=True)


class Interrupted(KeyboardInterrupt):
    """Stopped by signal ``signum``: a ``KeyboardInterrupt``, so it ends a run or a sweep
    as Ctrl-C does, and says which signal (the exit code is 128 + ``signum``)."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        # "signal N": the words rnnexp.cli.train.run tells a SIGTERM by
        super().__init__(f"signal {signum} ({name})" if signum != signal.SIGINT else "Ctrl-C")
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal that stopped the command: 143 for SIGTERM, 130 for Ctrl-C."""
    signum = interrupt.signum if isinstance(interrupt, Interrupted) else signal.SIGINT
    return 128 + signum


class Stop:
    """SIGTERM and SIGINT in the main thread, from :meth:`install` to :meth:`restore`: a
    signal raises :class:`Interrupted` (after :meth:`before_raising`).

    A repeat within :data:`REPEAT_S` seconds of the one that raised is ignored, so that it
    cannot break the ``interrupted`` record being written. A later one raises again: an
    exception raised by a signal handler can land in a weakref callback or a ``__del__``,
    where Python prints it and drops it, and the job goes on (the command repeats SIGTERM
    to its workers' jobs until they end, :func:`stop_workers`).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.raised_at = -math.inf
        self.previous: dict[int, Any] = {}

    def install(self) -> bool:
        """Set the handlers; ``False`` off the main thread, where Python cannot."""
        try:
            for signum in STOP_SIGNALS:
                self.previous[signum] = signal.signal(signum, self.handle)
        except ValueError:  # not the main thread
            return False
        return True

    def before_raising(self) -> None:
        """What to do before raising (the command: stop the workers' jobs)."""

    def handle(self, signum: int, frame: Any) -> None:
        if time.monotonic() - self.raised_at < REPEAT_S:
            return  # a repeat: the same request
        self.signum, self.raised_at = signum, math.inf  # repeats meanwhile are ignored
        self.before_raising()
        self.raised_at = time.monotonic()
        raise Interrupted(signum)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, handler in self.previous.items():
            if handler is not None:  # None: not set from Python, cannot be put back
                signal.signal(signum, handler)


class JobSignals(Stop):
    """:class:`Stop` for one job (a run, or a job of a sweep), from its start to its end.

    While the job runs, its process is registered for the command
    (:func:`stop_jobs_on_signals`). After :meth:`restore`, a worker process whose job was
    interrupted holds still until the command ends it, instead of starting the next job.
    """

    registration: Path | None = None

    @classmethod
    def start(cls, run_dir: Path | None = None) -> JobSignals | None:
        """Install for a job that starts now in ``run_dir``; ``None`` off the main thread."""
        job = cls()
        if not job.install():
            return None
        job.registration = _register(RUNNING, "" if run_dir is None else str(run_dir))
        return job

    def restore(self) -> None:
        if self.registration is not None:
            self.registration.unlink(missing_ok=True)
        super().restore()
        if self.signum is not None and self.registration is not None and _in_worker():
            time.sleep(GRACE_S + 30)  # the command ends this worker once every job recorded


class CommandSignals(Stop):
    """:class:`Stop` for the command: first stop the jobs of its worker processes."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def before_raising(self) -> None:
        stop_workers(self.folder)


def _in_worker() -> bool:
    """Whether this is a launcher's worker process (loky), not the command's own."""
    return multiprocessing.parent_process() is not None


def _register(kind: str, text: str) -> Path | None:
    """``$RNNEXP_SWEEP_JOBS/<kind>/<pid>.<time>`` holding ``text``: ``running/`` says that
    this process runs a job (for signals), ``sweeps/`` names a job's sweep folder (for the
    exit code). ``None`` outside ``rnnexp train``."""
    folder = os.environ.get(JOBS_ENV)
    if not folder:
        return None
    path = Path(folder) / kind / f"{os.getpid()}.{time.time_ns()}"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:  # the command is gone, or its folder: nothing to report to
        return None
    return path


def note_job(hydra_cfg: DictConfig) -> None:
    """At the start of each job (``rnnexp.cli.train.run``): tell the command which sweep the
    job belongs to, so that it can count the sweep's jobs at the end."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        _register(SWEEPS, str(Path(hydra_cfg.sweep.dir).resolve()))


def _running_workers(folder: Path) -> dict[str, int]:
    """``token -> pid`` of the jobs running in this process's worker processes."""
    children = {child.pid for child in multiprocessing.active_children()}
    running = {}
    for path in (folder / RUNNING).iterdir():
        pid = int(path.name.partition(".")[0])
        if pid in children:  # not this process (its own job handles the signal itself)
            running[path.name] = pid
    return running


def stop_workers(folder: Path, grace: float = GRACE_S) -> None:
    """Send SIGTERM to every worker process running a job (and to each that starts one
    meanwhile; again every :data:`REPEAT_S` seconds to a job that goes on), and wait until
    those jobs have recorded ``interrupted`` and ended, at most ``grace`` seconds."""
    signaled: dict[str, float] = {}
    deadline = time.monotonic() + grace
    while (running := _running_workers(folder)) and time.monotonic() < deadline:
        for token, pid in running.items():
            if time.monotonic() - signaled.get(token, -math.inf) > REPEAT_S + 1:
                signaled[token] = time.monotonic()
                with suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(pid, signal.SIGTERM)
        time.sleep(0.05)


def record_lost_jobs(folder: Path) -> list[Path]:
    """After the workers are gone: each job still registered as running, whose worker
    ended before its job could record anything (loky kills every worker when one dies,
    e.g. an idle one hit by a terminal's Ctrl-C), gets ``status: interrupted`` in its
    ``metrics.json``. Returns their folders."""
    from rnnexp.atomic import write_json

    alive = {child.pid for child in multiprocessing.active_children()} | {os.getpid()}
    fixed = []
    for path in (folder / RUNNING).iterdir():
        run_dir = path.read_text(encoding="utf-8")
        metrics = Path(run_dir) / METRICS_FILE
        if not run_dir or int(path.name.partition(".")[0]) in alive:
            continue
        try:
            data = read_metrics(metrics)
        except ValueError:  # unreadable, or not a JSON object
            continue
        if data is not None and data.get("status") == "running":
            data.update(status="interrupted", note="its worker process ended before it recorded")
            write_json(metrics, data)
            fixed.append(metrics.parent)
    return fixed


@contextmanager
def stop_jobs_on_signals() -> Iterator[Path]:
    """Around the whole command (``rnnexp train``, with or without ``-m``): on SIGTERM or
    SIGINT, stop the jobs in worker processes (:func:`stop_workers`), then raise
    :class:`Interrupted` here. Yields the folder where jobs register
    (``$RNNEXP_SWEEP_JOBS``, inherited by the workers); it is removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="rnnexp-jobs-"))
    (folder / RUNNING).mkdir()
    (folder / SWEEPS).mkdir()
    before = os.environ.get(JOBS_ENV)
    os.environ[JOBS_ENV] = str(folder)
    stop = CommandSignals(folder)
    stop.install()
    try:
        yield folder
    except KeyboardInterrupt:
        record_lost_jobs(folder)
        raise
    finally:
        stop.restore()
        if before is None:
            os.environ.pop(JOBS_ENV, None)
        else:
            os.environ[JOBS_ENV] = before
        shutil.rmtree(folder, ignore_errors=True)


def sweep_exit_code(folder: Path, console: Console) -> int:
    """After ``rnnexp train -m`` ran all its jobs: 0 if every job of its sweep completed,
    else 1, with one line for the sweep and one per job that did not complete. 0 when no
    job of a sweep started (a single run, ``--cfg``, ``--help``)."""
    sweeps = sorted({Path(p.read_text(encoding="utf-8")) for p in (folder / SWEEPS).iterdir()})
    code = 0
    for sweep in sweeps:
        jobs = load_sweep(sweep)
        bad = [job for job in jobs if job.state != COMPLETED]
        line = f"sweep {sweep}: {len(jobs) - len(bad)} of {len(jobs)} jobs completed"
        if bad:
            code = 1
            line += f", {len(bad)} did not (exit code 1)"
        console.print(f"{line}; summary: rnnexp report {sweep}", highlight=False, soft_wrap=True)
        for job in bad:
            console.print(
                f"  job {job.name}: {job.status}: {job.error or ''}".rstrip(": "),
                style="red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    return code


def requeued_checkpoint(hydra_cfg: DictConfig, run_dir: Path) -> Path | None:
    """The ``checkpoints/last.pt`` that a submitit job, started again in its own folder
    after a time limit or a preemption, continues from: when the launcher is submitit's
    and the folder holds a run that did not finish (``metrics.json`` says ``running``:
    killed, or ``interrupted``) and a ``last.pt``. ``None`` for a job's first start, for a
    run that had no checkpoint yet (it starts afresh) or that completed or failed."""
    launcher = hydra_cfg.get("launcher") or {}
    if hydra_cfg.mode != RunMode.MULTIRUN or not str(launcher.get("_target_")).startswith(SUBMITIT):
        return None
    last = Path(run_dir) / "checkpoints" / "last.pt"
    try:
        data = read_metrics(run_dir)
    except ValueError:  # not readable: nothing says the run there is unfinished
        return None
    if data is None or data.get("status") not in UNFINISHED or not last.is_file():
        return None
    return last


def rewind_history(path: Path, step: int) -> None:
    """Keep only the rows of a run's ``history.csv`` (``step,name,value``) up to ``step``:
    those logged before the checkpoint a requeued job continues from (it logs the later
    ones again). No file: nothing to do."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= step]
    text = io.StringIO(newline="")
    csv.writer(text).writerows(kept)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode("utf-8")))
