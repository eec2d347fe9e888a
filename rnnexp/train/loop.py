"""The one training loop (``rnnexp train`` calls it from :mod:`rnnexp.cli.train`).

Read :func:`train` top to bottom: build everything from the config (the task, the model,
the :mod:`update <rnnexp.train.updates>` that changes its parameters, the
:mod:`callbacks <rnnexp.train.callbacks>` that watch), optionally restore a checkpoint, then
step -> callbacks -> evaluate/checkpoint until ``train.max_steps``, then score the
held-out test set and write ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnexp import __version__
from rnnexp.atomic import deferred_signals, remove_stale
from rnnexp.cells import count_parameters
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.report.load import read_metrics
from rnnexp.tasks.base import Task, TaskSpec, is_better
from rnnexp.train.callbacks import Callbacks, Run
from rnnexp.train.checkpoint import Checkpoint, load_model_state
from rnnexp.train.record import RunRecord, resolve_device
from rnnexp.train.resume import changed_keys, check_same_run
from rnnexp.train.updates import Update, build_update

log = logging.getLogger(__name__)


def state_to(state: Any, device: torch.device) -> Any:
    """A carried hidden state (tensor, tuple of tensors or None) moved to ``device``."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.to(device)
    return type(state)(state_to(s, device) for s in state)


def make_checkpoint(
    cfg: DictConfig,
    step: int,
    update: Update,
    stream: Any,
    task: Task,
    best: dict[str, Any],
    carry: Any = None,
) -> Checkpoint:
    """Everything needed to resume exactly, as tensors and plain Python data.

    ``carry`` is the hidden state that the next batch continues from (truncated BPTT over
    a long stream, e.g. ``task=charlm``), or ``None``. The update gives the ``model``
    weights it is scored with (the averaged ones with ``train.ema_decay``) and its own
    state (:meth:`rnnexp.train.updates.Update.state_dict`: optimizer, schedule, the
    trained weights under an average).
    """
    state = update.state_dict()
    return Checkpoint(
        step=step,
        config=OmegaConf.to_container(cfg, resolve=True),
        model=state.pop("model"),
        update=state,
        task=task.state_dict(),
        stream=stream.state_dict(),
        rng={
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        best=best,
        carry=carry,
        rnnexp_version=__version__,
    )


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
    saved = Checkpoint.load(tc.resume, which="last")
    resumed_from = saved.path
    assert resumed_from is not None
    check_same_run(saved.config, OmegaConf.to_container(cfg, resolve=True), tc.resume)
    try:
        # model, averaged weights, optimizer, ...
        update.load_state_dict({"model": saved.model, **saved.update}, tc.resume)
        stream.load_state_dict(saved.stream)
    except (KeyError, ValueError, RuntimeError) as err:
        raise RnnexpError(
            f"cannot resume from {tc.resume}: its optimizer/schedule/data state does not "
            f"fit this config ({type(err).__name__}: {err}); resume with the same optim, "
            "sched and task settings"
        ) from None
    # set up from its data as the first run was (the same draws, the same word-dropout
    # counts), the task now takes the state it had when the checkpoint was written
    task.load_state_dict(saved.task)
    torch.set_rng_state(saved.rng["torch"])
    if saved.rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved.rng["cuda"])
    step = saved.step
    log.info("resumed from %s at step %d", resumed_from, step)
    if step >= tc.max_steps and not unscored_at_end(resumed_from, step, tc.max_steps):
        raise RnnexpError(
            f"{tc.resume} is already at step {step} >= train.max_steps={tc.max_steps}; "
            "raise train.max_steps to continue"
        )
    record.update(resumed_from={"checkpoint": str(resumed_from), "step": step})
    copy_best(resumed_from, saved, run_dir)
    for name in ("last.pt", "best.pt"):  # what a writer killed there (kill -9) left behind
        remove_stale(resumed_from.with_name(name))
    return step, saved.best, state_to(saved.carry, device)


def start_from(cfg: DictConfig, task: Task, record: RunRecord) -> tuple[Checkpoint, TaskSpec]:
    """``train.init_from``: the checkpoint whose weights a new run starts from (``best.pt``
    of a run folder), and the task's spec. For the same task the source's state
    (vocabularies) is restored (``task.setup(state)``), so the model is built with the same
    sizes; another task reads its data. ``metrics.json`` records the source and the
    settings that differ from it."""
    source = Checkpoint.load(cfg.train.init_from, which="best")
    path = source.path
    saved_task = source.config.get("task")
    same_task = isinstance(saved_task, dict) and saved_task.get("name") == task.name
    changed = changed_keys(source.config, OmegaConf.to_container(cfg, resolve=True))
    changed.pop("train.init_from", None)
    changed.pop("train.resume", None)
    record.update(
        init_from={
            "checkpoint": str(path),
            "step": source.step,
            "changed": {key: list(values) for key, values in changed.items()},
        }
    )
    log.info("starting from the weights of %s (step %d)", path, source.step)
    return source, task.setup(source.task if same_task else None)


def unscored_at_end(checkpoint: Path, step: int, max_steps: int) -> bool:
    """Whether ``checkpoint`` (a run's ``last.pt``) is at ``train.max_steps`` of a run that
    ended before its test score (killed or requeued between its last checkpoint and the
    test): resuming it then only scores it."""
    if step != max_steps:
        return False
    try:
        metrics = read_metrics(checkpoint.parent.parent) or {}
    except ValueError:  # unreadable: nothing says it was scored
        metrics = {}
    return metrics.get("status") != "completed"


def copy_best(resumed_from: Path, saved: Checkpoint, run_dir: Path) -> None:
    """A resumed run starts with the best checkpoint so far: the source run's ``best.pt``
    when it is the one ``saved.best`` describes, or the resumed checkpoint when that is
    the best. (Otherwise, e.g. a bare ``last.pt`` that was not the best, the new run has a
    ``best.pt`` once val improves, and ``rnnexp evaluate`` falls back to ``last.pt``.)"""
    best_step = saved.best["step"]
    target = run_dir / "checkpoints" / "best.pt"
    if saved.step == best_step:
        saved.save(target)
        return
    candidate = resumed_from.with_name("best.pt")
    if candidate.is_file() and (best := Checkpoint.load(candidate)).step == best_step:
        best.save(target)


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
        load_model_state(model, source.model, tc.init_from)
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
    # the threads set above (train.num_threads) or by the command (parallel jobs)
    record.update(num_params=num_params, device=str(device), torch_threads=torch.get_num_threads())
    log.info("%s on %s: %d parameters, device %s", cfg.cell.name, task.name, num_params, device)
    max_steps = update.total_steps(tc.max_steps)  # optim=ridge: one closed-form step
    scored = update.scored  # the weights evaluated: the moving average with train.ema_decay
    train_time, steps_timed = 0.0, 0
    model.train()
    watched = Run(cfg, run_dir, task, model, scored, device, record, step, max_steps, best=best)
    with callbacks.running(watched):
        while step < max_steps and not watched.stop:  # stop: e.g. resumed at its target
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
                saved = make_checkpoint(cfg, step, update, stream, task, best, carry=state)
                with deferred_signals():  # metrics.json moves with last.pt: a signal waits
                    saved.save(run_dir / "checkpoints" / "last.pt")
                    if best["step"] == step:
                        saved.save(run_dir / "checkpoints" / "best.pt")
                    record.update(steps=step, best=best)
                if watched.stop:  # a callback ended the run (train.stop_at, train.patience)
                    break

        callbacks.on_test_start(step)  # e.g. calibration: after the last step, before test
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
