"""The Callback seam: everything that watches a run without changing it.

``conf/callbacks/default.yaml`` lists the callbacks a run builds (lightning-hydra-template
style: one ``_target_`` per entry, in order); each can be switched off from the command
line (``~callbacks.histograms``). The loop (:func:`rnnexp.train.loop.train`) calls, on every
callback in that order:

- ``on_train_start(run)``: once, with the :class:`Run` (config, folder, task, model, the
  scored weights, the TensorBoard writer, the record);
- ``on_step_end(step, result)``: after each update, with its
  :class:`rnnexp.train.updates.StepResult`;
- ``on_evaluate(step, split, metrics)``: after each evaluation on ``val`` and after the
  final one on ``test``;
- ``on_test_start(step)``: once, after the last step and before the final ``test`` score
  (e.g. :class:`Calibration`);
- ``on_train_end()``: once, also when the run fails.

A new callback is a class here (or anywhere importable) with those methods, an entry in
``conf/callbacks/default.yaml`` and a test; the loop does not change.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from rnnexp import plots
from rnnexp.config import build
from rnnexp.tasks.base import Calibrates, Task, is_better
from rnnexp.train import diagnostics
from rnnexp.train.checkpoint import Checkpoint, load_model_state
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import StepResult

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What callbacks may look at. ``model`` holds the trained weights, ``scored`` those
    that are evaluated (the moving average with ``train.ema_decay``, else ``model``)."""

    cfg: DictConfig
    run_dir: Path
    task: Task
    model: nn.Module
    scored: nn.Module
    device: torch.device
    record: RunRecord
    start_step: int  # 0, or the step a resumed run continues from
    max_steps: int
    writer: SummaryWriter | None = None  # set by Callbacks.running: TensorBoard's


class Callback:
    """Base class: every hook does nothing; ``on_train_start`` keeps the :class:`Run`."""

    run: Run

    def on_train_start(self, run: Run) -> None:
        self.run = run

    def on_step_end(self, step: int, result: StepResult) -> None:
        pass

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        pass

    def on_test_start(self, step: int) -> None:
        pass

    def on_train_end(self) -> None:
        pass


def train_scalars(run: Run, step: int, result: StepResult) -> dict[str, float]:
    """The training scalars logged at ``step`` (every ``train.log_every`` steps and the
    last; none for a skipped step): ``train/loss``, ``train/grad_norm`` (not for the closed
    form) and the update's own (``train/lr``, ``train/omega``)."""
    if result.skipped or not (step % run.cfg.train.log_every == 0 or step == run.max_steps):
        return {}
    scalars = {"loss": result.loss, "grad_norm": result.grad_norm, **result.scalars}
    return {f"train/{name}": value for name, value in scalars.items() if value is not None}


class TensorBoardScalars(Callback):
    """``train/loss``, ``train/grad_norm`` and the update's scalars (``train/lr``,
    ``train/omega``) every ``train.log_every`` steps and at the last step; each
    evaluation's metrics as ``val/<metric>`` and ``test/<metric>``."""

    def on_step_end(self, step: int, result: StepResult) -> None:
        for name, value in train_scalars(self.run, step, result).items():
            self.run.writer.add_scalar(name, value, step)

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.run.writer.add_scalar(f"{split}/{key}", value, step)


class TaskFigures(Callback):
    """The task's figures (TensorBoard and ``plots/<name>.png``) and texts (e.g. samples
    of a language model) of the scored weights at each evaluation."""

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        for name, fig in run.task.figures(run.scored, run.device).items():
            plots.save_png(fig, run.run_dir / "plots" / f"{name}.png")
            run.writer.add_figure(name, fig, step)  # closes the figure
        for name, text in run.task.texts(run.scored, run.device).items():
            run.writer.add_text(name, text, step)


