"""Every cell as per-layer, one-step functions on its own tensors.

Two users need a recurrent net one step at a time, and neither may call a fused multi-step
module once per step (``nn.LSTM`` re-packs its weights at every call: about 220 chars/s
at 2 x 512 on 2 CPU cores, REFERENCE §4):

* sampling (:mod:`rnnexp.generation`): O(1) work per generated token, state carried;
* :meth:`rnnexp.model.SequenceModel.recur_steps`: every ``h_t`` of the top layer as a
  node of the autograd graph, for Pascanu's Ω and hidden-gradient clipping.

Each layer is a pair of plain, differentiable functions:

* ``project(x)`` -> ``xw``: the input projection, ``(..., I)`` -> ``(..., G)``; it works
  on one step ``(B, I)`` or on a whole sequence ``(B, T, I)`` at once;
* ``step(xw_t, state, t)`` -> ``(h_t, state_t)``: the recurrence, one matmul with the
  recurrent weight (transposed once, up front) and the gate arithmetic. The ``h_t`` it
  returns is the very tensor inside ``state_t``, so the next step reads that node.

torch's modules (elman, lstm, gru) get steps written here in torch's gate order; the
hand-written cells (:class:`rnnexp.cells.loop.LoopRNN`) use their own
``input_projection`` and loop on a one-step sequence. Elman-type cells (irnn, jordan,
clockwork, esn) run :func:`elman_loop` with their effective recurrent weight, formed
once, and the clock's update mask at the absolute step ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnnexp.cells.loop import LoopRNN, elman_loop

LayerState = tuple[Tensor, ...]  # one layer's state tensors, each (B, H)


@dataclass
class Layer:
    """One recurrent layer as two functions (see the module docstring)."""

    project: Callable[[Tensor], Tensor]  # x (..., I) -> xw (..., G)
    step: Callable[[Tensor, LayerState, int], tuple[Tensor, LayerState]]


def step_layers(rnn: nn.Module) -> list[Layer] | None:
    """The one-direction layers of ``rnn`` as :class:`Layer` s; ``None`` when ``rnn`` has no
    per-step form here (bidirectional, a torch module with projections or without
    biases, or an unknown module): then call the module on one step at a time."""
    if getattr(rnn, "bidirectional", False):
        return None
    if isinstance(rnn, nn.RNNBase) and rnn.mode in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"):
        if rnn.bias and not getattr(rnn, "proj_size", 0):
            return torch_layers(rnn)
        return None
    if isinstance(rnn, LoopRNN):
        return loop_layers(rnn)
    return None


def split_state(rnn: nn.Module, state: Any, batch: int, like: Tensor) -> list[LayerState]:
    """A module's state (``(L, B, H)`` or a tuple of those; ``None``: its initial state)
    -> one tuple of ``(B, H)`` tensors per layer."""
    if isinstance(rnn, LoopRNN):
        return rnn._split_state(state, like.new_empty(1, batch, 1))
    if state is None and hasattr(rnn, "default_state"):
        state = rnn.default_state(batch, like)
    if state is None:
        zeros = like.new_zeros(batch, rnn.hidden_size)
        count = 2 if getattr(rnn, "mode", "") == "LSTM" else 1
        return [(zeros,) * count for _ in range(rnn.num_layers)]
    states = (state,) if isinstance(state, Tensor) else tuple(state)
    return [tuple(s[k] for s in states) for k in range(rnn.num_layers)]


def join_state(layers: list[LayerState]) -> Tensor | tuple[Tensor, ...]:
    """The inverse of :func:`split_state`: per-layer tuples -> the module's state format."""
    joined = tuple(torch.stack(s) for s in zip(*layers, strict=True))
    return joined[0] if len(joined) == 1 else joined


