"""``rnnexp train``: the Hydra entry point and the one training loop.

Read :func:`train` top to bottom: build everything from the config (the task, the model,
the :mod:`update <rnnexp.train.updates>` that changes its parameters, the
:mod:`callbacks <rnnexp.train.callbacks>` that watch), optionally restore a checkpoint, then
step -> callbacks -> evaluate/checkpoint until ``train.max_steps``, then score the
held-out test set and write ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from rnnexp import __version__
from rnnexp.atomic import deferred_signals, remove_stale
from rnnexp.cells import count_parameters
from rnnexp.config import CONFIG_NAME, CONFIG_PATH, build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.schema import check_config
from rnnexp.tasks.base import Task, TaskSpec, is_better
from rnnexp.train import checkpoint
from rnnexp.train.callbacks import Callbacks, Run
from rnnexp.train.record import RunRecord, git_commit, resolve_device
from rnnexp.train.resume import changed_keys, check_same_run, resume_command
from rnnexp.train.sweep import JobSignals, exit_code, note_job
from rnnexp.train.updates import Update, build_update

log = logging.getLogger(__name__)
console = Console(stderr=True)


def state_to(state: Any, device: torch.device) -> Any:
    """A carried hidden state (tensor, tuple of tensors or None) moved to ``device``."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.to(device)
    return type(state)(state_to(s, device) for s in state)


def reached(value: float, target: float | None, mode: str) -> bool:
    """Whether ``value`` is at ``target`` or beyond it (``None``: never)."""
    return target is not None and (value <= target if mode == "min" else value >= target)


def make_checkpoint(
    cfg: DictConfig,
    step: int,
    update: Update,
    stream: Any,
    task: Task,
    best: dict[str, Any],
    carry: Any = None,
) -> dict[str, Any]:
    """Everything needed to resume exactly, as tensors and plain Python data.

    ``carry`` is the hidden state that the next batch continues from (truncated BPTT over
    a long stream, e.g. ``task=charlm``), or ``None``. The update gives ``model``,
    ``ema``, ``optimizer`` and ``scheduler`` (:meth:`rnnexp.train.updates.Update.state_dict`):
    with ``train.ema_decay``, ``model`` holds the averaged weights (those that evaluate,
    sample and predict use) and ``ema`` the trained weights and the number of averaged
    steps, for resuming.
    """
    return {
        "format": checkpoint.FORMAT,
        "rnnexp_version": __version__,
        "step": step,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **update.state_dict(),
        "stream": stream.state_dict(),
        "task": task.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "best": best,
        "carry": carry,
    }


def calibrate(
    run_dir: Path,
    task: Task,
    scored: nn.Module,
    device: torch.device,
    step: int,
    record: RunRecord,
    writer: SummaryWriter,
) -> None:
    """``task.calibrate`` (charlm's temperature): fit it on val, record it with the
    uncalibrated test score, add it to the checkpoints and apply it for the test score."""
    calibration = task.calibrate(scored, device)
    if calibration is None:
        return
    record.update(final_uncalibrated=task.evaluate(scored, "test", device))
    calibrate_checkpoints(run_dir, task, scored, device, step, calibration)
    scored.divide_logits(calibration["temperature"])  # for the test score
    record.update(calibration=calibration)
    writer.add_scalar("calibration/temperature", calibration["temperature"], step)


def calibrate_checkpoints(
    run_dir: Path,
    task: Task,
    model: nn.Module,
    device: torch.device,
    step: int,
    calibration: dict[str, float],
) -> None:
    """Add ``calibration`` (fit on ``model``, the weights of ``step``) to ``last.pt`` and
    ``best.pt``; a ``best.pt`` from an earlier step gets a temperature fit on its own
    weights. The weights stay as trained, so ``train.resume`` continues exactly;
    :func:`rnnexp.cli.evaluate.restore` folds the temperature into the head."""
    for name in ("last.pt", "best.pt"):
        path = run_dir / "checkpoints" / name
        if not path.is_file():  # a resumed run whose val never improved has no best.pt
            continue
        payload = checkpoint.load(path)
        if payload["step"] == step:
            payload["calibration"] = calibration
        else:
            earlier = copy.deepcopy(model)
            checkpoint.load_model_state(earlier, payload["model"], path)
            payload["calibration"] = task.calibrate(earlier, device)
        checkpoint.save(payload, path)


