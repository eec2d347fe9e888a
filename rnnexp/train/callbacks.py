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
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import yaml
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from rnnexp import plots
from rnnexp.atomic import atomic_write
from rnnexp.cells import Cell
from rnnexp.config import build, parse_override
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
    stop: bool = False  # a callback sets it to end the run after this evaluation's checkpoint
    # the best val evaluation before this start ({"step", "value", ...}: a resumed run's,
    # from its checkpoint); empty for a new run
    best: dict[str, Any] = field(default_factory=dict)

    def best_before(self) -> tuple[float, int] | None:
        """``(value, step)`` of the best val evaluation before this start, or ``None``."""
        value, step = self.best.get("value"), self.best.get("step")
        return None if value is None or step is None else (float(value), int(step))


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
    form) and the update's own (``train/lr``, ``train/momentum`` of optimizers that have
    one, ``train/omega``)."""
    if result.skipped or not (step % run.cfg.train.log_every == 0 or step == run.max_steps):
        return {}
    scalars = {"loss": result.loss, "grad_norm": result.grad_norm, **result.scalars}
    return {f"train/{name}": value for name, value in scalars.items() if value is not None}


class TensorBoardScalars(Callback):
    """``train/loss``, ``train/grad_norm`` and the update's scalars (``train/lr``,
    ``train/momentum``, ``train/omega``) every ``train.log_every`` steps and at the last step; each
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
        before = run.best_before()  # a resumed run's best so far
        self.best = None if before is None else before[0]
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
            completed=run.start_step, loss=math.nan,
            metric="-" if self.best is None else f"{self.best:.4g}",
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


def hyperparameters(record: dict[str, Any]) -> dict[str, Any]:
    """A run's hyperparameters for TensorBoard's HPARAMS tab, from its ``metrics.json``
    data: the option chosen in each config group (``cell``, ``task``, ``optim``, ...), the
    seed, and every command-line override (in a sweep: the swept keys), values read as
    YAML scalars (``1e-3`` a number, ``true`` a bool; anything else as text)."""
    found: dict[str, Any] = {group: "null" if option is None else str(option) for group, option
                             in (record.get("choices") or {}).items()}  # fmt: skip
    found["train.seed"] = record.get("seed")
    for override in map(parse_override, record.get("overrides") or []):
        if override.prefix != "~" and override.value is not None:
            try:
                value = yaml.safe_load(override.value)
            except yaml.YAMLError:
                value = override.value
            found[override.key] = value
    return {
        key: value if isinstance(value, bool | int | float | str) else str(value)
        for key, value in found.items()
    }


class HParams(Callback):
    """TensorBoard's HPARAMS tab: once the run has its test score, its hyperparameters
    (:func:`hyperparameters`) against ``hparams/test_<metric>`` for every test metric and
    ``hparams/best_val_<metric>`` for the task's metric, so that ``tensorboard --logdir
    outputs/multirun/<time>`` compares a sweep's jobs side by side."""

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        if split != "test" or run.writer is None:
            return
        scores = {f"hparams/test_{key}": float(value) for key, value in metrics.items()}
        best = (run.record.data.get("best") or {}).get("value")
        if best is not None:
            scores[f"hparams/best_val_{run.task.metric}"] = float(best)
        # run_name ".": the run's own folder (torch's default is a new subfolder per call)
        run.writer.add_hparams(hyperparameters(run.record.data), scores, run_name=".",
                               global_step=step)  # fmt: skip


def reached(value: float, target: float | None, mode: str) -> bool:
    """Whether ``value`` is at ``target`` or beyond it (``None``: never)."""
    return target is not None and (value <= target if mode == "min" else value >= target)


