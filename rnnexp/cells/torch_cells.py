"""Elman, LSTM and GRU on torch's fused kernels (oneDNN on CPU, cuDNN on GPU).

Each class subclasses the matching ``torch.nn`` module with ``batch_first=True``, so the
parameters, their names and gate layout are torch's own and a ``torch.nn.RNN/LSTM/GRU``
state dict loads unchanged. ``forward`` is torch's fused kernel; :meth:`step` (the per-step
form, :mod:`rnnexp.cells.base`) writes the same recurrence in torch's gate order.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnexp.cells.base import Cell, LayerState, State
from rnnexp.cells.common import apply_init, check_init


class FusedCell(Cell):
    """What elman, lstm and gru add to their torch module: the common options (``init``,
    ``init_scale``, ``init_input_scale``, ``learn_h0``), ``forward(x, state=None)``, which
    starts from the learned initial state when there is one, and the per-step form."""

    n_states = 1  # h (2 for LSTMs: h and c)

    def _setup(
        self,
        init: str,
        init_scale: float | None,
        learn_h0: bool,
        init_input_scale: float | None = None,
    ) -> None:
        self.init = check_init(init)
        apply_init(self, init, init_scale, self.hidden_size, input_scale=init_input_scale)
        directions = 2 if self.bidirectional else 1
        self._init_state(learn_h0, self.n_states, (self.num_layers * directions, self.hidden_size))

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.default_state(x.shape[0], x)
        return super().forward(x, state)

    def layer_tensors(self, layer: int, direction: int) -> dict[str, Tensor]:
        suffix = f"_l{layer}{'_reverse' if direction else ''}"
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return {n: getattr(self, n + suffix) for n in names}  # as torch's _flat_weights

    def prepare(self, p: dict[str, Tensor]) -> dict[str, Tensor]:
        # Transposed once into contiguous (I, G), (H, G) copies: addmm on a contiguous
        # right operand is 1.6-1.9x faster at batch 1 than on a transposed view. The copies
        # are differentiable, so recur_steps still trains the parameters.
        return {
            "weight_ih_t": p["weight_ih"].t().contiguous(),
            "weight_hh_t": p["weight_hh"].t().contiguous(),
            "bias": p["bias_ih"] + p["bias_hh"],
        }

    def input_projection(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """``x (..., I) -> x W_ih^T + b (..., G)``, one addmm over all leading dims."""
        if x.dim() == 2:
            return torch.addmm(p["bias"], x, p["weight_ih_t"])
        flat = torch.addmm(p["bias"], x.reshape(-1, x.shape[-1]), p["weight_ih_t"])
        return flat.view(*x.shape[:-1], -1)


class Elman(FusedCell, nn.RNN):
    r"""Elman ("simple") recurrent network.

    .. math::
        h_t = \phi(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}), \qquad \phi = \tanh
        \text{ or ReLU}

    Args:
        input_size: features ``I`` of ``x_t``.
        hidden_size: units ``H`` of ``h_t``.
        num_layers: stacked layers; layer ``l > 0`` takes layer ``l - 1``'s outputs.
        bidirectional: add a backward direction; outputs are ``2H`` wide.
        dropout: dropout on each layer's outputs except the last.
        nonlinearity: ``"tanh"`` or ``"relu"``.
        learn_h0: train the initial state ``h_0`` (a parameter ``h0`` of shape
            ``(L * D, 1, H)``, zero at start) instead of using zeros.
        init: weight init, see :mod:`rnnexp.cells.common`: ``default`` (torch's uniform),
            ``orthogonal``, ``identity``, ``xavier``, ``normal``, and Pascanu et al. 2013's
            ``sigmoid_small`` (``N(0, 0.01^2)``), ``tanh_basic`` (``N(0, 0.1^2)``),
            ``tanh_smart`` (``W_ih`` ``N(0, 0.01^2)``, ``W_hh`` 15 non-zeros a row at
            spectral radius 0.95), and Sutskever et al. 2013's ``esn`` (``W_ih``
            ``N(0, 0.001^2)``, ``W_hh`` 15 non-zeros a row at spectral radius 1.1).
        init_scale: gain / std / radius of ``init`` (``None``: the init's default).
        init_input_scale: std of ``W_ih`` under the inits that draw it from a normal
            (``None``: the init's own; Sutskever et al. use 0.1 on memorization).

    Shapes: ``x`` ``(B, T, I)``; ``state`` ``(L * D, B, H)``; returns
    ``(outputs (B, T, D * H), h_n (L * D, B, H))``.

    Source: J. L. Elman, "Finding structure in time", Cognitive Science 14, 1990.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
        init_input_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity=nonlinearity,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self._setup(init, init_scale, learn_h0, init_input_scale)

    def step(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> tuple[Tensor, LayerState]:
        pre = torch.addmm(xw_t, state[0], p["weight_hh_t"])
        h = torch.relu(pre) if self.nonlinearity == "relu" else torch.tanh(pre)
        return h, (h,)


class Lstm(FusedCell, nn.LSTM):
    r"""Long short-term memory with a forget gate, torch's gate order ``(i, f, g, o)``.

    .. math::
        \begin{aligned}
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t)
        \end{aligned}

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as :class:`Elman`.
        forget_bias: initial value of ``b_if`` (``b_hf`` starts at 0). Jozefowicz et al. 2015
            found a forget-gate bias of 1 closes most of the gap between LSTM and GRU;
            ``None`` keeps the init's bias.
        learn_h0, init, init_scale: as :class:`Elman` (``learn_h0`` learns ``h0`` and ``c0``).

    Shapes: ``x`` ``(B, T, I)``; ``state`` ``(h_0, c_0)``, each ``(L * D, B, H)``; returns
    ``(outputs (B, T, D * H), (h_n, c_n))``.

    Source: S. Hochreiter & J. Schmidhuber, "Long short-term memory", Neural Computation
    1997; forget gate: F. Gers, J. Schmidhuber & F. Cummins, 2000.
    """

    n_states = 2
    gate_names = ("input", "forget", "candidate", "output")  # i, f, g, o

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        forget_bias: float | None = 1.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self._setup(init, init_scale, learn_h0)
        self.forget_bias = forget_bias
        if forget_bias is not None:
            set_gate_bias(self, gate=1, value=forget_bias)  # gate order i, f, g, o

    def step(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> tuple[Tensor, LayerState]:
        h, c = state
        i, f, g, o = self._activations(xw_t, h, p)
        c = torch.addcmul(f * c, i, g)
        h = o * torch.tanh(c)
        return h, (h, c)

    def gate_values(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> dict[str, Tensor]:
        return dict(zip(self.gate_names, self._activations(xw_t, state[0], p), strict=True))

    @staticmethod
    def _activations(xw_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """``i, f, g, o`` after their nonlinearities, each ``(B, H)``: what :meth:`step`
        combines and :meth:`gate_values` reports."""
        i, f, g, o = torch.addmm(xw_t, h, p["weight_hh_t"]).chunk(4, dim=1)  # (B, 4H)
        return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


def set_gate_bias(module: nn.Module, gate: int, value: float) -> None:
    """Start one gate's bias at ``value``: ``b_ih`` of that gate = ``value``, ``b_hh`` = 0.

    ``gate`` indexes torch's stacked gate order (LSTM ``i, f, g, o``; GRU ``r, z, n``), in
    every layer and direction. Used for the LSTM forget-gate bias and the GRU update-gate
    bias, which set how long the cell keeps its state at the start of training.
    """
    hidden = module.hidden_size
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.startswith("bias_"):
                chunk = param[gate * hidden : (gate + 1) * hidden]
                chunk.fill_(value if name.startswith("bias_ih") else 0.0)


class Gru(FusedCell, nn.GRU):
    r"""Gated recurrent unit, torch's form (reset gate applied after the matmul).

    .. math::
        \begin{aligned}
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr}) \\
        u_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz}) \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn})) \\
        h_t &= u_t \odot h_{t-1} + (1 - u_t) \odot n_t
        \end{aligned}

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as :class:`Elman`.
        learn_h0, init, init_scale: as :class:`Elman`.

    The update-gate bias is set by :func:`gru` (``update_bias``).

    Shapes: as :class:`Elman`.

    Source: K. Cho et al., "Learning phrase representations using RNN encoder-decoder for
    statistical machine translation", EMNLP 2014.
    """

    gate_names = ("reset", "update", "candidate")  # r, z (u above), n

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
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self._setup(init, init_scale, learn_h0)

    def prepare(self, p: dict[str, Tensor]) -> dict[str, Tensor]:
        prepared = super().prepare(p)  # b_hn sits inside r * (W_hn h + b_hn): keep b_hh apart
        return {**prepared, "bias": p["bias_ih"], "bias_hh": p["bias_hh"]}

    def step(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> tuple[Tensor, LayerState]:
        (h,) = state
        _, z, n = self._activations(xw_t, h, p)
        h = n + z * (h - n)
        return h, (h,)

    def gate_values(
        self, xw_t: Tensor, state: LayerState, p: dict[str, Tensor], t: int
    ) -> dict[str, Tensor]:
        return dict(zip(self.gate_names, self._activations(xw_t, state[0], p), strict=True))

    @staticmethod
    def _activations(xw_t: Tensor, h: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """``r, z, n``, each ``(B, H)``: what :meth:`step` combines and :meth:`gate_values`
        reports."""
        gh = torch.addmm(p["bias_hh"], h, p["weight_hh_t"])  # (B, 3H): r, z, n
        (x_r, x_z, x_n), (h_r, h_z, h_n) = xw_t.chunk(3, dim=1), gh.chunk(3, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        return r, z, torch.tanh(torch.addcmul(x_n, r, h_n))


def gru(
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    reset_after: bool = True,
    update_bias: float | None = None,
    learn_h0: bool = False,
    init: str = "default",
    init_scale: float | None = None,
) -> Cell:
    r"""GRU: torch's fused :class:`Gru` (``reset_after=True``) or Cho et al.'s original form
    :class:`rnnexp.cells.gru_variants.GruResetBefore` (``reset_after=False``), where the
    reset gate multiplies ``h_{t-1}`` before the recurrent matmul:

    .. math::
        n_t = \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn})

    Both take the same parameters (torch's names and gate order ``r, z, n``), so state
    dicts move between them.

    ``update_bias``: initial value of ``b_iz`` (``b_hz`` starts at 0); ``None`` keeps the
    init's bias. A large value (e.g. 3-5) starts every unit near ``u = 1``, copying its
    state forward: the GRU counterpart of a large LSTM forget-gate bias, which long-lag
    tasks such as ``task=latch`` at ``task.lag >= 100`` need (Tallec & Ollivier 2018,
    "Can recurrent neural networks warp time?", give the rule ``b ~ log U(1, T_max - 1)``).
    Other args: as :class:`Gru`. ``conf/cell/gru.yaml`` targets this function.
    """
    options = dict(dropout=dropout, learn_h0=learn_h0, init=init, init_scale=init_scale)
    if reset_after:
        cell: Cell = Gru(input_size, hidden_size, num_layers, bidirectional, **options)
    else:
        from rnnexp.cells.gru_variants import GruResetBefore

        cell = GruResetBefore(input_size, hidden_size, num_layers, bidirectional, **options)
    if update_bias is not None:
        set_gate_bias(cell, gate=1, value=update_bias)  # gate order r, z, n
    return cell
