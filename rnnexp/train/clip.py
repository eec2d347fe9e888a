"""Gradient clipping, applied between ``backward()`` and ``optimizer.step()``.

Each clipper is called with the parameters and returns the global gradient norm
*before* clipping (logged as ``train/grad_norm``). A clipper with a ``grad_hook`` acts
during the backward pass instead: the loop then runs the net step by step and hooks
every hidden state ``h_t``. After clipping, the update asks :meth:`Clipper.fallback_step`
whether the step's gradient is to be replaced because its norm cannot be trusted
(``clip=norm clip.fallback=0.02``, the rule of Pascanu 2013's code); every other clipper
says no, and a NaN/inf step is left to ``train.on_nan``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from rnnexp.errors import RnnexpError

RECURRENT_WEIGHT = "weight_hh"  # torch's name of a recurrent matrix: weight_hh_l{k}{_reverse}


def _grads(parameters: Iterable[nn.Parameter]) -> list[Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


def grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """Global L2 norm of all gradients, ``sqrt(sum_p ||g_p||^2)``."""
    return total_norm(_grads(parameters))


def total_norm(grads: list[Tensor]) -> Tensor:
    """``torch.nn.utils.get_total_norm(grads)``, the same ops, without its regrouping of
    the tensors by device and dtype at every call where they share one: on a small net
    (issue 23) the grouping took as long as the arithmetic."""
    if not grads or any(g.device != grads[0].device or g.dtype != grads[0].dtype for g in grads):
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


class Clipper:
    """The clipping protocol; this base leaves gradients as they are."""

    grad_hook = None

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        return grad_norm(parameters)

    def fallback_step(self, model: nn.Module, norm: float) -> bool:
        """Replace the gradients in ``model``'s ``.grad`` when ``norm`` (the global norm
        before clipping; NaN when the loss was not finite) cannot be trusted, and say
        whether it did. Only :class:`NormClip` with ``fallback`` ever does."""
        del model, norm
        return False


class NoClip(Clipper):
    """Leave gradients as they are."""


class NormClip(Clipper):
    r"""If ``||g|| > max_norm``: ``g <- max_norm * g / ||g||`` on the global gradient ``g``
    (Pascanu 2013, Algorithm 1).

    With ``fallback`` (off by default), the rule of the paper's code (``RNN.py``,
    ``clipstyle='rescale'``) for a norm that float32 cannot be trusted with: when
    ``||g||`` is NaN or inf (also when the loss is), or above ``fallback_above``
    (1e10), the step's gradient becomes

    .. math::
        g_{W_{hh}} = \text{fallback} \cdot W_{hh}, \qquad g_\theta = 0 \text{ otherwise}

    so that plain SGD shrinks the recurrent matrix, ``W_hh <- (1 - lr fallback) W_hh``
    (the code: ``fallback = 0.02``, lr 0.01), and leaves every other parameter. Recurrent
    matrices are the parameters named ``weight_hh_l*`` (a cell without one, e.g. jordan,
    takes a zero step). The optimizer then steps as usual.

    Args:
        max_norm: the clipping threshold (the paper: 1).
        fallback: the factor of ``W_hh`` that replaces an untrusted gradient (the code:
            0.02), or ``None``: no fallback (such a step is left to ``train.on_nan``).
        fallback_above: a finite norm above this is untrusted too (the code: 1e10).
    """

    def __init__(
        self, max_norm: float, fallback: float | None = None, fallback_above: float = 1e10
    ) -> None:
        if not max_norm > 0:
            raise RnnexpError(f"clip.max_norm={max_norm} must be > 0")
        if fallback is not None and not fallback >= 0:
            raise RnnexpError(f"clip.fallback={fallback} must be >= 0 (the code's: 0.02), or null")
        if not fallback_above > 0:
            raise RnnexpError(
                f"clip.fallback_above={fallback_above} must be > 0 (the code's: 1e10)"
            )
        self.max_norm, self.fallback, self.fallback_above = max_norm, fallback, fallback_above

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        # torch.nn.utils.clip_grad_norm_'s arithmetic, op for op, with total_norm's shortcut
        grads = _grads(parameters)
        norm = total_norm(grads)
        if grads:
            torch._foreach_mul_(grads, torch.clamp(self.max_norm / (norm + 1e-6), max=1.0))
        return norm

    def fallback_step(self, model: nn.Module, norm: float) -> bool:
        if self.fallback is None or (math.isfinite(norm) and norm <= self.fallback_above):
            return False
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                if name.rpartition(".")[2].startswith(RECURRENT_WEIGHT):
                    p.grad = self.fallback * p.detach()
                else:
                    p.grad = torch.zeros_like(p)
        return True


class ValueClip(Clipper):
    """Clamp every gradient entry to ``[-value, value]``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        parameters = list(parameters)
        norm = grad_norm(parameters)
        torch.nn.utils.clip_grad_value_(parameters, self.value)
        return norm


class HiddenClip(Clipper):
    """Mikolov 2012: clamp the gradient backpropagated into every hidden state ``h_t`` to
    ``[-value, value]``, at every step of backpropagation through time (tensor hooks).

    Parameter gradients are not touched afterwards.
    """

    def __init__(self, value: float) -> None:
        self.value = value

    def grad_hook(self, grad: Tensor) -> Tensor:
        return grad.clamp(-self.value, self.value)