def resume(
    cfg: DictConfig,
    run_dir: Path,
    record: RunRecord,
    task: Task,
    update: Update,
    stream: Any,
    device: torch.device,
) -> tuple[int, dict[str, Any], Any]:
    """``train.resume``: restore every piece of state from the run's ``last.pt`` so that
    the continued loss curve is the uninterrupted one; returns the step, the best
    evaluation so far and the carried hidden state. The config must be the run's own
    (:func:`rnnexp.train.resume.check_same_run`); the new run folder gets its ``best.pt``."""
    tc = cfg.train
    resumed_from = checkpoint.resolve(tc.resume, which="last")
    saved = checkpoint.load(resumed_from)
    check_same_run(saved["config"], OmegaConf.to_container(cfg, resolve=True), tc.resume)
    try:
        update.load_state_dict(saved, tc.resume)  # model, averaged weights, optimizer, ...
        stream.load_state_dict(saved["stream"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise RnnexpError(
            f"cannot resume from {tc.resume}: its optimizer/schedule/data state does not "
            f"fit this config ({type(err).__name__}: {err}); resume with the same optim, "
            "sched and task settings"
        ) from None
    # set up from its data as the first run was (the same draws, the same word-dropout
    # counts), the task now takes the state it had when the checkpoint was written
    task.load_state_dict(saved["task"])
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    step = saved["step"]
    log.info("resumed from %s at step %d", resumed_from, step)
    if step >= tc.max_steps:
        raise RnnexpError(
            f"{tc.resume} is already at step {step} >= train.max_steps={tc.max_steps}; "
            "raise train.max_steps to continue"
        )
    record.update(resumed_from={"checkpoint": str(resumed_from), "step": step})
    copy_best(resumed_from, saved, run_dir)
    for name in ("last.pt", "best.pt"):  # what a writer killed there (kill -9) left behind
        remove_stale(resumed_from.with_name(name))
    return step, saved["best"], state_to(saved.get("carry"), device)


def start_from(cfg: DictConfig, task: Task, record: RunRecord) -> tuple[dict[str, Any], TaskSpec]:
    """``train.init_from``: the checkpoint whose weights a new run starts from (``best.pt``
    of a run folder), and the task's spec. For the same task the source's state
    (vocabularies) is restored (``task.setup(state)``), so the model is built with the same
    sizes; another task reads its data. ``metrics.json`` records the source and the
    settings that differ from it."""
    path = checkpoint.resolve(cfg.train.init_from, which="best")
    source = checkpoint.load(path)
    saved_task = source["config"].get("task") if isinstance(source["config"], dict) else None
    same_task = isinstance(saved_task, dict) and saved_task.get("name") == task.name
    changed = changed_keys(source["config"], OmegaConf.to_container(cfg, resolve=True))
    changed.pop("train.init_from", None)
    changed.pop("train.resume", None)
    record.update(
        init_from={
            "checkpoint": str(path),
            "step": source["step"],
            "changed": {key: list(values) for key, values in changed.items()},
        }
    )
    log.info("starting from the weights of %s (step %d)", path, source["step"])
    return source, task.setup(source["task"] if same_task else None)


def copy_best(resumed_from: Path, saved: dict[str, Any], run_dir: Path) -> None:
    """A resumed run starts with the best checkpoint so far: the source run's ``best.pt``
    when it is the one ``saved["best"]`` describes, or the resumed checkpoint when that is
    the best. (Otherwise, e.g. a bare ``last.pt`` that was not the best, the new run has a
    ``best.pt`` once val improves, and ``rnnexp evaluate`` falls back to ``last.pt``.)"""
    best_step = saved["best"]["step"]
    target = run_dir / "checkpoints" / "best.pt"
    if saved["step"] == best_step:
        checkpoint.save(saved, target)
        return
    candidate = resumed_from.with_name("best.pt")
    if candidate.is_file() and (payload := checkpoint.load(candidate))["step"] == best_step:
        checkpoint.save(payload, target)


def train(cfg: DictConfig, run_dir: Path, record: RunRecord) -> dict[str, Any]:
    """Train the configured model in ``run_dir``; returns the final ``metrics.json`` data."""
    started = time.perf_counter()
    tc = cfg.train
    if tc.resume and tc.get("init_from"):
        raise RnnexpError(
            "train.resume continues a run and train.init_from starts a new one from its "
            "weights; give only one of them"
        )
    device = resolve_device(tc.device)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)  # model init and dropout; data have their own generator

    # --- build: task -> model -> data -> update (optimizer, schedule, ...) -> callbacks --
    task: Task = build(cfg.task, "task")
    source = None  # train.init_from: the checkpoint a new run starts from
    if tc.get("init_from"):
        source, spec = start_from(cfg, task, record)
    else:
        spec = task.setup()  # reads the data (train.resume restores the task's state below)
    model = build_model(cfg, spec).to(device)
    if source is not None:  # train.init_from: a new run from those weights
        checkpoint.load_model_state(model, source["model"], tc.init_from)
    stream = task.train_stream(tc.batch_size, tc.seed)
    update = build_update(cfg, model, task, stream, device)
    callbacks = Callbacks(cfg)
    # best: the evaluation with the best value of the task's metric on the val split
    step, best = 0, {"step": None, "metric": task.metric, "value": None, "val": None}
    state = None  # the hidden state carried between batches (Batch.reset_state=False)

    # --- resume: every piece of state, so the continued loss curve is the same ----------
    if tc.resume:
        step, best, state = resume(cfg, run_dir, record, task, update, stream, device)

    num_params = count_parameters(model)
    record.update(num_params=num_params, device=str(device))
    log.info("%s on %s: %d parameters, device %s", cfg.cell.name, task.name, num_params, device)
    max_steps = update.total_steps(tc.max_steps)  # optim=ridge: one closed-form step
    scored = update.scored  # the weights evaluated: the moving average with train.ema_decay
    train_time, steps_timed = 0.0, 0
    model.train()
    watched = Run(cfg, run_dir, task, model, scored, device, record, step, max_steps)
    with callbacks.running(watched):
        while step < max_steps:
            step += 1
            tick = time.perf_counter()
            batch = next(stream).to(device)
            result = update.step(batch, state, step)  # forward, backward, optimizer step
            state = result.state
            callbacks.on_step_end(step, result)
            train_time += time.perf_counter() - tick  # the whole step, logging included
            steps_timed += 1

            if step % tc.eval_every == 0 or step == max_steps:
                val = task.evaluate(scored, "val", device)
                callbacks.on_evaluate(step, "val", val)
                if is_better(val[task.metric], best["value"], task.metric_mode):
                    best = {"step": step, "metric": task.metric, "value": val[task.metric],
                            "val": val}  # fmt: skip
                payload = make_checkpoint(cfg, step, update, stream, task, best, carry=state)
                with deferred_signals():  # metrics.json moves with last.pt: a signal waits
                    checkpoint.save(payload, run_dir / "checkpoints" / "last.pt")
                    if best["step"] == step:
                        checkpoint.save(payload, run_dir / "checkpoints" / "best.pt")
                    record.update(steps=step, best=best)
                stop_at = tc.get("stop_at")
                if best["step"] == step and reached(best["value"], stop_at, task.metric_mode):
                    log.info("val %s=%.4g reached train.stop_at=%g at step %d: stopping",
                             task.metric, best["value"], stop_at, step)  # fmt: skip
                    record.update(stopped_at_target=True)
                    break

        calibrate(run_dir, task, scored, device, step, record, callbacks.writer)
        final = task.evaluate(scored, "test", device)
        callbacks.on_evaluate(step, "test", final)
    record.update(
        status="completed",
        final=final,
        best=best,
        steps=step,
        skipped_steps=update.skipped,
        wall_time_s=round(time.perf_counter() - started, 3),
        train_time_s=round(train_time, 3),
        step_time_ms=round(1000 * train_time / max(steps_timed, 1), 4),
    )
    return record.data


def run(cfg: DictConfig) -> float | None:
    """Hydra's task function: one run (or one job of a sweep) in its own folder.

    It is a plain module-level function, and :data:`main` wraps it with ``hydra.main``:
    launchers that run jobs in other processes (joblib, submitit) pickle the task
    function by reference, which needs the name ``rnnexp.train.loop.run`` to resolve to it.

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
