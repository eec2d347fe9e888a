"""Regularizers added to the task loss: ``loss + penalty`` (``regularizer=...``).

Each is called with the task loss, the top layer's hidden states ``h_t`` as a list of
``(B, H)`` tensors from :meth:`rnnexp.model.SequenceModel.recur_steps` (``None`` when
the regularizer does not set ``needs_steps``), the model and the step. It returns the
penalty to add, or ``None`` for none.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnexp.errors import RnnexpError


class NoRegularizer:
    """No penalty."""

    needs_steps = False

    def __call__(self, loss: Tensor, steps: list[Tensor] | None, model: nn.Module, step: int):
        return None


class PascanuOmega:
    r"""Pascanu, Mikolov & Bengio 2013 (eq. 9): keep the backpropagated error's norm.

    With :math:`\delta_k = \partial L / \partial h_k` (detached) and, for an Elman net
    :math:`h_{k+1} = \phi(W_{hh} h_k + \dots)`,

    .. math::
        \Omega = \frac{1}{|K|} \sum_{k \in K} \left(
            \frac{\lVert (\delta_{k+1} \odot \phi'_{k+1}) W_{hh} \rVert^2}
                 {\lVert \delta_{k+1} \rVert^2} - 1 \right)^2

    where :math:`\phi' = 1 - h^2` (tanh) or :math:`[h > 0]` (ReLU). Only :math:`W_{hh}`
    is live; the hidden states and :math:`\delta` are constants, as in the paper. Norms
    are taken over the whole minibatch at each step. Steps with
    :math:`\lVert \delta_{k+1} \rVert^2 < 10^{-20}` are skipped (:math:`K` is the set of
    steps kept). The penalty is :math:`\alpha \Omega`, with :math:`\alpha` divided by the
    step number when ``decay`` is set (the paper's 1/t schedule).

    Args:
        alpha: weight of Ω (paper: 4; its code: 2).
        decay: divide ``alpha`` by the training step.

    Works for one-layer, one-direction Elman-type cells (``elman``, ``irnn``) with a
    square ``weight_hh_l0``. Source: R. Pascanu, T. Mikolov & Y. Bengio, "On the
    difficulty of training recurrent neural networks", ICML 2013.
    """

    needs_steps = True  # δ_k must be the total derivative through time

    def __init__(self, alpha: float = 2.0, decay: bool = False) -> None:
        self.alpha = alpha
        self.decay = decay
        self.last_value = float("nan")  # Ω at the latest step, for logging

    def omega(self, loss: Tensor, steps: list[Tensor], rnn: nn.Module) -> Tensor:
        """Ω for the hidden states ``steps`` (``h_1 .. h_T``, each ``(B, H)``)."""
        weight = getattr(rnn, "weight_hh_l0", None)
        nonlinearity = getattr(rnn, "nonlinearity", None)
        if (
            weight is None
            or weight.shape[0] != weight.shape[1]
            or getattr(rnn, "num_layers", 1) != 1
            or getattr(rnn, "bidirectional", False)
            or nonlinearity not in ("tanh", "relu")
        ):
            raise RnnexpError(
                "regularizer=pascanu needs a one-layer, one-direction Elman-type cell "
                "(cell=elman or cell=irnn, model.num_layers=1, model.bidirectional=false)"
            )
        delta = torch.stack(torch.autograd.grad(loss, steps, retain_graph=True), 1)  # (B,T,H)
        hidden = torch.stack(steps, 1).detach()
        delta, h = delta[:, 1:], hidden[:, 1:]  # δ_{k+1}, h_{k+1} for k = 1 .. T-1
        slope = 1 - h**2 if nonlinearity == "tanh" else (h > 0).to(h.dtype)
        carried = (delta * slope) @ weight  # (B, T-1, H): δ_{k+1} ∂h_{k+1}/∂h_k
        delta_sq = delta.pow(2).sum(dim=(0, 2))  # (T-1,)
        keep = delta_sq >= 1e-20
        if not keep.any():
            return weight.sum() * 0.0  # nothing to regularize; keeps the graph
        ratio = carried.pow(2).sum(dim=(0, 2))[keep] / delta_sq[keep]
        return (ratio - 1).pow(2).mean()

    def __call__(self, loss: Tensor, steps: list[Tensor], model: nn.Module, step: int) -> Tensor:
        omega = self.omega(loss, steps, model.rnn)
        self.last_value = omega.item()
        alpha = self.alpha / step if self.decay else self.alpha
        return alpha * omega