class Histograms(Callback):
    """Histograms of the trained weights and their latest gradients at each val
    evaluation (``train.histograms``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled or split != "val":
            return
        for name, param in self.run.model.named_parameters():
            self.run.writer.add_histogram(f"weights/{name}", param.detach(), step)
            if param.grad is not None:
                self.run.writer.add_histogram(f"grads/{name}", param.grad, step)


class RawScores(Callback):
    """With ``train.ema_decay``: the trained (not averaged) weights' scores beside the
    average's, as ``val_raw/<metric>`` and ``metrics.json``'s ``final_raw``."""

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        if run.scored is run.model:  # no average: the scores are the raw ones
            return
        raw = run.task.evaluate(run.model, split, run.device)
        if split == "test":
            run.record.update(final_raw=raw)
            return
        for key, value in raw.items():
            run.writer.add_scalar(f"{split}_raw/{key}", value, step)


class GradientFlow(Callback):
    """``||∂L/∂h_t||`` against ``t`` and the recurrent matrix's spectrum on the task's
    diagnostics batch at each val evaluation (:mod:`rnnexp.train.diagnostics`).

    Args:
        enabled: ``train.diagnostics``; ``None``: the task's default.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = enabled

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        enabled = run.task.diagnostics if self.enabled is None else self.enabled
        if not enabled or split != "val" or (batch := run.task.diagnostics_batch()) is None:
            return
        title = f"{run.cfg.cell.name} on {run.task.name}, step {step}"
        stats, fig = diagnostics.diagnose(run.model, run.task, batch, run.device, title)
        for key, value in stats.items():
            run.writer.add_scalar(f"diagnostics/{key}", value, step)
        plots.save_png(fig, run.run_dir / "plots" / "gradient_flow.png")
        run.writer.add_figure("gradient_flow", fig, step)