class EarlyStopping(Callback):
    """End the run early (:attr:`Run.stop`: after the evaluation's checkpoints are written).

    Args:
        stop_at: ``train.stop_at``: once a val evaluation improves on the best so far and
            reaches this value of the task's metric (Pascanu's stopping rule: 0 errors);
            ``metrics.json`` gets ``stopped_at_target``. A run resumed from a checkpoint
            whose best had reached it (killed between that evaluation and its test)
            stops at once, as the uninterrupted run did: it is only scored.
        patience: ``train.patience``: after this many val evaluations in a row without an
            improvement of the task's metric (lightning-hydra-template's early stopping);
            ``metrics.json`` gets ``stopped_early``. A resumed run continues the count: the
            evaluations since its best step, at ``train.eval_every``.
    """

    def __init__(self, stop_at: float | None = None, patience: int | None = None) -> None:
        self.stop_at, self.patience = stop_at, patience

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        before = run.best_before()  # a resumed run's best so far
        self.best: float | None = None if before is None else before[0]
        # evaluations since the last improvement
        every = int(run.cfg.train.eval_every)
        self.waited = 0 if before is None else max(run.start_step - before[1], 0) // every
        if before is not None and reached(before[0], self.stop_at, run.task.metric_mode):
            log.info("resumed at val %s=%.4g (step %d), which reached train.stop_at=%g: "
                     "stopping", run.task.metric, before[0], before[1], self.stop_at)  # fmt: skip
            run.record.update(stopped_at_target=True)
            run.stop = True
        elif self.patience and self.waited >= self.patience:  # resumed where patience ran out
            run.record.update(stopped_early={"patience": self.patience, "step": run.start_step})
            run.stop = True

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        if split != "val":
            return
        metric, mode = run.task.metric, run.task.metric_mode
        value = metrics[metric]
        improved = is_better(value, self.best, mode)
        self.best, self.waited = (value, 0) if improved else (self.best, self.waited + 1)
        if improved and reached(value, self.stop_at, mode):
            log.info("val %s=%.4g reached train.stop_at=%g at step %d: stopping", metric,
                     value, self.stop_at, step)  # fmt: skip
            run.record.update(stopped_at_target=True)
            run.stop = True
        elif self.patience and self.waited >= self.patience:
            log.info("val %s has not improved for %d evaluations (train.patience): stopping at "
                     "step %d", metric, self.waited, step)  # fmt: skip
            run.record.update(stopped_early={"patience": self.patience, "step": step})
            run.stop = True


class LogLines(Callback):
    """Log lines people can follow (in the console and the run's ``train.log``, which a
    SLURM ``.out`` file shows as it grows): the run folder at the start, one line per
    evaluation with the val metrics and the run's best evaluation so far (a resumed run's
    included), and once the run completes its test scores and where to look
    (``metrics.json``, ``tensorboard --logdir``)."""

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        self.best: tuple[float, int] | None = run.best_before()  # (value, step) so far
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


class Eigenvalues(Callback):
    """The eigenvalues of every recurrent matrix in the complex plane, with the unit circle,
    at each val evaluation (seed 004: along an eigenvector whose eigenvalue lies inside the
    circle the backpropagated error vanishes, outside it explodes): TensorBoard
    ``eigenvalues`` and ``plots/eigenvalues.png``. One panel per layer and gate block of
    ``weight_hh`` (:meth:`rnnexp.cells.Cell.recurrent_blocks`; Elman types: the effective
    matrix) of the scored weights, titled with its spectral radius. Draws no random
    numbers and changes nothing. ``rnnexp inspect RUN --eigenvalues`` draws the same
    panels over training from the checkpoints that :class:`KeepCheckpoints` kept.

    Args:
        enabled: ``False`` draws nothing.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        run = self.run
        if not self.enabled or split != "val" or not (blocks := self.matrices(run.scored)):
            return
        title = f"{run.cfg.cell.name} on {run.task.name}: recurrent eigenvalues, step {step}"
        fig = self.figure([(step, blocks)], title)
        plots.save_png(fig, run.run_dir / "plots" / "eigenvalues.png")
        run.writer.add_figure("eigenvalues", fig, step)  # closes the figure

    @staticmethod
    def matrices(model: nn.Module) -> dict[str, torch.Tensor]:
        """Every layer's square recurrent blocks by panel name (``forget``; stacked nets
        ``layer 1 forget``); ``{}`` when the model's recurrence is not a cell."""
        rnn = getattr(model, "rnn", model)
        if not isinstance(rnn, Cell):
            return {}
        found = {}
        for layer in range(rnn.num_layers):
            for name, block in rnn.recurrent_blocks(layer).items():
                found[name if rnn.num_layers == 1 else f"layer {layer} {name}"] = block
        return found

    @staticmethod
    def figure(snapshots: list[tuple[int, dict[str, torch.Tensor]]], title: str) -> Figure:
        """One panel per matrix of the last snapshot ``(step, matrices)``; the eigenvalues
        of every snapshot, coloured by its step when there are several (with a colour bar),
        the unit circle dashed; each panel's title gives the last snapshot's spectral
        radius ``ρ``. Non-finite matrices (a diverged run) are left out."""
        names = list(snapshots[-1][1])
        cols = min(len(names), 4)
        rows = math.ceil(len(names) / cols)
        size = (3.2 * cols + (0.8 if len(snapshots) > 1 else 0.0), 3.2 * rows + 0.4)
        fig, axes = plots.plt.subplots(rows, cols, figsize=size, layout="constrained")
        axes = [axes] if len(names) == 1 else list(getattr(axes, "flat", axes))
        steps = [step for step, _ in snapshots]
        norm = Normalize(min(steps), max(steps) if len(set(steps)) > 1 else min(steps) + 1)
        cmap = plots.plt.get_cmap("viridis")
        for ax, name in zip(axes, names, strict=False):
            radius = {}
            for rank, (step, matrices) in enumerate(snapshots):  # earlier ones larger, below
                color = cmap(norm(step)) if len(steps) > 1 else None
                size = 10.0 + 24.0 * (len(steps) - 1 - rank) / max(len(steps) - 1, 1)
                radius[step] = _spectrum(ax, matrices.get(name), color, size)
            reach = max([1.0, *[r for r in radius.values() if math.isfinite(r)]]) * 1.1
            ax.add_patch(Circle((0.0, 0.0), 1.0, fill=False, linestyle="--", color="0.4"))
            ax.axhline(0.0, color="0.85", linewidth=0.6, zorder=0)
            ax.axvline(0.0, color="0.85", linewidth=0.6, zorder=0)
            ax.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal")
            ax.set_title(f"{name}: ρ = {radius.get(steps[-1], math.nan):.3g}", fontsize=10)
        for ax in axes[len(names) :]:
            ax.axis("off")
        if len(steps) > 1:
            fig.colorbar(ScalarMappable(norm, cmap), ax=axes, label="training step", shrink=0.9)
        fig.suptitle(title)
        return fig


