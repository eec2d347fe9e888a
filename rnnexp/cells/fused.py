"""The small-net kernel: an Elman loop whose backward pass also computes Pascanu's Ω.

At the sizes of the classic long-lag experiments (50 units, batch 20, 100-200 steps) a
training step is hundreds of tiny matmuls and elementwise ops, and eager PyTorch spends
its time dispatching them, not computing (REFERENCE.md §4). :class:`ElmanOmega` runs the
recurrence with the fewest ops a step that eager PyTorch allows -- two forward (``addmm``,
the nonlinearity in place), two backward (an ``addmm`` that also adds the head's
gradient, one ``mul``) -- and no autograd bookkeeping inside the loop. On a CPU the two
elementwise ops go through NumPy on the same memory (its ``tanh`` is 4-5x faster than
torch's at these sizes), and a :class:`Workspace` keeps the buffers and their per-step
views from one training step to the next. Its backward pass
has what the step-by-step path (:meth:`rnnexp.nn.model.SequenceModel.recur_steps`) builds
a graph node per step for:

* the total derivatives ``δ_t = ∂L/∂h_t``, and a hook on each (hidden-state gradient
  clipping, Mikolov 2012), applied where autograd would apply a tensor hook on ``h_t``;
* Pascanu's Ω (:class:`rnnexp.train.regularizers.PascanuOmega`) and its gradient, from
  the ``δ_t`` and the carried errors ``δ_t ∂h_t/∂h_{t-1}`` that the loop computes anyway,
  as the paper's own code does: no extra pass, and the gradient of ``α Ω`` joins the
  recurrent weight's gradient in the same matmul.

:class:`rnnexp.train.fast.FastPath` puts it in the training step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

TINY_DELTA = 1e-20  # Ω skips the (sequence, step) pairs with ||δ||² below this


@dataclass
class Record:
    """What :class:`ElmanOmega`'s backward pass leaves behind (detached, time-major):
    ``delta`` ``(T, B, H)``, the ``δ_t`` (after the hook, if any), and ``omega``, Ω (a
    scalar tensor; ``None`` without Ω). Both ``None`` until the backward pass ran. With a
    :class:`Workspace`, ``delta`` is its buffer: valid until the next forward pass."""

    delta: Tensor | None = None
    omega: Tensor | None = None


class ElmanOmega(torch.autograd.Function):
    r"""One Elman layer with a hand-written backward that also gives Pascanu's Ω.

    .. math::
        h_t = \phi(xw_t + W h_{t-1}), \qquad t = 1 \dots T, \qquad
        \phi = \tanh \text{ or ReLU}

    Args (of :meth:`forward`):
        xw: ``(T, B, H)``, the input projection ``W_ih x_t + b`` of every step.
        h0: ``(B, H)``, the initial state.
        weight: ``(H, H)``, the recurrent matrix ``W``.
        relu: ``φ`` is ReLU (else tanh).
        hook: called on every ``δ_t`` ``(B, H)`` in the backward pass; its result (if not
            ``None``) replaces ``δ_t``, as a tensor hook on ``h_t`` would.
        alpha: the weight of Ω, whose gradient the backward pass adds to ``W``'s: the
            gradient is that of ``L + α Ω``; ``None``: no Ω.
        record: a :class:`Record` that the backward pass fills in, or ``None``.
        workspace: a :class:`Workspace` whose buffers to use (and leave ``hs`` in), or
            ``None``: new buffers.

    Returns ``hs`` ``(T, B, H)``, the states ``h_1 .. h_T``.

    Backward, with ``g_t`` the gradient reaching ``h_t`` from outside the recurrence (the
    head) and ``φ'_t = 1 - h_t^2`` (tanh) or ``[h_t > 0]`` (ReLU):

    .. math::
        \delta_T = g_T, \qquad a_t = \delta_t \odot \phi'_t, \qquad
        c_t = a_t W, \qquad \delta_{t-1} = g_{t-1} + c_t, \qquad
        \frac{\partial L}{\partial W} = \sum_t a_t^\top h_{t-1}

    ``c_t = δ_t ∂h_t/∂h_{t-1}`` is the error carried one step back. With Ω, on the pairs
    ``K`` of sequence ``b`` and step ``t`` with ``s_t = ||δ_t||² >= 1e-20`` and
    ``r_t = ||c_t||² / s_t``:

    .. math::
        \Omega = \frac{1}{|K|} \sum_{K} (r_t - 1)^2, \qquad
        \frac{\partial (L + \alpha\Omega)}{\partial W} = \sum_t a_t^\top
            \Big(h_{t-1} + \frac{4 \alpha (r_t - 1)}{|K|\, s_t} [K]\, c_t\Big)

    one ``(H, T B) @ (T B, H)`` matmul after the loop. The ``c_t`` are the loop's own
    ``δ_{t-1} - g_{t-1}`` (taken before the hook), and ``c_1 = ∂L/∂h_0``.
    """

    @staticmethod
    def forward(ctx, xw, h0, weight, relu, hook, alpha, record, workspace):
        steps, hidden = xw.shape[0], weight.shape[0]
        hs, views, arrays = buffer(workspace, "hs", steps + 1, xw, hidden)  # h_0 .. h_T
        hs[0].copy_(h0)  # first: h0 may be a row of the workspace's hs (a carried state)
        hs[1:].copy_(xw)  # then W h_{t-1} is added in place: no copy inside the loop
        wt = weight.t()
        h = views[0]
        if relu:
            for h_t in views[1:]:
                h_t.addmm_(h, wt)  # (B, H): xw_t + W h_{t-1}
                h_t.relu_()
                h = h_t
        else:
            tanh, arrays = (torch.tanh, views) if arrays is None else (np.tanh, arrays)
            for h_t, y_t in zip(views[1:], arrays[1:], strict=True):
                h_t.addmm_(h, wt)
                tanh(y_t, out=y_t)  # h_t's memory, as a NumPy array on a CPU
                h = h_t
        ctx.save_for_backward(hs, weight)
        ctx.relu, ctx.hook, ctx.alpha = relu, hook, alpha
        ctx.record, ctx.workspace = record, workspace
        return hs[1:]

    @staticmethod
    def backward(ctx, grad_hs):
        hs, weight = ctx.saved_tensors
        hook, alpha, record, workspace = ctx.hook, ctx.alpha, ctx.record, ctx.workspace
        after = hs[1:]  # (T, B, H)
        steps, hidden = after.shape[0], after.shape[-1]
        if grad_hs is None:
            grad_hs = torch.zeros_like(after)
        # φ'_t: [h_t > 0], or 1 - h_t^2 as Ω's reference computes it; multiplied by δ_t
        # in place in the loop: a_t, the gradient of xw_t
        # (from the workspace: xw's gradient reaches only the input projection's backward,
        # which makes new tensors of it, never a parameter's .grad)
        carried, slopes, slope_arrays = buffer(workspace, "carried", steps, after, hidden)
        if ctx.relu:
            torch.gt(after, 0, out=carried)
        else:
            torch.mul(after, after, out=carried).neg_().add_(1.0)
        # δ_t before the hook: g_t to start with (contiguous (T, B, H), whatever the
        # layout of the head's gradient), then a_{t+1} W is added in place
        raw, raws, raw_arrays = buffer(workspace, "raw", steps, after, hidden)
        multiply = torch.mul if raw_arrays is None else np.multiply
        raw_arrays, slope_arrays = raw_arrays or raws, slope_arrays or slopes
        raw.copy_(grad_hs)
        raws, slopes = raws[::-1], slopes[::-1]  # t = T .. 1
        if hook is None:
            delta = raw
            a_next = slopes[0].mul_(raws[0])  # a_T = g_T ⊙ φ'_T
            for r, s, r_a, s_a in zip(raws[1:], slopes[1:], raw_arrays[-2::-1],
                                      slope_arrays[-2::-1], strict=True):  # fmt: skip
                r.addmm_(a_next, weight)  # δ_t = g_t + a_{t+1} W
                multiply(s_a, r_a, out=s_a)  # a_t = δ_t ⊙ φ'_t, in s's memory
                a_next = s
        else:
            delta, deltas, _ = buffer(workspace, "delta", steps, after, hidden)
            a_next = None
            for r, s, d in zip(raws, slopes, deltas[::-1], strict=True):
                if a_next is not None:
                    r.addmm_(a_next, weight)  # g_t + a_{t+1} W
                hooked = hook(r)
                d.copy_(r if hooked is None else hooked)  # δ_t
                a_next = s.mul_(d)
        grad_h0 = carried[0].mm(weight)  # (B, H): c_1
        right = hs[:-1]  # (T, B, H): h_{t-1}
        omega = None
        if alpha is not None:
            # c_t = a_t W: c_1 = ∂L/∂h_0, and c_t = δ_{t-1} - g_{t-1} from the loop
            jumps, _, _ = buffer(workspace, "jumps", steps, after, hidden)
            jumps[0].copy_(grad_h0)
            torch.sub(raw[:-1], grad_hs[:-1], out=jumps[1:])
            omega, scale = omega_terms(delta, jumps, alpha)
            right = torch.addcmul(right, jumps, scale.unsqueeze(-1), out=jumps)
        flat = carried.view(-1, hidden)  # (T B, H)
        grad_w = flat.t().mm(right.reshape(-1, hidden))  # Σ_t a_t^T (h_{t-1} + ...): (H, H)
        if record is not None:
            record.delta, record.omega = delta, omega
        return carried, grad_h0, grad_w, None, None, None, None, None


def omega_terms(delta: Tensor, jumps: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Ω and the factor ``4 α (r_t - 1) / (|K| s_t)`` (0 off ``K``) of each pair, from
    ``delta`` ``δ_t`` and ``jumps`` ``c_t``, both ``(T, B, H)``; see :class:`ElmanOmega`.
    Returns ``(Ω (), scale (T, B))``."""
    delta_sq = torch.linalg.vecdot(delta, delta)  # (T, B): s_t
    keep = delta_sq >= TINY_DELTA
    kept = keep.sum().clamp_min(1)  # |K| (no pair kept: Ω = 0, no gradient)
    safe = torch.where(keep, delta_sq, 1.0)
    excess = torch.where(keep, torch.linalg.vecdot(jumps, jumps) / safe - 1, 0.0)  # r_t - 1
    omega = excess.pow(2).sum() / kept
    scale = excess * (4.0 * alpha) / (kept * safe)
    return omega, scale


