"""Options shared by every cell: weight initialisation (``init``, ``init_scale``,
``init_input_scale``) and a trainable initial state (``learn_h0``).

All cells call :func:`apply_init` after building their parameters and use
:class:`InitialState` for ``h_0``; nothing here is copied per cell.

Initialisations (``init``; ``init_scale`` ``s`` defaults to the value in brackets):

==================  ==================================================================
``default``         the cell's own default (torch's ``U(-1/sqrt(H), 1/sqrt(H))``; IRNN: identity;
                    ESN: sparse reservoir at the spectral radius)
``orthogonal``      every ``H x H`` gate block of ``W_hh`` orthogonal with gain ``s`` [1];
                    ``W_ih`` Xavier-uniform; biases 0
``identity``        every gate block of ``W_hh`` = ``s I`` [1]; ``W_ih`` ``N(0, 0.001^2)``
                    (Le et al. 2015); biases 0
``xavier``          Xavier-uniform (Glorot & Bengio 2010) with gain ``s`` [1] on ``W_ih`` and
                    every gate block of ``W_hh``; biases 0
``normal``          all weights ``N(0, s^2)`` [0.1]; biases 0
``sigmoid_small``   Pascanu et al. 2013 "sigmoid": all weights ``N(0, 0.01^2)``; biases 0
``tanh_basic``      Pascanu et al. 2013 "basic tanh": all weights ``N(0, 0.1^2)``; biases 0
``tanh_smart``      Pascanu et al. 2013 "smart tanh": ``W_ih`` ``N(0, 0.01^2)``; every gate
                    block of ``W_hh`` sparse (15 non-zeros a row, ``N(0, 1)``) rescaled to
                    spectral radius ``s`` [0.95]; biases 0
``esn``             Sutskever et al. 2013 (§4.1, Table 4), "ESN-inspired", for cells with one
                    recurrent matrix (elman, irnn, jordan): ``W_hh`` sparse (15 non-zeros a
                    row, i.e. 15 incoming connections a unit, ``N(0, 1)``) rescaled to
                    spectral radius ``s`` [1.1]; ``W_ih`` ``N(0, 0.001^2)`` (their addition
                    and multiplication problems; 0.1 for memorization: ``init_input_scale``);
                    biases 0
==================  ==================================================================

``init_input_scale`` (``None``: the init's own) is the standard deviation of ``W_ih`` under
the inits that draw it from ``N(0, s^2)``: ``identity`` [0.001], ``normal`` [``s``],
``sigmoid_small`` [0.01], ``tanh_basic`` [0.1], ``tanh_smart`` [0.01], ``esn`` [0.001];
the others refuse it.

A cell's own bias conventions (LSTM forget-gate bias, LSTM-1997 negative input-gate
biases) are applied after the init. Tensors named ``weight_ih*`` are input weights,
``weight_hh*`` / ``weight_yh*`` recurrent weights (split into ``H``-row gate blocks),
``bias*`` biases; other tensors (peepholes, gate recurrence, readouts) keep the cell's own
initialisation except under ``normal`` and Pascanu's inits, which set all weights.
Pascanu's inits also set the model's output layer as the paper's code does
(:data:`HEAD_STD`): ``W_hy`` ``N(0, 0.01^2)`` (sigmoid, smart tanh) or ``N(0, 0.1^2)``
(basic tanh), ``b_hy`` 0; so does ``esn`` (Sutskever et al.'s Table 4: ``W_hy``
``N(0, 0.1^2)``; their output bias is the mean target, here 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rnnexp.errors import RnnexpError

INITS = (
    "default",
    "orthogonal",
    "identity",
    "xavier",
    "normal",
    "sigmoid_small",
    "tanh_basic",
    "tanh_smart",
    "esn",
)

_DEFAULT_SCALE = {
    "orthogonal": 1.0,
    "identity": 1.0,
    "xavier": 1.0,
    "normal": 0.1,
    "tanh_smart": 0.95,
    "esn": 1.1,
}

# std of W_ih under the inits that draw it from a normal (``init_input_scale`` replaces it);
# ``normal`` draws it with its own ``init_scale``
_INPUT_STD = {
    "identity": 0.001,
    "sigmoid_small": 0.01,
    "tanh_basic": 0.1,
    "tanh_smart": 0.01,
    "esn": 0.001,
}
# non-zero entries per row of a sparse recurrent matrix (Martens 2010's sparse init)
SPARSE_FAN_IN = 15


# std of the output layer W_hy under Pascanu's inits (his code, RNN.py) and Sutskever's esn
# (Table 4); other inits leave the head at torch's nn.Linear default
HEAD_STD = {"sigmoid_small": 0.01, "tanh_basic": 0.1, "tanh_smart": 0.01, "esn": 0.1}


def check_init(init: str) -> str:
    """Return ``init`` or raise a one-line error listing the choices."""
    if init not in INITS:
        raise RnnexpError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    return init


def init_scale_of(init: str, init_scale: float | None) -> float:
    """The gain / std / radius that ``init`` uses: ``init_scale``, or the init's default."""
    return _DEFAULT_SCALE.get(init, 1.0) if init_scale is None else float(init_scale)


