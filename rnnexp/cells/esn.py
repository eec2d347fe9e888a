"""Echo-state network (fixed random reservoir) and its closed-form ridge readout."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnexp.cells.common import apply_init, spectral_radius
from rnnexp.cells.loop import ElmanType
from rnnexp.errors import RnnexpError

TOPOLOGIES = ("random", "delay_lines")


class EchoState(ElmanType):
    r"""Echo-state network: a fixed sparse random reservoir with leaky tanh units.

    .. math::
        x_t = (1 - a)\, x_{t-1} + a \tanh(W_{in} u_t + W x_{t-1} + b)

    ``W_in`` (``weight_ih_l0``) is dense ``U(-s_in, s_in)``; ``W`` (``weight_hh_l0``) has
    a fraction ``connectivity`` of ``U(-1, 1)`` entries and is rescaled to spectral radius
    ``ρ``; ``b`` (``bias_ih_l0``) is ``U(-s_b, s_b)``, ``bias_hh_l0`` 0. All four are
    *buffers*: they are saved with the model but never trained, so with the model's
    linear head only the readout learns (by gradient descent, or in closed form with
    :func:`ridge_readout`). Stacked layers are stacked reservoirs (deep ESN); the backward
    direction is a second reservoir on the reversed sequence.

    ``topology="delay_lines"`` replaces the random ``W`` by ``ceil(H / n)`` parallel delay
    lines of ``n = line_length`` units each (the last one shorter when ``n`` does not
    divide ``H``): unit ``k > 0`` of a line reads only unit ``k - 1``
    of the same line, with weight ``r = line_weight``, and only the first unit of each line
    reads the input (``W_in`` and ``b`` are zero elsewhere):

    .. math::
        x_t^{(j, 0)} = \tanh(w_j^\top u_t + b_j), \qquad
        x_t^{(j, k)} = \tanh(r\, x_{t-1}^{(j, k - 1)}) \quad (k = 1 \dots n - 1)

    (with ``leak_rate=1``). So the reservoir holds, for each of the last ``n`` steps, ``H/n``
    random nonlinear features of that step's input, and the linear readout sees them all:
    a target that is a sum over delays of a nonlinear function of each delayed input (the
    Jaeger timer: "on while the start lies fewer than ``round(D u_2)`` steps back") is
    within its reach, which a random reservoir's fading mixture is not (timer NRMSE 0.13
    against 0.30, ``tasks/timer/README.md``). ``W`` is nilpotent, so the echo-state
    property holds for any ``r``; ``spectral_radius`` and ``connectivity`` are unused. The
    delay-line reservoir is Rodan & Tiňo's (2011); their DLR feeds the input to every unit,
    which on the timer drowns the start pulse in the noise of ``u_2`` (NRMSE 0.45-0.70), so
    here it enters at the head of each line, as in a tapped delay line.

    Args:
        input_size: features ``I`` of ``u_t``.
        hidden_size: reservoir units ``H``.
        num_layers, bidirectional, dropout: as for ``elman``.
        spectral_radius: ``ρ``, the largest ``|eigenvalue|`` of ``W`` (echo-state property
            usually needs ``ρ`` near or below 1; 0.9-1.25 are common).
        leak_rate: ``a`` in ``(0, 1]`` (1: no leak).
        input_scaling: ``s_in``.
        connectivity: fraction of non-zero entries of ``W``.
        bias_scaling: ``s_b`` (0: no bias).
        topology: ``random`` (the sparse reservoir) or ``delay_lines`` (see above).
        line_length: ``n``, units per delay line (``delay_lines``).
        line_weight: ``r``, the weight from one unit of a line to the next.
        learn_h0: train ``x_0`` (the only gradient-trained tensor of the cell).
        init: ``default`` is the sparse reservoir above; any other init of
            :mod:`rnnexp.cells.common` sets ``W_in``, ``W`` and ``b`` instead, and ``W`` is
            then rescaled to ``spectral_radius``.
        init_scale: scale of a non-default init.

    Shapes: ``x`` ``(B, T, I)``, ``state`` ``(L * D, B, H)``; returns
    ``(states (B, T, D * H), x_n (L * D, B, H))``.

    Source: H. Jaeger, "The 'echo state' approach to analysing and training recurrent neural
    networks", GMD Report 148, 2001; leaky units: Jaeger, Lukoševičius, Popovici & Siewert,
    Neural Networks 20(3), 2007; ridge readout: M. Lukoševičius, "A practical guide to
    applying echo state networks", 2012; delay-line reservoirs: A. Rodan & P. Tiňo,
    "Minimum complexity echo state network", IEEE Trans. Neural Networks 22(1), 2011.
    """

    fixed_buffers = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        spectral_radius: float = 0.9,
        leak_rate: float = 1.0,
        input_scaling: float = 1.0,
        connectivity: float = 0.1,
        bias_scaling: float = 0.0,
        topology: str = "random",
        line_length: int = 20,
        line_weight: float = 1.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
    ) -> None:
        if not 0.0 < leak_rate <= 1.0:
            raise RnnexpError(f"cell.leak_rate={leak_rate} must be in (0, 1]")
        if not 0.0 < connectivity <= 1.0:
            raise RnnexpError(f"cell.connectivity={connectivity} must be in (0, 1]")
        if topology not in TOPOLOGIES:
            raise RnnexpError(f"cell.topology={topology!r}; choose one of: {', '.join(TOPOLOGIES)}")
        if line_length < 1:
            raise RnnexpError(f"cell.line_length={line_length} must be >= 1")
        self.topology = topology
        self.line_length = int(line_length)
        self.line_weight = float(line_weight)
        self.spectral_radius = float(spectral_radius)
        self.leak_rate = float(leak_rate)
        self.input_scaling = float(input_scaling)
        self.connectivity = float(connectivity)
        self.bias_scaling = float(bias_scaling)
        super().__init__(
            input_size, hidden_size, num_layers, bidirectional, dropout, learn_h0, init, init_scale
        )

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name, buf in self.named_buffers():
                if name.startswith("weight_ih"):
                    buf.uniform_(-self.input_scaling, self.input_scaling)
                elif name.startswith("weight_hh"):
                    values = torch.empty_like(buf).uniform_(-1.0, 1.0)
                    keep = torch.rand_like(buf) < self.connectivity
                    buf.copy_(values * keep)
                elif name.startswith("bias_ih"):
                    buf.uniform_(-self.bias_scaling, self.bias_scaling)
                elif name.startswith("bias_hh"):
                    buf.zero_()
            apply_init(self, self.init, self.init_scale, self.hidden_size, include_buffers=True)
            for name, buf in self.named_buffers():
                if name.startswith("weight_hh"):
                    if self.topology == "delay_lines":
                        buf.copy_(delay_lines(self.hidden_size, self.line_length, self.line_weight))
                    else:
                        rho = spectral_radius(buf)
                        if rho > 0:
                            buf.mul_(self.spectral_radius / rho)
                elif self.topology == "delay_lines" and name.startswith(("weight_ih", "bias_ih")):
                    buf[line_heads(self.hidden_size, self.line_length).logical_not()] = 0.0

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", spectral_radius={self.spectral_radius}, leak_rate={self.leak_rate}"
            + (f", delay lines of {self.line_length}" if self.topology == "delay_lines" else "")
        )


def line_heads(hidden_size: int, line_length: int) -> Tensor:
    """``(H,)`` bool: the first unit of each delay line (units ``0, n, 2n, ...``)."""
    return torch.arange(hidden_size) % line_length == 0


def delay_lines(hidden_size: int, line_length: int, weight: float) -> Tensor:
    """``(H, H)`` recurrent matrix of delay lines of ``n`` units: ``W[i, i - 1] = weight``
    unless unit ``i`` heads a line (``i % n == 0``), all other entries 0."""
    index = torch.arange(1, hidden_size)
    matrix = torch.zeros(hidden_size, hidden_size)
    matrix[index, index - 1] = weight
    matrix[line_heads(hidden_size, line_length)] = 0.0  # a head reads the input, not a unit
    return matrix


def ridge_readout(states: Tensor, targets: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    r"""Closed-form linear readout by ridge regression (Tikhonov), with a bias column.

    .. math::
        W_{out} = Y X^\top (X X^\top + \lambda I)^{-1}, \qquad
        X = \begin{bmatrix} \text{states}^\top \\ 1 \cdots 1 \end{bmatrix}

    The bias row is penalised like the weights (Lukoševičius 2012, eq. 9). Solved in
    float64 on the normal equations (``(H + 1) x (H + 1)``), so ``N`` may be large.

    Args:
        states: reservoir states ``(N, H)`` (after washout, flattened over batch and time).
        targets: desired outputs ``(N, O)``.
        ridge: ``λ >= 0``.

    Returns:
        ``(weight (O, H), bias (O,))`` in the dtype of ``states``, ready for
        ``nn.Linear(H, O)``.
    """
    if states.ndim != 2 or targets.ndim != 2 or states.shape[0] != targets.shape[0]:
        raise ValueError(f"need states (N, H), targets (N, O); got {states.shape}, {targets.shape}")
    x = torch.cat([states.double(), states.new_ones(states.shape[0], 1, dtype=torch.float64)], 1)
    y = targets.double()
    gram = x.t() @ x  # X X^T in the docstring's column convention
    gram = gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram, x.t() @ y).t()  # (O, H + 1); gram is symmetric
    return w[:, :-1].to(states.dtype).contiguous(), w[:, -1].to(states.dtype).contiguous()