class Workspace:
    """The buffers of :class:`ElmanOmega` kept from one call to the next, so that a training
    loop allocates them, and splits them into per-step views (a dispatch per view: about
    0.2 ms a step at T=100), once rather than at every step.

    Each buffer is ``(T, B, H)`` for the longest ``T`` seen so far; a shorter sequence uses
    its first ``T`` rows. What :class:`ElmanOmega` hands out of it (the states ``hs``, the
    gradient of ``xw``, :attr:`Record.delta`) is valid until its next forward pass with
    the same workspace: autograd refuses to use the previous call's output after that (its
    base was modified in place), so a stale backward pass raises, never a wrong gradient.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, tuple[Tensor, Steps, Steps | None]] = {}

    def take(
        self, name: str, steps: int, like: Tensor, hidden: int
    ) -> tuple[Tensor, Steps, Steps | None]:
        """Buffer ``name`` as :func:`buffer` makes it, of ``steps`` rows."""
        batch = like.shape[-2]
        base, views, arrays = self.buffers.get(name, (None, (), None))
        if (
            base is None
            or base.shape[0] < steps
            or base.shape[1:] != (batch, hidden)
            or base.dtype != like.dtype
            or base.device != like.device
        ):
            base, views, arrays = buffer(None, name, steps, like, hidden)
            self.buffers[name] = base, views, arrays
        return base[:steps], views[:steps], None if arrays is None else arrays[:steps]


Steps = tuple[Any, ...]  # one view per step: (B, H) tensors, or NumPy arrays


def buffer(
    workspace: Workspace | None, name: str, steps: int, like: Tensor, hidden: int
) -> tuple[Tensor, Steps, Steps | None]:
    """A buffer ``(steps, B, H)`` (``B``, dtype and device of ``like``'s; contents
    undefined), its ``steps`` views ``(B, H)``, and the same views as NumPy arrays where
    the buffer is a float32/float64 CPU tensor (else ``None``): the loops apply
    their elementwise ops through NumPy there, whose ``tanh`` took 0.7 µs on a ``(20,
    50)`` block against torch's 3.2-4.7 (and ``multiply`` 0.55 against ``mul_``'s 1.0).
    From ``workspace`` when there is one (:meth:`Workspace.take`)."""
    if workspace is not None:
        return workspace.take(name, steps, like, hidden)
    base = like.new_empty(steps, like.shape[-2], hidden)
    views = base.unbind(0)
    numpy = base.device.type == "cpu" and base.dtype in (torch.float32, torch.float64)
    return base, views, tuple(base.numpy()) if numpy else None


def elman_omega(
    xw: Tensor,
    h0: Tensor,
    weight: Tensor,
    relu: bool = False,
    hook: Callable[[Tensor], Tensor | None] | None = None,
    alpha: float | None = None,
    record: Record | None = None,
    workspace: Workspace | None = None,
) -> Tensor:
    """Run :class:`ElmanOmega`: ``xw`` ``(T, B, H)``, ``h0`` ``(B, H)``, ``weight``
    ``(H, H)`` -> ``hs`` ``(T, B, H)``."""
    return ElmanOmega.apply(xw, h0, weight, bool(relu), hook, alpha, record, workspace)