def spectral_radius(matrix: Tensor) -> float:
    """Largest absolute eigenvalue of a square matrix."""
    return torch.linalg.eigvals(matrix.detach().double().cpu()).abs().max().item()


def sparse_normal_(tensor: Tensor, nonzeros: int, radius: float | None = None) -> Tensor:
    """Pascanu's sparse init: ``nonzeros`` ``N(0, 1)`` entries a row, the rest 0, then
    rescaled to spectral radius ``radius`` (square matrices only)."""
    rows, cols = tensor.shape
    with torch.no_grad():
        values = torch.randn(rows, cols, dtype=tensor.dtype, device=tensor.device)
        keep = torch.rand(rows, cols, device=tensor.device).argsort(dim=1) < min(nonzeros, cols)
        values = values * keep
        if radius is not None and rows == cols:
            rho = spectral_radius(values)
            if rho > 0:
                values = values * (radius / rho)
        tensor.copy_(values)
    return tensor


def _blocks(weight: Tensor, hidden_size: int) -> list[Tensor]:
    """Row blocks of ``hidden_size`` rows (the gates of a recurrent weight); views."""
    if weight.shape[0] % hidden_size:
        return [weight]
    return list(weight.split(hidden_size, dim=0))


def _role(name: str) -> str:
    base = name.rsplit(".", 1)[-1]
    if base.startswith("weight_ih"):
        return "input"
    if base.startswith(("weight_hh", "weight_yh")):
        return "recurrent"
    if base.startswith("bias"):
        return "bias"
    return "other"


def apply_init(
    module: nn.Module,
    init: str,
    init_scale: float | None,
    hidden_size: int,
    include_buffers: bool = False,
    input_scale: float | None = None,
) -> None:
    """Initialise ``module``'s weights in place by name (see the module docstring).

    Args:
        module: a cell whose tensors follow torch's names (``weight_ih_l0``, ...).
        init: one of :data:`INITS`; ``"default"`` leaves everything as it is.
        init_scale: gain / std / radius, ``None`` for the init's default.
        hidden_size: rows per gate block of the recurrent weights.
        include_buffers: also initialise buffers (fixed reservoirs of the ESN).
        input_scale: std of ``W_ih`` (``init_input_scale``), ``None`` for the init's own.
    """
    check_init(init)
    scale = init_scale_of(init, init_scale)
    input_std = _input_std(init, scale, input_scale)
    if init == "default":
        return
    tensors = list(module.named_parameters())
    if include_buffers:
        tensors += [(n, b) for n, b in module.named_buffers() if _role(n) != "other"]
    tensors = [(n, t) for n, t in tensors if n.rsplit(".", 1)[-1] not in ("h0", "c0")]
    if init == "esn":
        _check_esn(module, tensors, scale, hidden_size)
    with torch.no_grad():
        for name, tensor in tensors:
            role = _role(name)
            if role == "bias":
                tensor.zero_()
            elif role == "input" and input_std is not None:
                tensor.normal_(0.0, input_std)
            elif init in ("normal", "sigmoid_small", "tanh_basic"):
                std = {"normal": scale, "sigmoid_small": 0.01, "tanh_basic": 0.1}[init]
                tensor.normal_(0.0, std)
            elif init in ("tanh_smart", "esn"):
                if role == "recurrent":
                    for block in _blocks(tensor, hidden_size):
                        sparse_normal_(block, SPARSE_FAN_IN, scale)
                elif init == "tanh_smart":  # Pascanu's code sets every weight
                    tensor.normal_(0.0, 0.01)
            elif role == "input":  # orthogonal, xavier
                nn.init.xavier_uniform_(tensor, gain=scale if init == "xavier" else 1.0)
            elif role == "recurrent":
                for block in _blocks(tensor, hidden_size):
                    if init == "orthogonal":
                        nn.init.orthogonal_(block, gain=scale)
                    elif init == "identity":
                        nn.init.eye_(block)
                        block.mul_(scale)
                    else:
                        nn.init.xavier_uniform_(block, gain=scale)


