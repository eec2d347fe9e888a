r"""``optim=hf``: Hessian-free optimization with structural damping, as an :class:`Update`.

Martens 2010 (Deep learning via Hessian-free optimization, ICML) and Martens & Sutskever 2011
(Learning recurrent neural networks with Hessian-free optimization, ICML): a truncated Newton
method. Every loop step (one batch of ``train.batch_size`` sequences, the *gradient batch*)
makes one Hessian-free update of the trainable parameters :math:`\theta`:

1. the loss :math:`f(\theta)` and its gradient :math:`g = \nabla f(\theta)` on the gradient
   batch;
2. on the *curvature batch* (the first :math:`\lceil c B \rceil` sequences of the gradient
   batch, ``optim.curvature_fraction`` :math:`= c`) the damped curvature product
   (:class:`Curvature`)

   .. math::
       A v = \left(G + \lambda I + \lambda \mu\, G_S\right) v, \qquad
       G = J_z^\top H_L J_z, \qquad G_S = \tfrac{1}{N_h} J_h^\top J_h

   where :math:`z` are the read-out's outputs (the loss's inputs), :math:`J_z = \partial z /
   \partial\theta`, :math:`H_L = \partial^2 L / \partial z^2` the Hessian of the task's loss
   w.r.t. the outputs (Schraudolph 2002's Gauss-Newton matrix :math:`G`; positive
   semi-definite because the tasks' losses, MSE, softmax cross-entropy and sigmoid BCE, are
   convex in :math:`z`), :math:`h` the top layer's hidden states at every step,
   :math:`J_h = \partial h / \partial\theta` and :math:`N_h` their count (sequences ×
   steps). :math:`\lambda \mu G_S` is the Gauss-Newton term of M&S 2011's structural
   damping :math:`\lambda \mu\, D(h(\theta), h(\theta + \delta))` with
   :math:`D = \frac{1}{2 N_h} \sum_{b,t} \lVert h_{b,t}(\theta + \delta) - h_{b,t}(\theta)
   \rVert^2`. No matrix is ever formed: :math:`J v` is one forward-mode pass
   (``torch.func.jvp``), :math:`H_L (J_z v)` a double backward through the loss, and
   :math:`J^\top u` one reverse-mode pass (``torch.func.vjp``, whose graph is kept for all
   the products of the update);
3. preconditioned conjugate gradient (:func:`conjugate_gradient`) on the quadratic model
   :math:`\phi(\delta) = \tfrac12 \delta^\top A \delta + g^\top \delta`, started from the
   previous update's last CG iterate decayed by :math:`\zeta` (``optim.warm_start_decay``),
   with the preconditioner :math:`M = (\operatorname{diag} F + \lambda)^{\alpha}` where
   :math:`F = \frac1n \sum_i \nabla \ell_i \nabla \ell_i^\top` is the empirical Fisher of
   the curvature batch's per-sequence losses :math:`\ell_i` and :math:`\alpha` is
   ``optim.preconditioner_power``, and Martens' stopping rule: stop at iteration :math:`i`
   when, with :math:`k = \max(10, \lceil 0.1 i \rceil)`, :math:`i > k`,
   :math:`\phi_i < 0` and :math:`(\phi_i - \phi_{i-k}) / \phi_i < k \epsilon`;
4. CG backtracking: the iterates at iterations :math:`\lceil \gamma^j \rceil` (and the last)
   are kept; going back from the last, the one with the lowest :math:`f` on the gradient
   batch is the step :math:`\delta` (:func:`backtrack`);
5. Levenberg-Marquardt: with the reduction ratio
   :math:`\rho = (f(\theta + \delta) - f(\theta)) / \phi(\delta)`,
   :math:`\lambda \leftarrow \tfrac32 \lambda` if :math:`\rho < \tfrac14`,
   :math:`\lambda \leftarrow \tfrac23 \lambda` if :math:`\rho > \tfrac34`
   (:func:`adjust_damping`);
6. a backtracking line search (:func:`line_search`): the first
   :math:`\alpha \in \{1, 0.8, 0.8^2, \dots\}` with
   :math:`f(\theta + \alpha\delta) \le f(\theta) + c\, \alpha \min(g^\top \delta, 0)`, else
   no step; then :math:`\theta \leftarrow \theta + \alpha \delta`.

Usage: ``rnnexp train task=adding optim=hf`` (``optim.mu=0``: no structural damping, M&S
2011's ablation; ``optim.max_cg_iterations``, ``optim.damping``, ...: ``conf/optim/hf.yaml``).
One loop step is one HF update, which costs one gradient, a per-sequence gradient of every
curvature sequence (the preconditioner), up to ``max_cg_iterations`` curvature products and
a few loss evaluations for the backtracking and the line search: tens to hundreds of SGD
steps' worth, so runs take far fewer steps (``train.max_steps``) than with SGD, and larger
gradient batches (``train.batch_size``) suit HF better than they suit SGD. ``sched``,
``clip`` and ``regularizer`` do not apply (HF has no learning rate; the damping plays the
part of clipping). The model runs without dropout (``model.dropout``, ``input_dropout`` and
``weight_drop`` must be 0) and ``train.ema_decay`` is refused. TensorBoard gets, per update,
``train/hf_damping`` (the λ the update used), ``train/hf_rho`` (ρ), ``train/hf_cg_iterations``,
``train/hf_cg_used`` (the backtracked iteration), ``train/hf_model_reduction``
(:math:`\phi(\delta)`, the quadratic model's predicted change), ``train/hf_reduction``
(:math:`f(\theta+\delta) - f(\theta)`) and ``train/hf_step_size`` (α). The damping, the last
CG iterate and the counters are in the checkpoint (``update["hf"]``): a resumed run repeats
the uninterrupted one.

Curvature products run the per-step form of the cell (:meth:`SequenceModel.recur_steps`),
whose operations all have forward-mode derivatives (the hand-written cells' whole-sequence
kernels are ``autograd.Function``\ s without them). torch's own cells (``elman``, ``lstm``,
``gru``) on the CPU run their whole-sequence kernel instead, with oneDNN off (its fused LSTM
has no forward-mode derivative), in both directions; on CUDA they run the per-step form
(cuDNN's and the fused cell kernels have no forward-mode derivatives either). Padded batches
(text tasks) run the per-step form too, since ``torch.func`` cannot run packed sequences: a
one-direction net's outputs at the real steps do not see the padding after them, and the
structural term counts the real steps only; a bidirectional net on padded batches is refused.
With stacked layers the structural term reads the top layer's hidden states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel
from rnnexp.tasks.base import Batch, Task, eval_mode
from rnnexp.train.updates import StepResult, Update, detach_state

Loss = Callable[[Tensor], Tensor]  # the task's loss as a function of the model's outputs


class HessianFree:
    """``optim=hf``'s config (``conf/optim/hf.yaml``): builds :class:`HessianFreeUpdate`.

    Args:
        damping: the initial Tikhonov damping λ (adapted by Levenberg-Marquardt).
        mu: structural damping μ (M&S 2011 §3): the hidden-state term's weight relative to
            λ; 0: plain HF (Martens 2010).
        max_cg_iterations: the most CG iterations per update.
        cg_tolerance: ε of Martens' relative-progress stopping rule.
        curvature_fraction: the share of the gradient batch's sequences (its first ones) that
            the curvature products and the preconditioner see.
        warm_start_decay: ζ: CG starts from ζ times the previous update's last CG iterate.
        preconditioner_power: α of ``(diag F + λ)^α``; 0: no preconditioner.
        keep_growth: γ: CG iterates are kept for backtracking at iterations ``⌈γ^j⌉``.
        damping_increase, damping_decrease: λ's factors when ρ < 1/4 and when ρ > 3/4.
        line_search_c: the sufficient-decrease constant of the line search.
        line_search_shrink: the factor by which the line search shortens the step.
        line_search_tries: the shortened steps tried before the update is given up.
    """

    def __init__(
        self,
        damping: float = 1.0,
        mu: float = 0.3,
        max_cg_iterations: int = 250,
        cg_tolerance: float = 5e-4,
        curvature_fraction: float = 0.25,
        warm_start_decay: float = 0.95,
        preconditioner_power: float = 0.75,
        keep_growth: float = 1.3,
        damping_increase: float = 1.5,
        damping_decrease: float = 2 / 3,
        line_search_c: float = 0.01,
        line_search_shrink: float = 0.8,
        line_search_tries: int = 20,
    ) -> None:
        checks = {
            "damping": damping > 0,
            "mu": mu >= 0,
            "max_cg_iterations": max_cg_iterations >= 1,
            "cg_tolerance": cg_tolerance > 0,
            "curvature_fraction": 0 < curvature_fraction <= 1,
            "warm_start_decay": 0 <= warm_start_decay <= 1,
            "preconditioner_power": preconditioner_power >= 0,
            "keep_growth": keep_growth > 1,
            "damping_increase": damping_increase > 1,
            "damping_decrease": 0 < damping_decrease < 1,
            "line_search_c": 0 <= line_search_c < 1,
            "line_search_shrink": 0 < line_search_shrink < 1,
            "line_search_tries": line_search_tries >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise RnnexpError(f"optim.{key}={locals()[key]} is out of range (optim=hf)")
        self.damping, self.mu = float(damping), float(mu)
        self.max_cg_iterations, self.cg_tolerance = int(max_cg_iterations), float(cg_tolerance)
        self.curvature_fraction = float(curvature_fraction)
        self.warm_start_decay = float(warm_start_decay)
        self.preconditioner_power = float(preconditioner_power)
        self.keep_growth = float(keep_growth)
        self.damping_increase, self.damping_decrease = damping_increase, damping_decrease
        self.line_search_c, self.line_search_shrink = line_search_c, line_search_shrink
        self.line_search_tries = int(line_search_tries)

    def make_update(
        self, model: SequenceModel, task: Task, stream: Any, train: DictConfig,
        device: torch.device,
    ) -> HessianFreeUpdate:  # fmt: skip
        """The loop's update for ``optim=hf`` (:class:`rnnexp.train.updates.MakesUpdate`)."""
        del stream  # HF reads only the loop's batch
        if train.get("ema_decay") is not None:
            raise RnnexpError("train.ema_decay averages gradient steps; optim=hf takes none")
        if getattr(model, "crf", None) is not None:
            raise RnnexpError("optim=hf needs a tensor output; drop model.crf with optim=hf")
        dropped = [name for name, m in model.named_modules() if _drops(m)]
        if dropped or getattr(model, "weight_drop", 0.0):
            raise RnnexpError(
                "optim=hf needs a deterministic net (the curvature products must see the same "
                f"function): set model.dropout, input_dropout and weight_drop to 0 ({dropped})"
            )
        return HessianFreeUpdate(model, task, self, device)


