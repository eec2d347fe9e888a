"""Gradient clipping, applied between ``backward()`` and ``optimizer.step()``.

Each clipper is called with the parameters and returns the global gradient norm
*before* clipping (logged as ``train/grad_norm``). A clipper with a ``grad_hook`` acts
during the backward pass instead: the loop then runs the net step by step and hooks
every hidden state ``h_t``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


def _grads(parameters: Iterable[nn.Parameter]) -> list[Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


def grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """Global L2 norm of all gradients, ``sqrt(sum_p ||g_p||^2)``."""
    return torch.nn.utils.get_total_norm(_grads(parameters))


class NoClip:
    """Leave gradients as they are."""

    grad_hook = None

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        return grad_norm(parameters)


class NormClip:
    """If ``||g|| > max_norm``: ``g <- max_norm * g / ||g||`` on the global gradient ``g``."""

    grad_hook = None

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        return torch.nn.utils.clip_grad_norm_(list(parameters), self.max_norm)


class ValueClip:
    """Clamp every gradient entry to ``[-value, value]``."""

    grad_hook = None

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        parameters = list(parameters)
        norm = grad_norm(parameters)
        torch.nn.utils.clip_grad_value_(parameters, self.value)
        return norm


class HiddenClip:
    """Mikolov 2012: clamp the gradient backpropagated into every hidden state ``h_t`` to
    ``[-value, value]``, at every step of backpropagation through time (tensor hooks).

    Parameter gradients are not touched afterwards.
    """

    def __init__(self, value: float) -> None:
        self.value = value

    def grad_hook(self, grad: Tensor) -> Tensor:
        return grad.clamp(-self.value, self.value)

    def __call__(self, parameters: Iterable[nn.Parameter]) -> Tensor:
        return grad_norm(parameters)
