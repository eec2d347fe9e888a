"""Elman-type cells on the shared fast path: IRNN, Jordan (with backprojections), Clockwork.

All are :class:`rnnexp.cells.loop.ElmanType`: they run
:class:`rnnexp.cells.loop.ElmanFunction` (one recurrent matmul a step, hand-written backward)
with their own effective recurrent matrix and update mask; their per-step form does the
same arithmetic one step at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rnnexp.cells.loop import ElmanType
from rnnexp.errors import RnnexpError


def _check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
    return nonlinearity


class Irnn(ElmanType):
    r"""IRNN: a ReLU Elman network whose recurrent matrix starts at the identity.

    .. math::
        h_t = \operatorname{relu}(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),
        \qquad W_{hh} = s I,\; b = 0,\; W_{ih} \sim N(0, 0.001^2) \text{ at init}

    Args:
        input_size: features ``I`` of ``x_t``.
        hidden_size: units ``H``.
        num_layers, bidirectional, dropout: as :class:`rnnexp.cells.torch_cells.Elman`.
        learn_h0: train ``h_0`` (parameter ``h0``, ``(L * D, 1, H)``).
        init: ``identity`` (default, the paper's) or any init of :mod:`rnnexp.cells.common`.
        init_scale: the identity's scale ``s`` (the paper also uses ``s < 1``, "iRNN" with
            0.01 I on some tasks); ``None``: 1.
        init_input_scale: std of ``W_ih`` (``None``: the init's own, 0.001 for identity).

    Shapes: ``x`` ``(B, T, I)``, ``state`` ``(L * D, B, H)``; returns
    ``(outputs (B, T, D * H), h_n (L * D, B, H))``.

    Source: Q. V. Le, N. Jaitly & G. E. Hinton, "A simple way to initialize recurrent
    networks of rectified linear units", arXiv:1504.00941, 2015.
    """

    nonlinearity = "relu"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        learn_h0: bool = False,
        init: str = "identity",
        init_scale: float | None = None,
        init_input_scale: float | None = None,
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale,
            init_input_scale,
        )  # fmt: skip


class Jordan(ElmanType):
    r"""Jordan network: the hidden layer sees the previous *output* ``y`` (here the cell's
    own linear readout of ``h``, ``output_size`` wide); with ``elman=True`` it also sees
    ``h_{t-1}`` ("backprojections": Jordan and Elman recurrence at once).

    .. math::
        \begin{aligned}
        y_{t-1} &= V h_{t-1} + c \\
        h_t &= \phi(W_{ih} x_t + b_{ih} + U_{y} y_{t-1} + b_{hh}
               \;[+\, W_{hh} h_{t-1}]_{\text{elman}})
        \end{aligned}

    ``y_{-1} = V h_0 + c`` is the readout of the initial state. The cell outputs ``h_t``
    (the model puts its own head on it); ``y`` is internal. Since ``U_y y_{t-1} = U_y V
    h_{t-1} + U_y c``, the fast path runs an Elman loop with ``W_eff = U_y V (+ W_hh)``.

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as for ``elman``.
        output_size: width ``O`` of the fed-back readout ``y`` (``None``: ``H``).
        elman: add the hidden recurrence ``W_hh h_{t-1}`` (backprojections).
        nonlinearity: ``φ``, ``"tanh"`` or ``"relu"``.
        learn_h0, init, init_scale, init_input_scale: see :mod:`rnnexp.cells.common`; under
            ``init="esn"`` the recurrent tensors (``U_y``, and ``W_hh`` with ``elman``) are
            sparse and scaled together so that ``W_eff`` has spectral radius ``init_scale``
            [1.1]; ``V`` keeps the cell's own ``U(-1/sqrt(H), 1/sqrt(H))``.

    Parameters per layer: ``weight_ih_l0`` ``(H, I)``, ``bias_ih_l0``, ``bias_hh_l0``
    ``(H,)``, ``weight_ho_l0`` ``V (O, H)``, ``bias_ho_l0`` ``c (O,)``, ``weight_yh_l0``
    ``U_y (H, O)``, ``weight_hh_l0`` ``(H, H)`` only with ``elman``.

    Shapes: as for ``elman``.

    Source: M. I. Jordan, "Serial order: a parallel distributed processing approach",
    ICS Report 8604, UC San Diego, 1986.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        output_size: int | None = None,
        elman: bool = False,
        nonlinearity: str = "tanh",
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
        init_input_scale: float | None = None,
    ) -> None:
        self.output_size = int(output_size or hidden_size)
        self.elman = bool(elman)
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale,
            init_input_scale,
        )  # fmt: skip

    def layer_parameters(self, layer, direction, in_size):
        hidden, out = self.hidden_size, self.output_size
        tensors = super().layer_parameters(layer, direction, in_size)
        if not self.elman:
            del tensors["weight_hh"]
        tensors.update(
            weight_ho=torch.empty(out, hidden),
            bias_ho=torch.empty(out),
            weight_yh=torch.empty(hidden, out),
        )
        return tensors

    def input_projection(self, x, p):
        bias = p["bias_ih"] + p["bias_hh"] + p["weight_yh"] @ p["bias_ho"]
        return F.linear(x, p["weight_ih"], bias)

    def recurrent_weight(self, p):
        weight = p["weight_yh"] @ p["weight_ho"]
        return weight + p["weight_hh"] if self.elman else weight


