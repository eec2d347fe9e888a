"""Elman-type cells on the shared fast path: IRNN, Jordan (with backprojections), Clockwork.

All run :class:`rnnexp.cells.loop.ElmanFunction` (one recurrent matmul a step, hand-written
backward); :meth:`step` is the plain reference used when ``use_fused`` is off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnexp.cells import register
from rnnexp.cells.loop import LoopRNN, elman_loop


class _ElmanLike(LoopRNN):
    """``h_t = m_t ⊙ φ(xw_t + W_eff h_{t-1}) + (1 - m_t) ⊙ h_{t-1}`` with cell-specific
    ``W_eff`` (:meth:`recurrent_weight`) and update mask ``m_t`` (:meth:`update_mask`)."""

    nonlinearity = "tanh"

    def recurrent_weight(self, p: dict[str, Tensor]) -> Tensor:
        return p["weight_hh"]

    def update_mask(self, steps: int, device: torch.device) -> Tensor | None:
        return None

    def _phi(self, a: Tensor) -> Tensor:
        return torch.relu(a) if self.nonlinearity == "relu" else torch.tanh(a)

    def run(self, xw, state, p):
        weight = self.recurrent_weight(p)
        mask = self.update_mask(xw.shape[0], xw.device)
        if not self.use_fused:
            self._weight, self._mask = weight, mask
            return super().run(xw, state, p)
        hs, h_n = elman_loop(xw, state[0], weight, mask, 1.0, self.nonlinearity == "relu")
        return hs, (h_n,)

    def step(self, xw_t, state, p, t):
        (h,) = state
        h_new = self._phi(xw_t + h @ self._weight.t())
        if self._mask is not None:
            h_new = torch.where(self._mask[t], h_new, h)
        return h_new, (h_new,)


def _check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}")
    return nonlinearity


@register(
    "irnn",
    summary="h_t = relu(W x_t + U h_{t-1} + b), U = I, b = 0 at init",
    source="Le, Jaitly & Hinton 2015, A simple way to initialize recurrent networks of ReLUs",
)
class Irnn(_ElmanLike):
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
    ) -> None:
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )


@register(
    "jordan",
    summary="h_t = φ(W x_t + U_y y_{t-1} [+ U h_{t-1}] + b), y_t = V h_t + c",
    source="Jordan 1986, Serial order: a parallel distributed processing approach",
)
class Jordan(_ElmanLike):
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
        learn_h0, init, init_scale: see :mod:`rnnexp.cells.common`.

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
    ) -> None:
        self.output_size = int(output_size or hidden_size)
        self.elman = bool(elman)
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )

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


@register(
    "clockwork",
    summary="module i: h^i_t = tanh(W^i x_t + Σ_{T_j≥T_i} U^{ij} h^j_{t-1}) if t mod T_i = 0",
    source="Koutník, Greff, Gomez & Schmidhuber 2014, A Clockwork RNN",
)
class Clockwork(_ElmanLike):
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

    def extra_repr(self) -> str:
        return super().extra_repr() + f", periods={self.periods}"
