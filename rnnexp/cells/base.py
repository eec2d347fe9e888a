"""What every cell offers, and its one per-step form.

:class:`Cell` is the base of every cell (torch's fused modules in
:mod:`rnnexp.cells.torch_cells` and the hand-written :class:`rnnexp.cells.loop.LoopRNN`).
It declares, as typed attributes and methods, what the rest of rnnexp may ask of a cell:
its sizes, its state layout, its initial state (:class:`rnnexp.cells.common.InitialState`),
the first layer's recurrent matrix, the nonlinearity of Elman-type cells, and the
per-step form.

The per-step form (:meth:`Cell.unroll`) is what needs a recurrent net one step at a time:
:meth:`rnnexp.nn.model.SequenceModel.recur_steps` (every ``h_t`` of the top layer as a node of
the autograd graph, for Pascanu's Ω, hidden-gradient clipping and the gradient-flow
diagnostics) and the sampler's steppers (:mod:`rnnexp.nn.generation`, O(1) work a token).
Neither may call a fused multi-step module once per step (``nn.LSTM`` re-packs its weights
at every call: about 220 chars/s at 2 x 512 on 2 CPU cores). Each one-direction layer is
a :class:`Layer` of two plain, differentiable functions on the cell's own tensors:

* ``project(x)`` -> ``xw``: the input projection, ``(..., I)`` -> ``(..., G)``, on one step
  ``(B, I)`` or a whole sequence ``(B, T, I)`` at once (:meth:`Cell.input_projection`);
* ``step(xw_t, state, t)`` -> ``(h_t, state_t)``: the recurrence at absolute step ``t``
  (:meth:`Cell.step`); the ``h_t`` it returns is the very tensor inside ``state_t``.

A cell implements :meth:`Cell.layer_tensors` (its tensors of one layer and direction,
by base name), :meth:`Cell.prepare` (what a step reads, derived once per sequence: a
transposed weight, an effective recurrent matrix), :meth:`Cell.input_projection` and
:meth:`Cell.step`. A module that is not a :class:`Cell` gets the generic form of
:func:`unroll`: the module called on one-step sequences.

For looking inside a trained net (``rnnexp inspect``), a gated cell also names its gates:
:attr:`Cell.gate_names` (the row blocks of ``weight_hh``, in order) and
:meth:`Cell.gate_values` (their activations at one step, from the same inputs as
:meth:`Cell.step`).
:meth:`Cell.trace` runs the per-step form and records every step's gates and states, and
:meth:`Cell.recurrent_blocks` gives each gate's square block of the recurrent matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnnexp.cells.common import InitialState
from rnnexp.errors import RnnexpError

State = Tensor | tuple[Tensor, ...]  # (L * D, B, H), or a tuple of those (LSTMs: h, c)
LayerState = tuple[Tensor, ...]  # one layer's state tensors, each (B, H)


@dataclass(frozen=True)
class Layer:
    """One recurrent layer as two functions (see the module docstring)."""

    project: Callable[[Tensor], Tensor]  # x (..., I) -> xw (..., G)
    step: Callable[[Tensor, Any, int], tuple[Tensor, Any]]  # (xw_t, state, t) -> (h_t, state)


@dataclass(frozen=True)
class Unrolled:
    """A recurrent module as per-step functions: its layers, how its state splits into one
    state per layer and joins back, and the dropout between stacked layers."""

    layers: list[Layer]
    split_state: Callable[[Any, int, Tensor], list[Any]]  # (state, batch, like) -> per layer
    join_state: Callable[[list[Any]], Any]
    dropout: float = 0.0


class Cell(InitialState):
    """Base of every cell (a mixin before ``nn.Module`` or a torch RNN module).

    Attributes:
        input_size: features ``I`` of ``x_t``.
        hidden_size: units ``H`` per layer and direction.
        num_layers: stacked layers ``L``.
        bidirectional: whether each layer also runs backward (``D = 2``).
        dropout: dropout between stacked layers while training.
        n_states: state tensors per layer: 1 (``h``), 2 (``h, c``), 3 (FGR: ``h, c, a``).
        nonlinearity: ``φ`` (``"tanh"`` or ``"relu"``) of an Elman-type cell, whose step is
            ``h_t = φ(... + W_hh h_{t-1})`` (elman, irnn, jordan, clockwork); ``None``
            for gated cells and the echo-state network.
        gate_names: the names of ``weight_hh``'s row blocks in order (LSTM: ``input``,
            ``forget``, ``candidate``, ``output``), which :meth:`gate_values` also uses; ``()``
            for a cell with one block and no gates.
    """

    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    n_states: int = 1
    nonlinearity: str | None = None
    gate_names: tuple[str, ...] = ()

    # ------------------------------------------------------------ what a cell implements
    def layer_tensors(self, layer: int, direction: int) -> dict[str, Tensor]:
        """The tensors of one layer and direction by base name (``weight_ih``, ...)."""
        raise NotImplementedError

    def prepare(self, p: dict[str, Tensor]) -> dict[str, Tensor]:
        """What :meth:`step` reads, from :meth:`layer_tensors`, formed once per sequence."""
        return p

    def input_projection(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """``x`` ``(..., I)`` -> ``(..., G)``: the part of every step that does not recur."""
        raise NotImplementedError

    def step(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> tuple[Tensor, LayerState]:
        """One step: ``xw_t`` ``(B, G)``, ``state`` tuple of ``(B, H)`` -> ``(h_t, state_t)``."""
        raise NotImplementedError

    def state_sizes(self) -> list[int]:
        """Width of each state tensor (``[H]`` or ``[H, H]``; FGR adds its gate state)."""
        return [self.hidden_size] * self.n_states

    def gate_values(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> dict[str, Tensor]:
        """The gate activations that :meth:`step` computes from the same arguments, by name
        (:attr:`gate_names`), each ``(B, H)``; ``{}`` for a cell without gates. For looking
        inside a net (:meth:`trace`): neither the step nor training calls it."""
        return {}

    # ------------------------------------------------------------ what every cell gets
    def recurrent_weight_l0(self) -> Tensor | None:
        """The first layer's recurrent matrix ``weight_hh_l0`` (a parameter, or the ESN's
        buffer); ``None`` for a cell without one (jordan without backprojections)."""
        return self.layer_tensors(0, 0).get("weight_hh")

    def recurrent_blocks(self, layer: int = 0) -> dict[str, Tensor]:
        """The square ``(H, H)`` blocks of one layer's recurrent matrix (forward direction),
        detached, by gate name (:attr:`gate_names`; ``W_hh`` for a one-block matrix);
        ``{}`` for a cell without a square-block ``weight_hh``."""
        weight = self.layer_tensors(layer, 0).get("weight_hh")
        hidden = self.hidden_size
        if weight is None or weight.shape[-1] != hidden or weight.shape[0] % hidden:
            return {}
        blocks = weight.detach().split(hidden)
        names = self.gate_names
        if len(names) != len(blocks):
            names = tuple(f"block {k}" for k in range(len(blocks))) if blocks[1:] else ("W_hh",)
        return dict(zip(names, blocks, strict=True))

    @torch.no_grad()
    def trace(self, x: Tensor, state: State | None = None) -> list[dict[str, Tensor]]:
        """Run the per-step form on ``x`` ``(B, T, I)`` and record, for every layer, each
        step's gates (:meth:`gate_values`), hidden state ``h`` and, for LSTMs, cell state ``c``:
        one dict per layer of ``(B, T, H)`` tensors. Eval-mode semantics (no dropout)."""
        if self.bidirectional:
            raise RnnexpError(
                "only a one-direction net can be traced step by step; this one is "
                "bidirectional (model.bidirectional=true)"
            )
        per_layer = self.split_state(state, x.shape[0], x)
        traced = []
        for k in range(self.num_layers):
            p = self.prepare(self.layer_tensors(k, 0))
            layer_state, steps = per_layer[k], []
            for t, xw_t in enumerate(self.input_projection(x, p).unbind(1)):
                gates = self.gate_values(xw_t, layer_state, p, t)
                _, layer_state = self.step(xw_t, layer_state, p, t)
                steps.append({**gates, **dict(zip(("h", "c"), layer_state[:2], strict=False))})
            traced.append({name: torch.stack([s[name] for s in steps], 1) for name in steps[0]})
            x = traced[-1]["h"]
        return traced

    def split_state(self, state: State | None, batch: int, like: Tensor) -> list[LayerState]:
        """The cell's state (``None``: its initial state) -> one tuple of ``(B, H)`` tensors
        per layer and direction; missing state tensors (FGR's gate state) are zeros."""
        count = self.num_layers * (2 if self.bidirectional else 1)
        if state is None:
            state = self.default_state(batch, like)
        states = () if state is None else (state,) if isinstance(state, Tensor) else tuple(state)
        widths = self.state_sizes()
        out = []
        for k in range(count):
            given = [s[k] for s in states]
            given += [like.new_zeros(batch, w) for w in widths[len(given) :]]
            out.append(tuple(given))
        return out

    @staticmethod
    def join_state(layers: list[LayerState]) -> State:
        """The inverse of :meth:`split_state`: per-layer tuples -> the cell's state format."""
        joined = tuple(torch.stack(s) for s in zip(*layers, strict=True))
        return joined[0] if len(joined) == 1 else joined

    def unroll(self) -> Unrolled:
        """The per-step form of the one-direction layers (see the module docstring)."""
        if self.bidirectional:
            raise RnnexpError(
                "a bidirectional net reads the future and cannot run one step at a time; "
                "set model.bidirectional=false"
            )
        layers = [
            self._layer(self.prepare(self.layer_tensors(k, 0))) for k in range(self.num_layers)
        ]
        return Unrolled(layers, self.split_state, self.join_state, self.dropout)

    def _layer(self, p: dict[str, Tensor]) -> Layer:
        """:meth:`input_projection` and :meth:`step` bound to one layer's tensors ``p``."""

        def project(x: Tensor) -> Tensor:
            return self.input_projection(x, p)

        def step(xw_t: Tensor, state: LayerState, t: int) -> tuple[Tensor, LayerState]:
            return self.step(xw_t, state, p, t)

        return Layer(project, step)


def unroll(rnn: nn.Module) -> Unrolled:
    """The per-step form of ``rnn``: a :class:`Cell`'s own (:meth:`Cell.unroll`); for any
    other module one "layer" that calls the module on a one-step sequence and rebuilds its
    state from the top layer's ``h_t``, so that step ``t + 1`` reads that very tensor."""
    if isinstance(rnn, Cell):
        return rnn.unroll()

    def step(x_t: Tensor, state: Any, t: int) -> tuple[Tensor, Any]:
        _, state = rnn(x_t.unsqueeze(1), state)
        layers = state[0] if isinstance(state, tuple) else state  # h_n: (L, B, H)
        h_t = layers[-1]
        layers = torch.cat([layers[:-1], h_t.unsqueeze(0)], dim=0)
        return h_t, (layers, *state[1:]) if isinstance(state, tuple) else layers

    def identity(x: Tensor) -> Tensor:
        return x

    return Unrolled(
        [Layer(identity, step)],
        lambda state, batch, like: [state],
        lambda layers: layers[0],
    )
