"""The Update seam: what happens to the parameters for one batch.

The training loop (:func:`rnnexp.train.loop.train`) draws a batch and calls
``update.step(batch, state, step)``; it does not know whether that is a gradient step, a
closed-form fit or an optimizer that re-evaluates the model on the batch. An
:class:`Update` returns a :class:`StepResult` (the loss, the gradient norm, the hidden
state to carry to the next batch) and owns everything it needs between steps (optimizer,
schedule, averaged weights), which goes in and out of the checkpoint through
:meth:`Update.state_dict`/:meth:`Update.load_state_dict` under the checkpoint's keys
``model``, ``ema``, ``optimizer`` and ``scheduler``.

- :class:`GradientUpdate`: backpropagation (fused kernels, or step by step when the
  regularizer or the clipping rule needs the ``h_t``), the regularizer's backward pass,
  clipping, the NaN policy (``train.on_nan``), the optimizer and schedule steps, and the
  exponential moving average of the weights (``train.ema_decay``). An optimizer in
  :data:`CLOSURE_OPTIMIZERS` (``optim=lbfgs``) gets a closure that re-evaluates the model
  on the same batch.
- An object under ``optim`` that builds its own update (:class:`MakesUpdate`, e.g.
  ``optim=ridge``'s :class:`rnnexp.train.ridge.RidgeReadout` -> :class:`RidgeUpdate`): the loop
  runs it unchanged. Hessian-free fits here the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from rnnexp.config import build, build_with
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, Task
from rnnexp.train import checkpoint
from rnnexp.train.fast import fast_path

# Optimizers whose step() takes a closure that re-evaluates the loss (and its gradient).
CLOSURE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.LBFGS,)


@dataclass
class StepResult:
    """What one update reports to the loop and the callbacks.

    ``grad_norm`` is the global gradient norm before clipping (``None`` for a closed form),
    ``state`` the hidden state the next batch continues from, ``skipped`` whether the
    step was skipped (``train.on_nan=skip``), ``scalars`` more values to log as
    ``train/<name>`` (the learning rate, the momentum, Pascanu's Ω, ...)."""

    loss: float
    grad_norm: float | None
    state: Any = None
    skipped: bool = False
    scalars: dict[str, float] = field(default_factory=dict)


class Update:
    """One kind of parameter update; subclasses implement :meth:`step`."""

    skipped = 0  # steps skipped so far (train.on_nan=skip)

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def scored(self) -> nn.Module:
        """The weights that evaluation, checkpoints and sampling use."""
        return self.model

    def total_steps(self, max_steps: int) -> int:
        """How many steps the loop runs (``train.max_steps``; a closed form takes one)."""
        return max_steps

    def step(self, batch: Batch, state: Any, step: int) -> StepResult:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``model``, ``ema``, ``optimizer`` and ``scheduler`` entries."""
        return {"model": self.model.state_dict(), "ema": None, "optimizer": None,
                "scheduler": None}  # fmt: skip

    def load_state_dict(self, saved: dict[str, Any], source: str | Path) -> None:
        """Restore from a checkpoint (``train.resume``)."""
        checkpoint.load_model_state(self.model, saved["model"], source)


@runtime_checkable
class MakesUpdate(Protocol):
    """An ``optim`` config object that is no torch optimizer but builds its own update
    (``optim=ridge``; later Hessian-free)."""

    def make_update(
        self, model: nn.Module, task: Task, stream: Any, train: DictConfig, device: torch.device
    ) -> Update: ...


def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried hidden state (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    r"""An exponential moving average of ``model``'s parameters (Polyak averaging), with
    timm's warm-up so that early evaluations are not dominated by the initial weights.

    .. math::
        \bar\theta \leftarrow d_n \bar\theta + (1 - d_n) \theta, \qquad
        d_n = \min\left(d, \frac{1 + n}{10 + n}\right)

    after each optimizer step, where ``n`` is the number of steps already averaged (the
    first is copied). ``torch.optim.swa_utils.AveragedModel`` keeps the copy and ``n``.
    Buffers (fixed reservoirs, masks) are copied, not averaged.
    """
    if not 0.0 < decay < 1.0:
        raise RnnexpError(f"train.ema_decay={decay} is outside (0, 1); use e.g. 0.999, or null")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        n_steps = int(n.item())  # steps averaged before this one (>= 1 here)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1 + n_steps) / (10 + n_steps)))

    return AveragedModel(model, multi_avg_fn=update)


class GradientUpdate(Update):
    """Backpropagation through time and one optimizer step per batch.

    Args:
        model, task: the network and the task whose loss it minimizes.
        optimizer, scheduler: built from ``optim`` and ``sched``.
        clip: a clipping rule (:mod:`rnnexp.train.clip`); with a ``grad_hook`` the net runs step
            by step and the hook acts on every ``h_t``'s gradient.
        regularizer: owns the backward pass (:mod:`rnnexp.train.regularizers`); with
            ``needs_steps`` the net runs step by step.
        on_nan: ``stop`` (raise) or ``skip`` a step whose loss or gradient is NaN/inf.
        max_skipped: with ``skip``, consecutive skipped steps before giving up.
        ema_decay: average the weights (:func:`ema_of`), or ``None``.
        fast: take the fast path for small Elman-type nets where it applies
            (:mod:`rnnexp.train.fast`, ``train.fast``); ``False``: always the general path.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        clip: Any,
        regularizer: Any,
        on_nan: str = "stop",
        max_skipped: int = 100,
        ema_decay: float | None = None,
        fast: bool = True,
    ) -> None:
        super().__init__(model)
        if on_nan not in ("stop", "skip"):
            raise RnnexpError(f"train.on_nan={on_nan!r}; choose stop or skip")
        self.task, self.optimizer, self.scheduler = task, optimizer, scheduler
        self.clip, self.regularizer = clip, regularizer
        self.on_nan, self.max_skipped, self.in_a_row = on_nan, max_skipped, 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        # h_t as graph nodes: Ω needs them, hidden-gradient clipping hooks them
        self.step_by_step = regularizer.needs_steps or clip.grad_hook is not None
        # issue 23: the fast path (one fused loop that also hands out every δ_t), or None
        self.fast = fast_path(model, clip, regularizer) if fast else None
        # the averaged weights, which evaluation, checkpoints and sampling use
        self.ema = ema_of(model, ema_decay) if ema_decay is not None else None

    @property
    def scored(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def needs_closure(self) -> bool:
        """Whether the optimizer re-evaluates the loss through a closure (L-BFGS)."""
        return isinstance(self.optimizer, CLOSURE_OPTIMIZERS)

    def forward_backward(self, batch: Batch, state: Any, step: int) -> tuple[Tensor, float, Any]:
        """The loss on ``batch`` from ``state``, its gradient in ``.grad`` (with the
        regularizer's, clipped) and the global gradient norm before clipping (NaN when the
        loss is not finite), and the detached state after the batch."""
        model = self.model
        fast = self.fast if self.fast is not None and self.fast.applies(batch) else None
        deltas = None  # the fast path's δ_t, filled in by the backward pass
        if fast is not None:  # issue 23: Ω and clip=hidden without a graph node per step
            hidden, state, deltas = fast.recur(batch.inputs, state, step)
            steps = None
        elif self.step_by_step:
            hidden, state, steps = model.recur_steps(batch.inputs, state, self.clip.grad_hook)
        else:  # fused kernels
            hidden, state = model.recur(batch.inputs, state, batch.lengths)  # (B, T, D*H)
            steps = None
        loss = self.task.loss(model.readout(hidden, batch.lengths), batch)
        norm = math.nan
        if math.isfinite(loss.item()):
            self.optimizer.zero_grad(set_to_none=True)
            if fast is not None and deltas is not None:
                fast.backward(loss, deltas)  # the same gradient, Ω from the loop's δ_t
            else:
                self.regularizer.backward(loss, steps, model, step)  # ∇(loss + e.g. αΩ)
            norm = self.clip(self.params).item()  # global gradient norm before clipping
        return loss.detach(), norm, detach_state(state)

    def step(self, batch: Batch, state: Any, step: int) -> StepResult:
        start = None if batch.reset_state else state
        loss, norm, state = self.forward_backward(batch, start, step)
        loss_value = loss.item()
        finite = math.isfinite(loss_value) and math.isfinite(norm)
        # clip=norm clip.fallback: an untrusted norm steps on the clipper's gradient instead
        if not self.clip.fallback_step(self.model, norm) and not finite:
            self.skip(loss_value, norm, step)
            return StepResult(loss_value, norm, None, skipped=True)
        state = state if finite else None
        self.in_a_row = 0
        if self.needs_closure:  # the first evaluation is the one above
            evaluations = [loss]

            def closure() -> Tensor:
                if evaluations:
                    return evaluations.pop()
                return self.forward_backward(batch, start, step)[0]

            self.optimizer.step(closure)
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        group = self.optimizer.param_groups[0]
        scalars = {"lr": group["lr"], **self.regularizer.logged()}
        if (momentum := group.get("momentum")) is not None:  # SGD (optim=nesterov: scheduled)
            scalars["momentum"] = momentum  # the μ of this step's update
        return StepResult(loss_value, norm, state, scalars=scalars)

    def skip(self, loss: float, norm: float, step: int) -> None:
        """``train.on_nan``: raise, or count a skipped step (the schedule still moves)."""
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        value = loss if what == "loss" else norm
        if self.on_nan == "stop":
            raise RnnexpError(
                f"{what} is {value} at step {step}: training diverged; clip the gradient "
                "(clip=norm clip.max_norm=1), lower optim.lr, or set train.on_nan=skip to skip "
                "such steps"
            )
        self.skipped, self.in_a_row = self.skipped + 1, self.in_a_row + 1
        if self.in_a_row > self.max_skipped:
            raise RnnexpError(
                f"{what} was NaN/inf for {self.in_a_row} steps in a row up to step {step}; "
                "clip the gradient (clip=norm) or lower optim.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        ema = self.ema
        return {
            "model": self.scored.state_dict(),
            "ema": None
            if ema is None
            else {"trained_model": self.model.state_dict(), "n_averaged": int(ema.n_averaged)},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, saved: dict[str, Any], source: str | Path) -> None:
        averaged = saved.get("ema")
        if averaged is None or self.ema is None:
            checkpoint.load_model_state(self.model, saved["model"], source)
        else:
            checkpoint.load_model_state(self.model, averaged["trained_model"], source)
            checkpoint.load_model_state(self.ema.module, saved["model"], source)
            self.ema.n_averaged.fill_(averaged["n_averaged"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])


class RidgeUpdate(Update):
    """``optim=ridge``: one step that fits the head in closed form on ``fit.batches``
    batches (the loop's batch and the next ones of the stream); no optimizer."""

    def __init__(self, model: nn.Module, task: Task, fit: Any, stream: Any, washout: int,
                 device: torch.device) -> None:  # fmt: skip
        super().__init__(model)
        self.task, self.fit, self.stream = task, fit, stream
        self.washout, self.device = washout, device

    def total_steps(self, max_steps: int) -> int:
        return 1  # one pass over the training data

    def step(self, batch: Batch, state: Any, step: int) -> StepResult:
        batches = chain([batch], self.stream)
        loss = self.fit.fit(self.model, self.task, batches, washout=self.washout,
                            device=self.device)  # fmt: skip
        return StepResult(loss, None)

    def load_state_dict(self, saved: dict[str, Any], source: str | Path) -> None:
        raise RnnexpError("optim=ridge fits in one pass and cannot resume; drop train.resume")


def build_update(
    cfg: DictConfig, model: nn.Module, task: Task, stream: Any, device: torch.device
) -> Update:
    """The update that ``cfg.optim`` (with ``sched``, ``clip``, ``regularizer`` and the
    ``train`` settings) describes, for ``model``'s trainable parameters."""
    tc = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    optim = build_with(cfg.optim, "optim", params)
    if isinstance(optim, MakesUpdate):  # a closed form (optim=ridge), ...
        return optim.make_update(model, task, stream, tc, device)
    scheduler = build_with(cfg.sched, "sched", optim)
    clip = build(cfg.clip, "clip")
    regularizer = build(cfg.regularizer, "regularizer")
    return GradientUpdate(model, task, optim, scheduler, clip, regularizer, on_nan=tc.on_nan,
                          max_skipped=tc.max_skipped, ema_decay=tc.ema_decay,
                          fast=tc.get("fast") is not False)  # fmt: skip
