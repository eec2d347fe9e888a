r"""LSTM variants: peepholes, Greff et al. 2015's ablations, CIFG, the 1997 LSTM.

One implementation, :class:`LstmVariant`, with switches; each variant is a subclass that
fixes its switches (``conf/cell/<name>.yaml`` names it, with its defaults). Notation of
Greff et al. (``z`` block input, ``i, f, o`` gates, ``c`` cell, ``h`` output,
``g = h = tanh``):

.. math::
    \begin{aligned}
    z_t &= g(W_z x_t + R_z h_{t-1} + b_z) \\
    i_t &= \sigma(W_i x_t + R_i h_{t-1} + p_i \odot c_{t-1} + b_i) \\
    f_t &= \sigma(W_f x_t + R_f h_{t-1} + p_f \odot c_{t-1} + b_f) \\
    c_t &= f_t \odot c_{t-1} + i_t \odot z_t \\
    o_t &= \sigma(W_o x_t + R_o h_{t-1} + p_o \odot c_t + b_o) \\
    h_t &= o_t \odot h(c_t)
    \end{aligned}

Parameters keep torch's names and gate order ``(i, f, z, o)`` with absent gates left out:
``weight_ih_l0`` ``(G*H, I)``, ``weight_hh_l0`` ``(G*H, H)``, ``bias_ih_l0``,
``bias_hh_l0`` ``(G*H,)`` (``G`` = number of blocks), ``weight_peephole_l0`` ``(P, H)``
(rows ``p_i, p_f, p_o`` of the present gates), FGR's ``weight_gaterec_l0``
``(3H, 3H)``. With all gates, no peepholes and no gate recurrence the parameters are
exactly ``torch.nn.LSTM``'s.

Source: K. Greff, R. K. Srivastava, J. Koutník, B. R. Steunebrink & J. Schmidhuber,
"LSTM: a search space odyssey", IEEE TNNLS 2017 (arXiv:1503.04069, 2015).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from rnnexp.cells.loop import LoopRNN, _gate_slices, lstm_loop

GATE_NAMES = {"i": "input", "f": "forget", "z": "candidate", "o": "output"}


class LstmVariant(LoopRNN):
    r"""LSTM with switches for every Greff et al. 2015 variant (see the module docstring).

    Args:
        input_size: features ``I`` of ``x_t``.
        hidden_size: cells ``H``.
        num_layers, bidirectional, dropout: as for ``lstm``.
        peephole: peephole weights ``p_i, p_f, p_o`` (Greff's "vanilla" LSTM has them).
        input_gate: ``False``: ``i_t ≡ 1`` (NIG).
        forget_gate: ``False``: ``f_t ≡ 1`` (NFG; the 1997 LSTM).
        output_gate: ``False``: ``o_t ≡ 1`` (NOG).
        coupled: ``f_t = 1 - i_t`` (CIFG); needs ``input_gate``.
        input_activation: ``False``: ``g`` is the identity (NIAF).
        output_activation: ``False``: ``h`` is the identity, ``h_t = o_t ⊙ c_t`` (NOAF).
        gate_recurrence: FGR: every gate also gets ``R_{\star} a_{t-1}`` where ``a_{t-1}`` are
            the previous activations of all gates ``(i, f, o)`` (9 extra ``H x H`` blocks).
        forget_bias: initial forget-gate bias (``None``: keep the init's).
        input_bias: initial input-gate bias (``None``: keep the init's); the 1997 LSTM uses
            negative values so that cells start closed.
        learn_h0, init, init_scale: see :mod:`rnnexp.cells.common` (``learn_h0`` learns
            ``h0`` and ``c0``).

    Shapes: ``x`` ``(B, T, I)``; ``state`` ``(h_0, c_0)``, each ``(L * D, B, H)``; returns
    ``(outputs (B, T, D * H), (h_n, c_n))``. FGR also carries the gate activations:
    its state is ``(h, c, a)`` with ``a`` ``(L * D, B, 3H)`` (a 2-tuple state is accepted,
    ``a_{-1} = 0``).
    """

    n_states = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        peephole: bool = True,
        input_gate: bool = True,
        forget_gate: bool = True,
        output_gate: bool = True,
        coupled: bool = False,
        input_activation: bool = True,
        output_activation: bool = True,
        gate_recurrence: bool = False,
        forget_bias: float | None = 1.0,
        input_bias: float | None = None,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        if coupled and not input_gate:
            raise ValueError("coupled (CIFG) needs the input gate")
        has_f = bool(forget_gate) and not coupled
        self.layout = (
            bool(input_gate),
            has_f,
            bool(output_gate),
            bool(coupled),
            bool(input_activation),
            bool(output_activation),
        )
        self.peephole = bool(peephole)
        self.gate_recurrence = bool(gate_recurrence)
        self.gates = 1 + sum(self.layout[:3])
        self.n_sig = sum(self.layout[:3])  # gates with their own sigmoid
        self.n_states = 3 if self.gate_recurrence else 2
        self.gate_names = tuple(GATE_NAMES[n] for n in _gate_slices(self.layout, 1))
        self.forget_bias = forget_bias if has_f else None
        self.input_bias = input_bias if input_gate else None
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )

    def layer_parameters(self, layer, direction, in_size):
        tensors = super().layer_parameters(layer, direction, in_size)
        hidden = self.hidden_size
        if self.peephole and self.n_sig:
            tensors["weight_peephole"] = torch.empty(self.n_sig, hidden)
        if self.gate_recurrence and self.n_sig:
            tensors["weight_gaterec"] = torch.empty(self.n_sig * hidden, self.n_sig * hidden)
        return tensors

    def state_sizes(self):
        sizes = [self.hidden_size] * 2
        return sizes + [self.n_sig * self.hidden_size] if self.gate_recurrence else sizes

    def reset_parameters(self) -> None:
        super().reset_parameters()
        slices = _gate_slices(self.layout, self.hidden_size)
        with torch.no_grad():
            for name, param in self.named_parameters():
                for gate, value in (("f", self.forget_bias), ("i", self.input_bias)):
                    if value is not None and name.startswith("bias_"):
                        param[slices[gate]] = value if name.startswith("bias_ih") else 0.0

    # --------------------------------------------------------------- forward
    def run(self, xw, state, p):
        peep, layout = p.get("weight_peephole"), self.layout
        if self.gate_recurrence:
            return lstm_loop(
                xw, *state[:2], p["weight_hh"], peep, layout, p["weight_gaterec"], state[2]
            )
        return lstm_loop(xw, state[0], state[1], p["weight_hh"], peep, layout)

    def step(self, xw_t, state, p, t):
        h_new, new_state, _ = self._step(xw_t, state, p)
        return h_new, new_state

    def gate_values(self, xw_t, state, p, t):
        """The step's gates by name; CIFG also reports its coupled ``forget = 1 - input``."""
        return self._step(xw_t, state, p)[2]

    def _step(self, xw_t, state, p):
        """One step: ``(h_t, state_t, the gate activations by name)``."""
        has_i, has_f, has_o, cifg, act_z, act_h = self.layout
        sl = _gate_slices(self.layout, self.hidden_size)
        h, c = state[0], state[1]
        a = xw_t + h @ p["weight_hh"].t()
        sig_names = [n for n, present in (("i", has_i), ("f", has_f), ("o", has_o)) if present]
        pre = {n: a[:, sl[n]] for n in sl}
        if self.gate_recurrence and sig_names:
            rec = state[2] @ p["weight_gaterec"].t()
            for k, n in enumerate(sig_names):
                pre[n] = pre[n] + rec[:, k * self.hidden_size : (k + 1) * self.hidden_size]
        peep = (
            dict(zip(sig_names, p["weight_peephole"].unbind(0), strict=True))
            if self.peephole
            else {}
        )
        i = torch.sigmoid(pre["i"] + peep["i"] * c if "i" in peep else pre["i"]) if has_i else None
        if has_f:
            f = torch.sigmoid(pre["f"] + peep["f"] * c if "f" in peep else pre["f"])
        else:
            f = 1.0 - i if cifg else None
        z = torch.tanh(pre["z"]) if act_z else pre["z"]
        c_new = (c if f is None else f * c) + (z if i is None else i * z)
        if has_o:
            o = torch.sigmoid(pre["o"] + peep["o"] * c_new if "o" in peep else pre["o"])
        h_new = torch.tanh(c_new) if act_h else c_new
        if has_o:
            h_new = o * h_new
        new_state = (h_new, c_new)
        acts = {"i": i, "f": f, "z": z, "o": o if has_o else None}
        if self.gate_recurrence:
            new_state += (torch.cat([acts[n] for n in sig_names], dim=1),)
        gates = {GATE_NAMES[n]: a for n, a in acts.items() if isinstance(a, torch.Tensor)}
        return h_new, new_state, gates


_SOURCE = """

    Source: K. Greff et al., "LSTM: a search space odyssey", IEEE TNNLS 2017
    (arXiv:1503.04069); peepholes: F. Gers & J. Schmidhuber, IJCNN 2000.
"""
_VANILLA = r"""
    .. math::
        \begin{aligned}
        z_t &= \tanh(W_z x_t + R_z h_{t-1} + b_z) \\
        i_t &= \sigma(W_i x_t + R_i h_{t-1} + p_i \odot c_{t-1} + b_i) \\
        f_t &= \sigma(W_f x_t + R_f h_{t-1} + p_f \odot c_{t-1} + b_f) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot z_t \\
        o_t &= \sigma(W_o x_t + R_o h_{t-1} + p_o \odot c_t + b_o) \\
        h_t &= o_t \odot \tanh(c_t)
        \end{aligned}

    Args and shapes: see :class:`LstmVariant`; the other switches are fixed.
"""


class _ForgetGateVariant(LstmVariant):
    """A variant with a forget gate: options ``peephole`` and ``forget_bias``."""

    switches: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        peephole: bool = True,
        forget_bias: float | None = 1.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, peephole=peephole,
            forget_bias=forget_bias, learn_h0=learn_h0, init=init, init_scale=init_scale,
            **self.switches,
        )  # fmt: skip


class _NoForgetGateVariant(LstmVariant):
    """A variant without a forget gate of its own: options ``peephole`` and ``input_bias``."""

    switches: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        peephole: bool = True,
        input_bias: float | None = None,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, peephole=peephole,
            input_bias=input_bias, learn_h0=learn_h0, init=init, init_scale=init_scale,
            **self.switches,
        )  # fmt: skip


class LstmPeephole(_ForgetGateVariant):
    __doc__ = "Peephole LSTM, Greff et al.'s *vanilla* LSTM:\n" + _VANILLA + _SOURCE


class LstmCifg(_NoForgetGateVariant):
    __doc__ = (
        "CIFG: vanilla LSTM with the forget gate coupled to the input gate, "
        "``f_t = 1 - i_t`` (no forget-gate weights, no ``p_f``):\n" + _VANILLA + _SOURCE
    )
    switches = {"coupled": True}


class LstmNig(_ForgetGateVariant):
    __doc__ = (
        "NIG: vanilla LSTM with ``i_t ≡ 1`` (no input-gate weights, no ``p_i``):\n"
        + _VANILLA + _SOURCE
    )  # fmt: skip
    switches = {"input_gate": False}


class LstmNfg(_NoForgetGateVariant):
    __doc__ = (
        "NFG: vanilla LSTM with ``f_t ≡ 1`` (no forget-gate weights, no ``p_f``):\n"
        + _VANILLA + _SOURCE
    )  # fmt: skip
    switches = {"forget_gate": False}


class LstmNog(_ForgetGateVariant):
    __doc__ = (
        "NOG: vanilla LSTM with ``o_t ≡ 1`` (no output-gate weights, no ``p_o``):\n"
        + _VANILLA + _SOURCE
    )  # fmt: skip
    switches = {"output_gate": False}


class LstmNiaf(_ForgetGateVariant):
    __doc__ = (
        "NIAF: vanilla LSTM whose block input has no ``tanh``, "
        "``z_t = W_z x_t + R_z h_{t-1} + b_z``:\n" + _VANILLA + _SOURCE
    )
    switches = {"input_activation": False}


class LstmNoaf(_ForgetGateVariant):
    __doc__ = (
        "NOAF: vanilla LSTM without the output ``tanh``, ``h_t = o_t ⊙ c_t``:\n"
        + _VANILLA + _SOURCE
    )  # fmt: skip
    switches = {"output_activation": False}


class LstmFgr(_ForgetGateVariant):
    __doc__ = (
        "FGR: vanilla LSTM whose gates also receive the previous activations of all gates,\n"
        "    ``a_t = [i_t, f_t, o_t]``, through ``weight_gaterec`` ``(3H, 3H)`` (Greff's 9 extra\n"
        "    matrices): each gate pre-activation gains ``R^{g}_{\\star} a_{t-1}``.\n"
        + _VANILLA + _SOURCE
    )  # fmt: skip
    switches = {"gate_recurrence": True}


class Lstm1997(LstmVariant):
    r"""The original LSTM (no forget gate, no peepholes), input-gate biases initialised
    negative (``input_bias``; the paper staggers -1, -2, ... over memory blocks) so cells
    start closed:

    .. math::
        \begin{aligned}
        i_t &= \sigma(W_i x_t + R_i h_{t-1} + b_i) &
        z_t &= \tanh(W_z x_t + R_z h_{t-1} + b_z) \\
        c_t &= c_{t-1} + i_t \odot z_t &
        o_t &= \sigma(W_o x_t + R_o h_{t-1} + b_o) \\
        h_t &= o_t \odot \tanh(c_t)
        \end{aligned}

    The paper squashes ``z`` to ``[-2, 2]`` and ``h(c)`` to ``[-1, 1]`` with scaled sigmoids;
    here both are ``tanh``. Args and shapes: see :class:`LstmVariant`.

    Source: S. Hochreiter & J. Schmidhuber, "Long short-term memory", Neural Computation
    9(8), 1997.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        peephole: bool = False,
        input_bias: float | None = -1.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, peephole=peephole,
            forget_gate=False, input_bias=input_bias, learn_h0=learn_h0, init=init,
            init_scale=init_scale,
        )  # fmt: skip