class Clockwork(ElmanType):
    r"""Clockwork RNN: ``H`` units in ``g`` modules with periods ``T_1 < ... < T_g``.

    .. math::
        h^{(i)}_t = \begin{cases}
            \phi\big(W^{(i)}_{ih} x_t + b^{(i)} + \sum_{j:\,T_j \ge T_i} W^{(ij)}_{hh}
            h^{(j)}_{t-1}\big) & t \bmod T_i = 0 \\
            h^{(i)}_{t-1} & \text{otherwise}
        \end{cases}

    ``t = 0, 1, ...`` counts the steps of the sequence (the backward direction counts from
    its own start), so every module updates at ``t = 0``. The recurrent matrix is
    block-upper-triangular in module order: slow modules feed fast ones, never the
    reverse; the masked entries of ``weight_hh`` stay in the tensor but get zero gradient.

    Args:
        input_size, hidden_size, num_layers, bidirectional, dropout: as for ``elman``.
        modules: number of modules ``g``; the units are split as evenly as possible.
        periods: the ``g`` periods (``None``: ``2^i``, ``i = 0..g-1``, the paper's choice).
        nonlinearity: ``φ``, ``"tanh"`` (paper) or ``"relu"``.
        learn_h0, init, init_scale: see :mod:`rnnexp.cells.common`.

    Shapes: as for ``elman``. Buffers: ``recurrent_mask`` ``(H, H)``, ``unit_periods``
    ``(H,)``.

    Source: J. Koutník, K. Greff, F. Gomez & J. Schmidhuber, "A Clockwork RNN", ICML 2014.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        modules: int = 4,
        periods: list[int] | None = None,
        nonlinearity: str = "tanh",
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        if init == "esn":  # its recurrence is masked by period: no one matrix to scale
            raise RnnexpError(
                "init=esn is for elman, irnn and jordan; cell=clockwork's recurrent matrix is "
                "masked by period: use init=tanh_smart (sparse, spectral radius 0.95) instead"
            )
        periods = [2**i for i in range(modules)] if periods is None else [int(p) for p in periods]
        if not periods or min(periods) < 1 or len(periods) > hidden_size:
            raise ValueError(f"need 1..{hidden_size} positive periods, got {periods}")
        self.periods = periods
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )
        sizes = [len(c) for c in torch.arange(hidden_size).tensor_split(len(periods))]
        unit_periods = torch.repeat_interleave(torch.tensor(periods), torch.tensor(sizes))
        self.register_buffer("unit_periods", unit_periods, persistent=False)
        mask = unit_periods[None, :] >= unit_periods[:, None]  # row i receives from slower j
        self.register_buffer("recurrent_mask", mask, persistent=False)

    def recurrent_weight(self, p):
        return p["weight_hh"] * self.recurrent_mask.to(p["weight_hh"].dtype)

    def update_mask(self, steps, device):
        if all(p == 1 for p in self.periods):
            return None
        t = torch.arange(steps, device=device)[:, None]
        return (t % self.unit_periods[None, :]) == 0

    def update_mask_at(self, t, device):
        if all(p == 1 for p in self.periods):
            return None
        return (t % self.unit_periods.to(device)) == 0

    def extra_repr(self) -> str:
        return super().extra_repr() + f", periods={self.periods}"
