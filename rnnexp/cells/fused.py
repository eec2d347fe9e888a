"""The small-net kernel: an Elman loop whose backward pass also computes Pascanu's Ω.

At the sizes of the classic long-lag experiments (50 units, batch 20, 100-200 steps) a
training step is hundreds of tiny matmuls and elementwise ops, and eager PyTorch spends
its time dispatching them, not computing (REFERENCE.md §4). :class:`ElmanOmega` runs the
recurrence with the fewest ops a step that eager PyTorch allows -- two forward (``addmm``,
the nonlinearity in place), two backward (an ``addmm`` that also adds the head's
gradient, one ``mul``) -- and no autograd bookkeeping inside the loop. Its backward pass
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

import torch
from torch import Tensor

TINY_DELTA = 1e-20  # Ω skips the (sequence, step) pairs with ||δ||² below this


@dataclass
class Record:
    """What :class:`ElmanOmega`'s backward pass leaves behind (detached, time-major):
    ``delta`` ``(T, B, H)``, the ``δ_t`` (after the hook, if any), and ``omega``, Ω (a
    scalar tensor; ``None`` without Ω). Both ``None`` until the backward pass ran."""

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
    def forward(ctx, xw, h0, weight, relu, hook, alpha, record):
        steps, batch = xw.shape[0], xw.shape[1]
        hs = xw.new_empty(steps + 1, batch, weight.shape[0])  # h_0 .. h_T
        hs[0].copy_(h0)
        hs[1:].copy_(xw)  # then W h_{t-1} is added in place: no copy inside the loop
        wt = weight.t()
        act = torch.relu_ if relu else torch.tanh_
        h = hs[0]
        for h_t in hs[1:].unbind(0):
            h_t.addmm_(h, wt)  # (B, H): xw_t + W h_{t-1}
            act(h_t)
            h = h_t
        ctx.save_for_backward(hs, weight)
        ctx.relu, ctx.hook, ctx.alpha, ctx.record = relu, hook, alpha, record
        return hs[1:]

    @staticmethod
    def backward(ctx, grad_hs):
        hs, weight = ctx.saved_tensors
        hook, alpha, record = ctx.hook, ctx.alpha, ctx.record
        after = hs[1:]  # (T, B, H)
        if grad_hs is None:
            grad_hs = torch.zeros_like(after)
        # φ'_t: [h_t > 0], or 1 - h_t^2 as Ω's reference computes it
        slope = (after > 0).to(after.dtype) if ctx.relu else 1 - after * after
        # δ_t before the hook: g_t to start with (contiguous (T, B, H), whatever the
        # layout of the head's gradient), then a_{t+1} W is added in place
        raw = torch.empty_like(after).copy_(grad_hs)
        carried = slope  # φ'_t, multiplied by δ_t in place: a_t
        # per-step views made once: indexing inside the loop costs a dispatch per index
        raws, slopes = raw.unbind(0)[::-1], slope.unbind(0)[::-1]  # t = T .. 1
        if hook is None:
            delta = raw
            a_next = slopes[0].mul_(raws[0])  # a_T = g_T ⊙ φ'_T
            for r, s in zip(raws[1:], slopes[1:], strict=True):
                r.addmm_(a_next, weight)  # δ_t = g_t + a_{t+1} W
                a_next = s.mul_(r)  # a_t = δ_t ⊙ φ'_t
        else:
            delta = torch.empty_like(after)
            a_next = None
            for r, s, d in zip(raws, slopes, delta.unbind(0)[::-1], strict=True):
                if a_next is not None:
                    r.addmm_(a_next, weight)  # g_t + a_{t+1} W
                hooked = hook(r)
                d.copy_(r if hooked is None else hooked)  # δ_t
                a_next = s.mul_(d)
        hidden = hs.shape[-1]
        grad_h0 = carried[0].mm(weight)  # (B, H): c_1
        right = hs[:-1]  # (T, B, H): h_{t-1}
        omega = None
        if alpha is not None:
            # c_t = a_t W: c_1 = ∂L/∂h_0, and c_t = δ_{t-1} - g_{t-1} from the loop
            jumps = torch.empty_like(after)  # (T, B, H)
            jumps[0].copy_(grad_h0)
            torch.sub(raw[:-1], grad_hs[:-1], out=jumps[1:])
            omega, scale = omega_terms(delta, jumps, alpha)
            right = torch.addcmul(right, jumps, scale.unsqueeze(-1))
        flat = carried.view(-1, hidden)  # (T B, H)
        grad_w = flat.t().mm(right.reshape(-1, hidden))  # Σ_t a_t^T (h_{t-1} + ...): (H, H)
        if record is not None:
            record.delta, record.omega = delta, omega
        return carried, grad_h0, grad_w, None, None, None, None


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


def elman_omega(
    xw: Tensor,
    h0: Tensor,
    weight: Tensor,
    relu: bool = False,
    hook: Callable[[Tensor], Tensor | None] | None = None,
    alpha: float | None = None,
    record: Record | None = None,
) -> Tensor:
    """Run :class:`ElmanOmega`: ``xw`` ``(T, B, H)``, ``h0`` ``(B, H)``, ``weight``
    ``(H, H)`` -> ``hs`` ``(T, B, H)``."""
    return ElmanOmega.apply(xw, h0, weight, bool(relu), hook, alpha, record)