def _input_std(init: str, scale: float, input_scale: float | None) -> float | None:
    """The std of ``W_ih`` under ``init`` (``None``: not a normal draw), or a one-line
    error for an ``init_input_scale`` that is negative or that ``init`` does not use."""
    own = scale if init == "normal" else _INPUT_STD.get(init)
    if input_scale is None:
        return own
    if own is None:
        uses = ", ".join(i for i in INITS if i == "normal" or i in _INPUT_STD)
        raise RnnexpError(
            f"cell.init_input_scale={input_scale} sets the std of W_ih under init={uses}, "
            f"not under init={init}; drop cell.init_input_scale or choose one of those inits"
        )
    if not float(input_scale) >= 0.0:
        raise RnnexpError(
            f"cell.init_input_scale={input_scale} is a standard deviation; give one >= 0 "
            "(Sutskever et al. 2013: 0.001, or 0.1 for memorization)"
        )
    return float(input_scale)


def _check_esn(
    module: nn.Module, tensors: list[tuple[str, Tensor]], radius: float, hidden_size: int
) -> None:
    """``init=esn`` needs a positive spectral radius and a cell with one recurrent matrix
    (no gate blocks); otherwise a one-line error that names the fix."""
    if not radius > 0.0:
        raise RnnexpError(
            f"cell.init_scale={radius} is the spectral radius of init=esn; give a positive "
            "one (Sutskever et al. 2013: 1.1), or null for 1.1"
        )
    for name, tensor in tensors:
        if _role(name) == "recurrent" and tensor.shape[0] != hidden_size:
            blocks = tensor.shape[0] // hidden_size
            raise RnnexpError(
                f"init=esn is for cells with one recurrent matrix (elman, irnn, jordan), but "
                f"{type(module).__name__}'s {name} has {blocks} gate blocks; use "
                "init=tanh_smart (the same sparse init in every gate block) or orthogonal"
            )


def uniform_(module: nn.Module, hidden_size: int) -> None:
    """torch's RNN default: every parameter ``U(-1/sqrt(H), 1/sqrt(H))``."""
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name not in ("h0", "c0"):
                param.uniform_(-bound, bound)


class InitialState:
    """Mixin that owns ``h_0`` (and ``c_0``): zeros, or trainable when ``learn_h0``.

    A learned initial state is a parameter ``h0`` (``c0``) of shape ``(L * D, 1, H)``
    broadcast over the batch; it starts at zero.
    """

    def _init_state(self, learn_h0: bool, n_states: int, shape: tuple[int, int]) -> None:
        self.learn_h0 = bool(learn_h0)
        self._n_states = n_states
        if self.learn_h0:
            for name in ("h0", "c0")[:n_states]:
                self.register_parameter(name, nn.Parameter(torch.zeros(shape[0], 1, shape[1])))

    def default_state(self, batch: int, like: Tensor) -> Tensor | tuple[Tensor, ...] | None:
        """``None`` (zeros) unless ``learn_h0``; then the learned state broadcast to ``batch``."""
        if not self.learn_h0:
            return None
        states = [
            getattr(self, n).to(like.dtype).expand(-1, batch, -1).contiguous()
            for n in ("h0", "c0")[: self._n_states]
        ]
        return states[0] if self._n_states == 1 else tuple(states)
