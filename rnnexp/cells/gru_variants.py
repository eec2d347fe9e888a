"""GRU with the reset gate before the matmul (Cho et al.'s original) and the minimal
gated unit (one gate). Both need the gate before the second recurrent matmul of a step,
so they run their :meth:`LoopRNN.step` (the per-step form) under autograd on the shared
loop.
"""

from __future__ import annotations

import torch

from rnnexp.cells.loop import LoopRNN


class GruResetBefore(LoopRNN):
    r"""GRU as in Cho et al. 2014: the reset gate scales ``h_{t-1}`` *before* the matmul.
    Built by ``create("gru", reset_after=False)``.

    .. math::
        \begin{aligned}
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        u_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn}) \\
        h_t &= u_t \odot h_{t-1} + (1 - u_t) \odot n_t
        \end{aligned}

    Parameters are torch's ``nn.GRU`` ones (gate order ``r, z, n``).

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as for ``gru``.
        learn_h0, init, init_scale: see :mod:`rnnexp.cells.common`.

    Shapes: ``x`` ``(B, T, I)``, ``state`` ``(L * D, B, H)``; returns
    ``(outputs (B, T, D * H), h_n (L * D, B, H))``.

    Source: K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP 2014, eqs. 5-8.
    """

    gates = 3
    gate_names = ("reset", "update", "candidate")

    def step(self, xw_t, state, p, t):
        (h,) = state
        gate = self.gate_values(xw_t, state, p, t)
        n = gate["candidate"]
        h_new = n + gate["update"] * (h - n)
        return h_new, (h_new,)

    def gate_values(self, xw_t, state, p, t):
        (h,) = state
        hidden = self.hidden_size
        w = p["weight_hh"]
        ru = torch.sigmoid(torch.addmm(xw_t[:, : 2 * hidden], h, w[: 2 * hidden].t()))
        r, u = ru[:, :hidden], ru[:, hidden:]
        n = torch.tanh(torch.addmm(xw_t[:, 2 * hidden :], r * h, w[2 * hidden :].t()))
        return {"reset": r, "update": u, "candidate": n}


class GruMinimal(LoopRNN):
    r"""Minimal gated unit (MGU): a GRU with a single (forget) gate that plays both the
    reset and the update role. This is the published form of Zhou et al. 2016:

    .. math::
        \begin{aligned}
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        \tilde h_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (f_t \odot h_{t-1}) + b_{hn}) \\
        h_t &= (1 - f_t) \odot h_{t-1} + f_t \odot \tilde h_t
        \end{aligned}

    Parameters: ``weight_ih_l0`` ``(2H, I)``, ``weight_hh_l0`` ``(2H, H)``, ``bias_ih_l0``,
    ``bias_hh_l0`` ``(2H,)``, gate order ``(f, n)``.

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as for ``gru``.
        learn_h0, init, init_scale: see :mod:`rnnexp.cells.common`.

    Shapes: as :class:`GruResetBefore`.

    Source: G.-B. Zhou, J. Wu, C.-L. Zhang & Z.-H. Zhou, "Minimal gated unit for recurrent
    neural networks", International Journal of Automation and Computing 13(3), 2016.
    """

    gates = 2
    gate_names = ("forget", "candidate")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )

    def step(self, xw_t, state, p, t):
        (h,) = state
        gate = self.gate_values(xw_t, state, p, t)
        f = gate["forget"]
        h_new = h + f * (gate["candidate"] - h)
        return h_new, (h_new,)

    def gate_values(self, xw_t, state, p, t):
        (h,) = state
        hidden = self.hidden_size
        w = p["weight_hh"]
        f = torch.sigmoid(torch.addmm(xw_t[:, :hidden], h, w[:hidden].t()))
        n = torch.tanh(torch.addmm(xw_t[:, hidden:], f * h, w[hidden:].t()))
        return {"forget": f, "candidate": n}