def _spectrum(ax: Axes, matrix: torch.Tensor | None, color: Any, size: float) -> float:
    """Scatter ``matrix``'s eigenvalues on ``ax`` (marker area ``size``); its spectral
    radius (NaN, and nothing drawn, for no matrix or one with a NaN or inf)."""
    if matrix is None or not torch.isfinite(matrix).all():
        return math.nan
    matrix = matrix.detach().double().cpu()
    eig = torch.linalg.eigvals(matrix)
    points = (eig.real.numpy(), eig.imag.numpy())
    ax.scatter(*points, s=size, color=color or "tab:blue", alpha=0.85, linewidths=0)
    return eig.abs().max().item()


class KeepCheckpoints(Callback):
    """``train.keep_checkpoints`` = ``N > 0``: besides ``last.pt`` and ``best.pt``, keep
    ``checkpoints/step_<k>.pt`` for the last ``N`` evaluations (whole checkpoints: each
    loads, evaluates and resumes like ``last.pt``), e.g. for ``rnnexp inspect RUN
    --eigenvalues``. The loop writes ``last.pt`` after the val callbacks, so each
    evaluation copies the ``last.pt`` of the one before, and the final test evaluation
    that of the last; older copies beyond ``N`` are removed. ``0`` or ``None`` keeps none
    (``None``, the default, also lets a run saved before this key existed resume).

    Args:
        keep: ``N``, the step checkpoints to keep.
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep or 0
        self.pending: int | None = None  # the step whose checkpoint last.pt holds next

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if self.keep <= 0:
            return
        folder = self.run.run_dir / "checkpoints"
        last = folder / "last.pt"
        if self.pending is not None and last.is_file():
            with last.open("rb") as source:
                atomic_write(folder / f"step_{self.pending}.pt", source_copy(source))
            kept = sorted(folder.glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
            for old in kept[: -self.keep]:
                old.unlink()
        self.pending = step if split == "val" else None


def source_copy(source: IO[bytes]) -> Callable[[IO[bytes]], None]:
    """A writer for :func:`rnnexp.atomic.atomic_write` that copies ``source``."""

    def write(handle: IO[bytes]) -> None:
        shutil.copyfileobj(source, handle)

    return write


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
        # a run continued in its own folder (a requeued job): TensorBoard hides the events
        # of the steps after its checkpoint, which it logs again
        purge = run.start_step + 1 if run.start_step else None
        self.writer = run.writer = SummaryWriter(log_dir=str(run.run_dir), purge_step=purge)
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
