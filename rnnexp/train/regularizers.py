"""Regularizers added to the task loss: ``loss + penalty`` (``regularizer=...``).

Each owns the backward pass: ``backward(loss, steps, model, step)`` leaves the gradient
of ``loss + penalty`` in the parameters' ``.grad``. ``steps`` are the top layer's hidden
states ``h_t``, a list of ``(B, H)`` tensors from
:meth:`rnnexp.nn.model.SequenceModel.recur_steps` (``None`` when the regularizer does not
set ``needs_steps``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnexp.cells.base import Cell
from rnnexp.errors import RnnexpError


class NoRegularizer:
    """No penalty."""

    needs_steps = False

    def backward(self, loss: Tensor, steps: list[Tensor] | None, model: nn.Module, step: int):
        loss.backward()

    def logged(self) -> dict[str, float]:
        """Values to log after each step as ``train/<name>``: none."""
        return {}


class PascanuOmega:
    r"""Pascanu, Mikolov & Bengio 2013 (eq. 9): keep the backpropagated error's norm.

    With :math:`\delta_k = \partial L / \partial h_k` (detached) and, for an Elman net
    :math:`h_k = \phi(W_{hh} h_{k-1} + \dots)`,

    .. math::
        \Omega = \frac{1}{|K|} \sum_{(b, k) \in K} \left(
            \frac{\lVert (\delta^b_k \odot \phi'^b_k) W_{hh} \rVert^2}
                 {\lVert \delta^b_k \rVert^2} - 1 \right)^2

    where :math:`\phi' = 1 - h^2` (tanh) or :math:`[h > 0]` (ReLU), and
    :math:`(\delta_k \odot \phi'_k) W_{hh} = \delta_k\, \partial h_k / \partial h_{k-1}`
    carries the error one step back. Only :math:`W_{hh}` is live; the hidden states and
    :math:`\delta` are constants, as in the paper. As in the paper's code, each sequence
    ``b`` of the minibatch has its own ratio, every step ``k = 1 .. T`` counts (the last
    carries the error back to the initial state), and pairs with
    :math:`\lVert \delta^b_k \rVert^2 < 10^{-20}` are skipped (:math:`K` is the set
    kept). The penalty is :math:`\alpha \Omega`, with :math:`\alpha` divided by the
    step number when ``decay`` is set (the paper's 1/t schedule).

    Args:
        alpha: weight of Ω (paper: 4; its code: 2).
        decay: divide ``alpha`` by the training step.

    Works for one-layer, one-direction Elman-type cells (``elman``, ``irnn``) with a
    square ``weight_hh_l0``. Source: R. Pascanu, T. Mikolov & Y. Bengio, "On the
    difficulty of training recurrent neural networks", ICML 2013; code:
    github.com/pascanur/trainingRNNs (``RNN.py``).
    """

    needs_steps = True  # δ_k must be the total derivative through time

    def __init__(self, alpha: float = 2.0, decay: bool = False) -> None:
        self.alpha = alpha
        self.decay = decay
        self.last_value = float("nan")  # Ω at the latest step, for logging

    def logged(self) -> dict[str, float]:
        """Ω at the latest step, logged as ``train/omega``."""
        return {"omega": self.last_value}

    @staticmethod
    def recurrence(rnn: nn.Module) -> tuple[Tensor, str]:
        """``rnn``'s ``W_hh`` and nonlinearity; a one-line error for other cells."""
        cell = rnn if isinstance(rnn, Cell) else None
        weight = None if cell is None else cell.recurrent_weight_l0()
        nonlinearity = None if cell is None else cell.nonlinearity
        if (
            cell is None
            or weight is None
            or weight.shape[0] != weight.shape[1]
            or cell.num_layers != 1
            or cell.bidirectional
            or nonlinearity not in ("tanh", "relu")
        ):
            raise RnnexpError(
                "regularizer=pascanu needs a one-layer, one-direction Elman-type cell "
                "(cell=elman or cell=irnn, model.num_layers=1, model.bidirectional=false)"
            )
        return weight, str(nonlinearity)

    def omega(self, delta: Tensor, hidden: Tensor, rnn: nn.Module) -> Tensor:
        """Ω from ``delta`` = ``∂L/∂h_t`` and the hidden states ``h_t``, both ``(B, T, H)``."""
        weight, nonlinearity = self.recurrence(rnn)
        delta, h = delta.detach(), hidden.detach()
        slope = 1 - h**2 if nonlinearity == "tanh" else (h > 0).to(h.dtype)
        carried = (delta * slope) @ weight  # (B, T, H): δ_k ∂h_k/∂h_{k-1}, live in W_hh
        delta_sq = delta.pow(2).sum(2)  # (B, T)
        keep = delta_sq >= 1e-20
        if not keep.any():
            return weight.sum() * 0.0  # nothing to regularize; keeps the graph
        ratio = carried.pow(2).sum(2)[keep] / delta_sq[keep]
        return (ratio - 1).pow(2).mean()

    def backward(self, loss: Tensor, steps: list[Tensor], model: nn.Module, step: int) -> None:
        """One backward pass through time for ``loss``, then Ω's small graph on top.

        Hooks on the ``h_t`` record ``δ_t`` as the loss's backward pass goes by, so the
        sequence is back-propagated once (``autograd.grad`` for ``δ`` followed by
        ``(loss + αΩ).backward()`` would do it twice). Ω's gradient, through ``W_hh``
        only, is then added to the parameters' ``.grad``.
        """
        self.recurrence(model.rnn)  # a gated cell fails before any work
        deltas: list[Tensor | None] = [None] * len(steps)

        def keeper(t: int):
            def keep(grad: Tensor) -> None:
                deltas[t] = grad

            return keep

        handles = [h.register_hook(keeper(t)) for t, h in enumerate(steps) if h.requires_grad]
        try:
            loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        with torch.no_grad():  # constants of Ω: (B, T, H) each
            hidden = torch.stack(steps, 1)
            delta = torch.stack([torch.zeros_like(h) if d is None else d
                                 for d, h in zip(deltas, steps, strict=True)], 1)  # fmt: skip
        # a step the loss does not reach has δ = 0, and Ω skips it
        omega = self.omega(delta, hidden, model.rnn)
        self.last_value = omega.item()
        alpha = self.alpha / step if self.decay else self.alpha
        (alpha * omega).backward()