class ProgressBar(Callback):
    """A rich progress bar on stderr: steps, smoothed loss, best val value so far."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.smooth, self.best = math.nan, None

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4g}  best val {task.fields[metric]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not self.enabled,
        )
        self.progress.start()
        self.bar = self.progress.add_task(
            f"{run.task.name}/{run.cfg.cell.name}", total=run.max_steps,
            completed=run.start_step, loss=math.nan, metric="-",
        )  # fmt: skip

    def on_step_end(self, step: int, result: StepResult) -> None:
        if not result.skipped:
            loss, smooth = result.loss, self.smooth
            self.smooth = loss if math.isnan(smooth) else 0.9 * smooth + 0.1 * loss
        self.progress.update(self.bar, advance=1, loss=self.smooth)

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        task = self.run.task
        if split != "val":
            return
        value, best = metrics[task.metric], self.best
        if is_better(value, best, task.metric_mode):
            self.best = value
        self.progress.update(self.bar, metric=f"{self.best:.4g}")

    def on_train_end(self) -> None:
        self.progress.stop()


class History(Callback):
    """Every scalar that :class:`TensorBoardScalars` logs, also as ``history.csv`` beside
    ``metrics.json`` (columns ``step,name,value``; names as in TensorBoard: ``train/loss``,
    ``val/nrmse``, ...), for people and programs that do not read event files. Rows are
    appended and flushed as they come, so the file shows a run that is still going."""

    FILE = "history.csv"

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        path = run.run_dir / self.FILE
        fresh = not path.exists()
        self.handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (until the end)
        self.rows = csv.writer(self.handle)
        if fresh:
            self.rows.writerow(["step", "name", "value"])

    def on_step_end(self, step: int, result: StepResult) -> None:
        self.write(step, train_scalars(self.run, step, result))

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        self.write(step, {f"{split}/{key}": value for key, value in metrics.items()})

    def write(self, step: int, values: dict[str, float]) -> None:
        if values:
            self.rows.writerows([step, name, f"{value:.8g}"] for name, value in values.items())
            self.handle.flush()

    def on_train_end(self) -> None:
        self.handle.close()


class LogLines(Callback):
    """Log lines people can follow (in the console and the run's ``train.log``, which a
    SLURM ``.out`` file shows as it grows): the run folder at the start, one line per
    evaluation with the val metrics and the best of this run's evaluations so far, and once
    the run completes its test scores and where to look (``metrics.json``, ``tensorboard
    --logdir``)."""

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        self.best: tuple[float, int] | None = None  # (value, step): of this run's evaluations
        log.info("run folder: %s", run.run_dir)

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        task = self.run.task
        shown = ", ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        if split != "val":  # the final test score: the run is complete
            log.info("%s: %s", split, shown)
            folder = self.run.run_dir
            log.info("results in %s (metrics.json); curves: tensorboard --logdir %s", folder,
                     folder)  # fmt: skip
            return
        value = metrics[task.metric]
        if is_better(value, None if self.best is None else self.best[0], task.metric_mode):
            self.best = (value, step)
        log.info("step %d/%d: val %s (best %s=%.4g at step %d)", step, self.run.max_steps,
                 shown, task.metric, *self.best)  # fmt: skip


class Calibration(Callback):
    """``task.calibrate`` (a :class:`rnnexp.tasks.base.Calibrates` task: charlm): after the
    last step, fit the softmax temperature ``T`` on val, set the scored model's read-out
    ``temperature`` to it (the test score then uses it) and store it in ``last.pt`` and
    ``best.pt``, a ``best.pt`` of an earlier step with a ``T`` fit on its own weights.
    The weights stay as trained, so ``train.resume`` continues exactly (the temperature
    goes back to 1 when training starts). ``metrics.json`` gets ``calibration`` and
    ``final_uncalibrated`` (the test score at ``T = 1``); TensorBoard
    ``calibration/temperature``."""

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        for model in (run.model, run.scored):  # the weights change: an old fit is stale
            model.temperature.fill_(1.0)

    def on_test_start(self, step: int) -> None:
        run = self.run
        fit = (
            run.task.calibrate(run.scored, run.device) if isinstance(run.task, Calibrates) else None
        )
        if fit is None:
            return
        run.record.update(final_uncalibrated=run.task.evaluate(run.scored, "test", run.device))
        for name in ("last.pt", "best.pt"):
            path = run.run_dir / "checkpoints" / name
            if not path.is_file():  # a resumed run whose val never improved has no best.pt
                continue
            saved = Checkpoint.load(path)
            if saved.step == step:
                saved.calibration = fit
            else:
                earlier = copy.deepcopy(run.scored)
                load_model_state(earlier, {**saved.model, "temperature": torch.ones(())}, path)
                saved.calibration = run.task.calibrate(earlier, run.device)
            assert saved.calibration is not None
            temperature = torch.tensor(saved.calibration["temperature"])
            saved.model = {**saved.model, "temperature": temperature}
            saved.save(path)
        run.scored.temperature.fill_(fit["temperature"])
        run.record.update(calibration=fit)
        if run.writer is not None:
            run.writer.add_scalar("calibration/temperature", fit["temperature"], step)


class Callbacks:
    """The run's callbacks, in the order of ``cfg.callbacks``, and the TensorBoard writer
    they share (opened by :meth:`running`, closed when the run completes)."""

    def __init__(self, cfg: DictConfig) -> None:
        nodes = cfg.get("callbacks") or {}
        self.items: list[Callback] = [
            build(node, f"callbacks.{name}") for name, node in nodes.items() if node is not None
        ]
        self.writer: SummaryWriter | None = None

    @contextlib.contextmanager
    def running(self, run: Run) -> Iterator[Callbacks]:
        """Open the writer, call ``on_train_start(run)``, and ``on_train_end`` when the
        block ends (also on an error); the writer is closed when the block completes."""
        self.writer = run.writer = SummaryWriter(log_dir=str(run.run_dir))
        started: list[Callback] = []
        try:
            for callback in self.items:
                callback.on_train_start(run)
                started.append(callback)
            yield self
        finally:
            for callback in started:
                callback.on_train_end()
        self.writer.close()

    def on_step_end(self, step: int, result: StepResult) -> None:
        for callback in self.items:
            callback.on_step_end(step, result)

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for callback in self.items:
            callback.on_evaluate(step, split, metrics)
        if self.writer is not None:
            self.writer.flush()

    def on_test_start(self, step: int) -> None:
        for callback in self.items:
            callback.on_test_start(step)
