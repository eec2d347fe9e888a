"""Gradient-flow diagnostics: how the error signal ||∂L/∂h_t|| changes with t.

Bengio et al. 1994 and Pascanu et al. 2013 explain the difficulty of long lags by the
backpropagated error shrinking (vanishing) or growing (exploding) geometrically as it
travels back through time. This module measures it on a fixed held-out batch at each
evaluation: the norm of ∂L/∂h_t of the top layer's hidden states for every t, and the
spectral radius and norm of the first layer's recurrent matrix (the factor the
linearized error is multiplied by at each step).
"""

from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import Tensor

from rnnexp import plots
from rnnexp.cells.base import Cell
from rnnexp.nn.model import SequenceModel
from rnnexp.tasks.base import Batch, Task, eval_mode


def error_flow(model: SequenceModel, task: Task, batch: Batch, device: torch.device) -> Tensor:
    """``||∂L/∂h_t||`` for every step ``t`` (norm over the batch and the units), ``(T,)``.

    ``∂L/∂h_t`` is the total derivative through time, from a step-by-step run. (Cells
    whose update depends on the absolute step, such as ``clockwork``, restart their
    clock at every call, so their picture is only indicative.)"""
    batch = batch.to(device)
    # eval mode: no dropout, so the picture is not noisy. cuDNN computes RNN gradients only
    # in training mode; the native kernels do it always.
    inputs = batch.inputs
    if inputs.is_floating_point():  # a net of fixed weights (esn) has a graph through x_t
        inputs = inputs.detach().requires_grad_(True)
    with eval_mode(model), torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
        hidden, _, steps = model.recur_steps(inputs)  # h_t as graph nodes
        loss = task.loss(model.readout(hidden, batch.lengths), batch)
        grads = torch.autograd.grad(loss, steps)  # total derivatives through time
    return torch.stack([g.norm() for g in grads]).cpu()


def recurrent_spectrum(rnn: torch.nn.Module) -> dict[str, float]:
    """Spectral norm of ``weight_hh_l0``, and its spectral radius when it is square
    (nothing for a module that is not a cell, or a cell without one)."""
    weight = rnn.recurrent_weight_l0() if isinstance(rnn, Cell) else None
    if weight is None:
        return {}
    weight = weight.detach().float().cpu()
    stats = {"spectral_norm": torch.linalg.matrix_norm(weight, ord=2).item()}
    if weight.shape[0] == weight.shape[1]:
        stats["spectral_radius"] = torch.linalg.eigvals(weight).abs().max().item()
    return stats


def flow_figure(norms: Tensor, title: str) -> Figure:
    """``||∂L/∂h_t||`` against ``t`` on a log scale: the vanishing/exploding picture."""
    fig, (ax,) = plots.new_figure(rows=1, width=8.0, row_height=3.2)
    ax.semilogy(torch.arange(1, len(norms) + 1), norms.clamp(min=1e-30), color="tab:red")
    ax.set_xlabel("time step t")
    ax.set_ylabel("||∂L/∂h_t||")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def diagnose(
    model: SequenceModel, task: Task, batch: Batch, device: torch.device, title: str
) -> tuple[dict[str, float], Figure]:
    """Scalars to log (error ratio first/last step, spectral stats) and the figure."""
    norms = error_flow(model, task, batch, device)
    stats = recurrent_spectrum(model.rnn)
    last = norms[-1].item()
    stats["error_first_over_last"] = norms[0].item() / last if last > 0 else float("nan")
    return stats, flow_figure(norms, title)