def _drops(module: nn.Module) -> bool:
    """Whether ``module`` applies dropout while training."""
    if isinstance(module, nn.Dropout):
        return module.p > 0
    rate = getattr(module, "dropout", 0.0)  # a cell's between its stacked layers
    return isinstance(rate, (int, float)) and rate > 0


@contextmanager
def native_kernels() -> Iterator[None]:
    """oneDNN and cuDNN off inside the block: their fused RNN kernels have no forward-mode
    derivative (``torch.func.jvp``); torch's own kernels have."""
    mkldnn, cudnn = torch._C._get_mkldnn_enabled(), torch._C._get_cudnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    torch._C._set_cudnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(mkldnn)
        torch._C._set_cudnn_enabled(cudnn)


class _Forward(nn.Module):
    """The model's outputs and hidden states as one module call, so that ``functional_call``
    can swap its weights: ``(z, h, state)``."""

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, inputs: Tensor, state: Any, lengths: Tensor | None, per_step: bool
    ) -> tuple[Tensor, Tensor, Any]:
        if per_step:
            hidden, state, _ = self.model.recur_steps(inputs, state)
        else:
            hidden, state = self.model.recur(inputs, state, lengths)
        return self.model.readout(hidden, lengths), hidden, state


class Network:
    r"""The model as a function of one flat vector :math:`\theta` of its trainable parameters
    (in ``model.parameters()`` order).

    ``per_step``: the curvature products always run :meth:`SequenceModel.recur_steps`;
    otherwise (torch's own cells on the CPU) only for padded batches (see the module
    docstring)."""

    def __init__(self, model: SequenceModel, per_step: bool) -> None:
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        names = {id(p): name for name, p in model.named_parameters()}
        self.names = [f"model.{names[id(p)]}" for p in self.params]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.forward = _Forward(model)
        self.per_step = per_step

    def steps_for(self, batch: Batch) -> bool:
        """Whether the curvature products on ``batch`` run the per-step form: torch's packed
        sequences (padded batches) have no ``torch.func`` support. A one-direction net's
        outputs at the real steps do not depend on the padding after them."""
        per_step = self.per_step or batch.lengths is not None
        if per_step and getattr(self.model, "bidirectional", False):
            raise RnnexpError(
                "optim=hf runs the curvature products one step at a time here (a padded batch, "
                "a hand-written cell or CUDA), which cannot read both directions: set "
                "model.bidirectional=false"
            )
        return per_step

    def vector(self) -> Tensor:
        """The current :math:`\\theta` (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def assign(self, theta: Tensor) -> None:
        """Set the model's parameters to ``theta``."""
        for param, value in zip(self.params, self.split(theta), strict=True):
            param.copy_(value)

    def split(self, theta: Tensor) -> list[Tensor]:
        """``theta`` as one tensor per parameter (views)."""
        parts = theta.split(self.sizes)
        return [part.view(shape) for part, shape in zip(parts, self.shapes, strict=True)]

    def run(
        self, theta: Tensor, batch: Batch, state: Any, per_step: bool = False
    ) -> tuple[Tensor, Tensor, Any]:
        """The outputs ``z``, the top layer's hidden states ``h`` ``(B, T, D*H)`` and the final
        state at ``theta``; differentiable w.r.t. ``theta`` (autograd and ``torch.func``)."""
        values = dict(zip(self.names, self.split(theta), strict=True))
        args = (batch.inputs, state, batch.lengths, per_step)
        return functional_call(self.forward, values, args)

    @torch.no_grad()
    def loss(self, task: Task, theta: Tensor, batch: Batch, state: Any) -> float:
        """:math:`f(\\theta)` on ``batch``; ``inf`` when it is not finite."""
        value = task.loss(self.run(theta, batch, state)[0], batch).item()
        return value if math.isfinite(value) else math.inf