def torch_layers(rnn: nn.RNNBase) -> list[Layer]:
    """Per-layer steps of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (torch's gate order), on the
    module's own weights: ``i, f, g, o`` (LSTM), ``r, z, n`` (GRU)."""
    layers = []
    for k in range(rnn.num_layers):
        w_ih, w_hh = getattr(rnn, f"weight_ih_l{k}"), getattr(rnn, f"weight_hh_l{k}")
        b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
        # Transposed once into contiguous (I, G), (H, G) copies: addmm on a contiguous
        # right operand is 1.6-1.9x faster at batch 1 than on a transposed view. The copies
        # are differentiable, so recur_steps still trains the parameters.
        w_ih_t, w_hh_t = w_ih.t().contiguous(), w_hh.t().contiguous()
        if rnn.mode == "GRU":  # b_hn sits inside r * (W_hn h + b_hn): keep b_hh apart
            project = _linear(w_ih_t, b_ih)
            step = _gru_step(w_hh_t, b_hh)
        else:
            project = _linear(w_ih_t, b_ih + b_hh)
            step = _lstm_step(w_hh_t) if rnn.mode == "LSTM" else _rnn_step(w_hh_t, rnn.mode)
        layers.append(Layer(project, step))
    return layers


def _linear(weight_t: Tensor, bias: Tensor) -> Callable[[Tensor], Tensor]:
    """``x (..., I) -> x @ weight_t + bias (..., G)``, one addmm over all leading dims."""

    def project(x: Tensor) -> Tensor:
        if x.dim() == 2:
            return torch.addmm(bias, x, weight_t)
        return torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight_t).view(*x.shape[:-1], -1)

    return project


def _lstm_step(w_hh_t: Tensor) -> Callable:
    def step(xw: Tensor, state: LayerState, t: int) -> tuple[Tensor, LayerState]:
        h, c = state
        gates = torch.addmm(xw, h, w_hh_t)  # (B, 4H): i, f, g, o
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    return step


def _gru_step(w_hh_t: Tensor, b_hh: Tensor) -> Callable:
    def step(xw: Tensor, state: LayerState, t: int) -> tuple[Tensor, LayerState]:
        (h,) = state
        gh = torch.addmm(b_hh, h, w_hh_t)  # (B, 3H): r, z, n
        x_r, x_z, x_n = xw.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(torch.addcmul(x_n, r, h_n))
        h = n + z * (h - n)
        return h, (h,)

    return step


def _rnn_step(w_hh_t: Tensor, mode: str) -> Callable:
    act = torch.relu if mode == "RNN_RELU" else torch.tanh

    def step(xw: Tensor, state: LayerState, t: int) -> tuple[Tensor, LayerState]:
        h = act(torch.addmm(xw, state[0], w_hh_t))
        return h, (h,)

    return step


def loop_layers(rnn: LoopRNN) -> list[Layer]:
    """Per-layer steps of a hand-written cell through its own code (see module docstring)."""
    layers = []
    for k in range(rnn.num_layers):
        p = rnn.layer_tensors(k, 0)

        def project(x: Tensor, p: dict[str, Tensor] = p) -> Tensor:
            return rnn.input_projection(x, p)

        if hasattr(rnn, "recurrent_weight"):  # Elman type: W_eff once, the clock's mask at t
            step = _elman_step(rnn, rnn.recurrent_weight(p))
        else:

            def step(xw: Tensor, state: LayerState, t: int, p=p) -> tuple[Tensor, LayerState]:
                hs, state = rnn.run(xw.unsqueeze(0), state, p)  # a one-step sequence
                return hs[0], tuple(state)

        layers.append(Layer(project, step))
    return layers


def _elman_step(rnn: LoopRNN, weight: Tensor) -> Callable:
    relu = getattr(rnn, "nonlinearity", "tanh") == "relu"
    leak = getattr(rnn, "leak_rate", 1.0)
    clocked = rnn.update_mask(1, weight.device) is not None  # clockwork: units update on a clock
    masks = [torch.ones(0, weight.shape[0], dtype=torch.bool)]  # steps 0..T-1, grown by doubling

    def step(xw: Tensor, state: LayerState, t: int) -> tuple[Tensor, LayerState]:
        mask = None
        if clocked:
            if len(masks[0]) <= t:
                masks[0] = rnn.update_mask(max(2 * t, 64), xw.device)
            mask = masks[0][t : t + 1]  # (1, H)
        _, h = elman_loop(xw.unsqueeze(0), state[0], weight, mask, leak, relu)
        return h, (h,)

    return step