class Curvature:
    r"""Curvature-vector products on one batch at a fixed :math:`\theta`, never a matrix.

    With the outputs :math:`z(\theta)`, the hidden states :math:`h(\theta)` (:math:`N_h`
    vectors: sequences × steps) and the loss :math:`L(z)`:

    .. math::
        G v = J_z^\top H_L J_z v, \qquad G_S v = \tfrac{1}{N_h} J_h^\top J_h v, \qquad
        A v = G v + \lambda v + \lambda \mu\, G_S v

    :math:`(J_z v, J_h v)` is one ``torch.func.jvp`` through the net,
    :math:`H_L (J_z v)` one double backward through the loss (exact for any loss of the
    outputs: MSE gives :math:`\frac{2}{N} I`, softmax cross-entropy
    :math:`\frac{1}{N}(\operatorname{diag} p - p p^\top)` per row, sigmoid BCE
    :math:`\frac{1}{N}\sigma(1-\sigma)`), and :math:`J_z^\top u + J_h^\top w` one call of
    the ``torch.func.vjp`` pull-back linearized once at :math:`\theta`. :math:`G_S` is the
    Gauss-Newton matrix of the structural-damping distance
    :math:`D(\delta) = \frac{1}{2 N_h} \sum_{b,t} \lVert h_{b,t}(\theta + \delta) -
    h_{b,t}(\theta) \rVert^2` at :math:`\delta = 0` (M&S 2011 §3, with a squared-error
    distance).
    """

    def __init__(self, net: Network, theta: Tensor, batch: Batch, state: Any, loss: Loss) -> None:
        per_step = net.steps_for(batch)

        def outputs(t: Tensor) -> tuple[Tensor, Tensor]:
            z, h, _ = net.run(t, batch, state, per_step)
            return z, h

        self.theta = theta.detach()
        self._outputs = outputs
        with native_kernels():
            (self.z, self.h), self._pullback = vjp(outputs, self.theta)
        # H_L u = ∂(∇_z L · u)/∂z: double backward through the loss, its graph kept (H_L is
        # symmetric, so this reverse-mode product is the forward-mode one)
        self._z = self.z.detach().requires_grad_()
        with torch.enable_grad():
            (self._loss_gradient,) = torch.autograd.grad(loss(self._z), self._z, create_graph=True)
        self.real = None  # padded batches: (B, T, 1), 1 at each sequence's real steps
        if batch.lengths is not None:
            steps = torch.arange(self.h.shape[1], device=self.h.device)
            self.real = (steps < batch.lengths.to(self.h.device).unsqueeze(1)).unsqueeze(2)
        count = self.h.shape[:-1].numel() if self.real is None else self.real.sum().item()
        self.count = max(1, int(count))  # N_h: the real steps' hidden states

    def tangents(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`(H_L J_z v, J_h v)`."""
        with native_kernels():
            _, (jz, jh) = jvp(self._outputs, (self.theta,), (v,))
        if self.real is not None:  # the padding's hidden states are no part of D
            jh = jh * self.real
        (hjz,) = torch.autograd.grad(self._loss_gradient, self._z, jz, retain_graph=True)
        return hjz, jh

    def gauss_newton(self, v: Tensor) -> Tensor:
        """:math:`G v`."""
        hjz, _ = self.tangents(v)
        return self._pullback((hjz, torch.zeros_like(self.h)))[0]

    def structural(self, v: Tensor) -> Tensor:
        """:math:`G_S v`."""
        _, jh = self.tangents(v)
        return self._pullback((torch.zeros_like(self.z), jh / self.count))[0]

    def damped(self, v: Tensor, damping: float, mu: float) -> Tensor:
        r""":math:`A v = G v + \lambda v + \lambda \mu G_S v` in one forward and one backward."""
        hjz, jh = self.tangents(v)
        if mu:
            gv = self._pullback((hjz, jh * (damping * mu / self.count)))[0]
        else:
            gv = self._pullback((hjz, torch.zeros_like(jh)))[0]
        return gv + damping * v


def fisher_diagonal(net: Network, task: Task, theta: Tensor, batch: Batch, state: Any) -> Tensor:
    r"""The diagonal of the empirical Fisher of ``batch``'s per-sequence losses
    :math:`\ell_i`: :math:`\frac1n \sum_i (\nabla \ell_i)^2`, one sequence at a time."""
    total = torch.zeros_like(theta)
    count = batch.inputs.shape[0]
    for i in range(count):
        one, one_state = head_of(batch, state, i, i + 1)
        leaf = theta.detach().requires_grad_()
        z, _, _ = net.run(leaf, one, one_state)
        (gradient,) = torch.autograd.grad(task.loss(z, one), leaf)
        total += gradient.square()
    return total / count


def head_of(batch: Batch, state: Any, start: int, stop: int) -> tuple[Batch, Any]:
    """Sequences ``start:stop`` of ``batch`` and of a carried ``state`` (tensors
    ``(layers, B, H)``, or ``(B, H)``, or tuples of them)."""

    def cut(s: Any) -> Any:
        if s is None:
            return None
        if isinstance(s, Tensor):
            return s[start:stop] if s.ndim < 3 else s[:, start:stop]
        return type(s)(cut(part) for part in s)

    lengths = None if batch.lengths is None else batch.lengths[start:stop]
    part = Batch(batch.inputs[start:stop], batch.targets[start:stop], lengths, batch.reset_state)
    return part, cut(state)


@dataclass
class CGResult:
    """What :func:`conjugate_gradient` found: the last iterate ``x`` after ``iterations``
    iterations, and the iterates ``kept`` for backtracking as ``(iteration, x_i, φ(x_i))``
    in order (the last one among them)."""

    x: Tensor
    iterations: int
    kept: list[tuple[int, Tensor, float]]


def keep_at(growth: float, most: int) -> set[int]:
    r"""The iterations :math:`\lceil \gamma^j \rceil`, :math:`j \ge 1`, up to ``most``."""
    kept, j = set(), 1
    while (i := math.ceil(growth**j)) <= most:
        kept.add(i)
        j += 1
    return kept


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor,
    precondition: Tensor | None = None,
    max_iterations: int = 250,
    tolerance: float = 5e-4,
    growth: float = 1.3,
) -> CGResult:
    r"""Preconditioned CG on :math:`\phi(x) = \tfrac12 x^\top A x - b^\top x` (``apply``:
    :math:`v \mapsto A v`, symmetric positive definite; ``precondition``: the diagonal of
    :math:`M`, or ``None``), from ``x0``.

    .. math::
        r_0 = b - A x_0,\; y_0 = M^{-1} r_0,\; p_0 = y_0; \quad
        \alpha_i = \frac{r_i^\top y_i}{p_i^\top A p_i},\;
        x_{i+1} = x_i + \alpha_i p_i,\; r_{i+1} = r_i - \alpha_i A p_i,\;
        p_{i+1} = y_{i+1} + \frac{r_{i+1}^\top y_{i+1}}{r_i^\top y_i} p_i

    with :math:`\phi(x_i) = -\tfrac12 x_i^\top (r_i + b)` for free. Martens' stopping rule
    (2010, §4.4): stop after iteration :math:`i` when, with :math:`k = \max(10, \lceil 0.1 i
    \rceil)`, :math:`i > k`, :math:`\phi_i < 0` and :math:`(\phi_i - \phi_{i-k}) / \phi_i
    < k \epsilon`; also at ``max_iterations``, at a zero residual, or when :math:`p^\top A
    p \le 0` (then :math:`x_i` is kept). Iterates are kept at :func:`keep_at` iterations
    and the last.
    """
    x = x0.clone()
    r = b - apply(x) if bool(x.any()) else b.clone()
    y = r / precondition if precondition is not None else r
    p, ry = y.clone(), r.dot(y)
    phi = [-0.5 * x.dot(r + b).item()]
    keep = keep_at(growth, max_iterations)
    kept: list[tuple[int, Tensor, float]] = []
    i = 0
    while i < max_iterations and ry.item() > 0:
        ap = apply(p)
        curvature = p.dot(ap)
        if not curvature.item() > 0:  # not positive definite along p (or NaN): stop here
            break
        alpha = ry / curvature
        x, r = x + alpha * p, r - alpha * ap
        y = r / precondition if precondition is not None else r
        ry_next = r.dot(y)
        p, ry = y + (ry_next / ry) * p, ry_next
        i += 1
        phi.append(-0.5 * x.dot(r + b).item())
        if i in keep:
            kept.append((i, x, phi[i]))
        k = max(10, math.ceil(0.1 * i))
        if i > k and phi[i] < 0 and (phi[i] - phi[i - k]) / phi[i] < k * tolerance:
            break
    if not kept or kept[-1][0] != i:
        kept.append((i, x, phi[i]))
    return CGResult(x, i, kept)


def backtrack(
    kept: list[tuple[int, Tensor, float]], f: Callable[[Tensor], float]
) -> tuple[int, float]:
    """Martens' CG backtracking (2010, §4.6): the index into ``kept`` whose iterate has the
    lowest ``f`` (the loss on the gradient batch), searching back from the last iterate and
    stopping once ``f`` rises; and that ``f``."""
    best = len(kept) - 1
    best_value = f(kept[best][1])
    for j in range(best - 1, -1, -1):
        value = f(kept[j][1])
        if not value < best_value:
            break
        best, best_value = j, value
    return best, best_value


def reduction_ratio(actual: float, predicted: float) -> float:
    r""":math:`\rho = (f(\theta + \delta) - f(\theta)) / \phi(\delta)`; ``-inf`` when the
    model predicts no decrease (:math:`\phi(\delta) \ge 0`) or the loss is not finite."""
    if not predicted < 0 or not math.isfinite(actual):
        return -math.inf
    return actual / predicted


def adjust_damping(
    damping: float, rho: float, increase: float = 1.5, decrease: float = 2 / 3
) -> float:
    r"""Levenberg-Marquardt (Martens 2010, §4.1): :math:`\lambda \cdot \tfrac32` when
    :math:`\rho < \tfrac14` (the quadratic model was too optimistic; also for a NaN
    :math:`\rho`), :math:`\lambda \cdot \tfrac23` when :math:`\rho > \tfrac34`, else
    unchanged."""
    if not rho >= 0.25:
        return damping * increase
    if rho > 0.75:
        return damping * decrease
    return damping


def line_search(
    f: Callable[[float], float],
    f0: float,
    slope: float,
    f1: float,
    c: float = 0.01,
    shrink: float = 0.8,
    tries: int = 20,
) -> tuple[float, float]:
    r"""Backtracking (Armijo) line search along :math:`\delta`: the first
    :math:`\alpha \in \{1, s, s^2, \dots, s^{\text{tries}}\}` with
    :math:`f(\theta + \alpha\delta) \le f_0 + c\,\alpha \min(g^\top\delta, 0)`, where
    ``f(α)`` evaluates the loss, ``slope`` is :math:`g^\top \delta` and ``f1`` is
    :math:`f(\theta + \delta)` (known from the backtracking). Returns :math:`(\alpha,
    f(\theta + \alpha\delta))`, or :math:`(0, f_0)` when no step decreases enough."""
    alpha, value = 1.0, f1
    for attempt in range(tries + 1):
        if attempt:
            alpha *= shrink
            value = f(alpha)
        if value <= f0 + c * alpha * min(slope, 0.0):
            return alpha, value
    return 0.0, f0


class HessianFreeUpdate(Update):
    """One Hessian-free update per loop step (module docstring); its state (λ, the last
    CG iterate, counters) is the checkpoint's ``update["hf"]``."""

    def __init__(
        self, model: SequenceModel, task: Task, settings: HessianFree, device: torch.device
    ) -> None:
        super().__init__(model)
        self.task, self.settings, self.device = task, settings, device
        whole_sequence = isinstance(model.rnn, nn.RNNBase) and device.type == "cpu"
        self.net = Network(model, per_step=not whole_sequence)
        self.damping = settings.damping
        self.previous: Tensor | None = None  # the last CG iterate of the previous update
        self.updates = 0  # HF updates made
        self.cg_iterations = 0  # CG iterations over all updates

    def step(self, batch: Batch, state: Any, step: int) -> StepResult:
        start = None if batch.reset_state else state
        with eval_mode(self.model), native_kernels():
            return self.update(batch, start, step)

    def gradient(self, theta: Tensor, batch: Batch, state: Any) -> tuple[float, Tensor, Any]:
        """:math:`f(\\theta)`, :math:`g` and the (detached) state after ``batch``."""
        leaf = theta.detach().requires_grad_()
        z, _, after = self.net.run(leaf, batch, state)
        loss = self.task.loss(z, batch)
        (gradient,) = torch.autograd.grad(loss, leaf)
        return loss.item(), gradient, detach_state(after)

    def solve(self, theta: Tensor, gradient: Tensor, batch: Batch, state: Any) -> CGResult:
        """CG on the curvature batch's damped quadratic model, preconditioned and
        warm-started (module docstring, steps 2-3)."""
        s, damping = self.settings, self.damping
        count = max(1, math.ceil(s.curvature_fraction * batch.inputs.shape[0]))
        small, small_state = head_of(batch, state, 0, count)
        curvature = Curvature(self.net, theta, small, small_state,
                              lambda z: self.task.loss(z, small))  # fmt: skip
        precondition = None
        if s.preconditioner_power:
            fisher = fisher_diagonal(self.net, self.task, theta, small, small_state)
            precondition = (fisher + damping) ** s.preconditioner_power
        start = torch.zeros_like(theta) if self.previous is None else (
            s.warm_start_decay * self.previous)  # fmt: skip
        return conjugate_gradient(
            lambda v: curvature.damped(v, damping, s.mu), -gradient, start, precondition,
            s.max_cg_iterations, s.cg_tolerance, s.keep_growth,
        )  # fmt: skip

    def update(self, batch: Batch, state: Any, step: int) -> StepResult:
        """Steps 1-6 of the module docstring on ``batch`` from the carried ``state``."""
        s, task = self.settings, self.task
        theta = self.net.vector()
        loss, gradient, after = self.gradient(theta, batch, state)
        norm = gradient.norm().item()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise RnnexpError(
                f"the loss or its gradient is not finite at step {step} (loss {loss}, gradient "
                f"norm {norm}): raise optim.damping or lower the init's scale"
            )
        solved = self.solve(theta, gradient, batch, state)
        self.previous = solved.x.detach()  # the warm start: the last iterate, not backtracked

        def f(delta: Tensor) -> float:
            return self.net.loss(task, theta + delta, batch, state)

        chosen, value = backtrack(solved.kept, f)
        used, delta, predicted = solved.kept[chosen]
        rho = reduction_ratio(value - loss, predicted)
        damping, self.damping = self.damping, adjust_damping(
            self.damping, rho, s.damping_increase, s.damping_decrease)  # fmt: skip
        alpha, _ = line_search(
            lambda a: f(a * delta), loss, gradient.dot(delta).item(), value,
            s.line_search_c, s.line_search_shrink, s.line_search_tries,
        )  # fmt: skip
        if alpha > 0:
            self.net.assign(theta + alpha * delta)
        self.updates += 1
        self.cg_iterations += solved.iterations
        scalars = {
            "hf_damping": damping,
            "hf_cg_iterations": float(solved.iterations),
            "hf_cg_used": float(used),
            "hf_model_reduction": predicted,
            "hf_step_size": alpha,
        }
        if math.isfinite(rho):
            scalars["hf_rho"] = rho
            scalars["hf_reduction"] = value - loss
        return StepResult(loss, norm, after, scalars=scalars)

    def state_dict(self) -> dict[str, Any]:
        previous = None if self.previous is None else self.previous.detach().cpu().clone()
        hf = {"damping": self.damping, "previous": previous, "updates": self.updates,
              "cg_iterations": self.cg_iterations}  # fmt: skip
        return {**super().state_dict(), "hf": hf}

    def load_state_dict(self, saved: dict[str, Any], source: str | Path) -> None:
        super().load_state_dict(saved, source)
        hf = saved.get("hf")
        if hf is None:
            raise RnnexpError(
                f"{source} holds no Hessian-free state (it was not trained with optim=hf); "
                "resume with its own optim, or start a new run with train.init_from"
            )
        like = self.net.params[0]
        previous = hf["previous"]
        self.previous = None if previous is None else previous.to(like.device, like.dtype)
        self.damping = float(hf["damping"])
        self.updates, self.cg_iterations = int(hf["updates"]), int(hf["cg_iterations"])
