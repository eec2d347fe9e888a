"""The fast path for small Elman-type nets (issue 23): one training step's recurrence,
backward pass, Pascanu's Ω and hidden-state clipping without a graph node per step.

The general path (:class:`rnnexp.train.updates.GradientUpdate`) runs the net step by step
(:meth:`rnnexp.nn.model.SequenceModel.recur_steps`) whenever Ω or ``clip=hidden`` needs
the ``h_t``: autograd nodes for every op of every step, a tensor hook per ``h_t`` to catch
``δ_t = ∂L/∂h_t``, then Ω's own small graph. At 50 units and batch 20 that bookkeeping is
most of the time. Here the recurrence is :class:`rnnexp.cells.fused.ElmanOmega`, whose
hand-written backward pass has every ``δ_t`` and carried error ``δ_t ∂h_t/∂h_{t-1}``:

* ``clip=hidden`` (Mikolov 2012) is its hook on ``δ_t``, applied where autograd would
  apply a tensor hook on ``h_t``;
* Ω and the gradient of ``α Ω`` come out of the same backward pass, with no second pass
  through autograd (as in the paper's own code).

It covers what the classic long-lag experiments use: one-layer, one-direction
``elman``, ``irnn`` and ``jordan`` cells, any clipping rule, ``regularizer=none`` or
``pascanu`` (elman and irnn: Ω reads ``weight_hh_l0``, which is jordan's recurrence only
in part), last-step or every-step heads, and batches of one length (the length may change
from batch to batch, e.g. ``[T, 1.1 T)``). :func:`fast_path` says whether it applies;
``train.fast=false`` turns it off. Padded batches (``Batch.lengths``) take the general
path.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from rnnexp.cells.elman_family import Irnn, Jordan
from rnnexp.cells.fused import Record, Workspace, elman_omega
from rnnexp.cells.loop import ElmanType
from rnnexp.cells.torch_cells import Elman
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel
from rnnexp.tasks.base import Batch
from rnnexp.train.regularizers import NoRegularizer, PascanuOmega

# The cells the fast path runs: an Elman recurrence h_t = φ(xw_t + W h_{t-1}) with no
# update mask (clockwork) and no leak (esn). Exact types: a subclass may change the step.
FAST_CELLS: tuple[type[nn.Module], ...] = (Elman, Irnn, Jordan)


def recurrent_weight(cell: nn.Module) -> Tensor:
    """The matrix ``W`` of ``h_t = φ(xw_t + W h_{t-1})``: ``weight_hh_l0`` itself (elman,
    irnn), or a jordan cell's effective ``U_y V (+ W_hh)``."""
    tensors = cell.layer_tensors(0, 0)
    return cell.recurrent_weight(tensors) if isinstance(cell, ElmanType) else tensors["weight_hh"]


def fast_path(model: nn.Module, clip: Any, regularizer: Any) -> FastPath | None:
    """A :class:`FastPath` for training ``model`` with ``clip`` and ``regularizer``, or
    ``None`` where it does not apply (then the general path runs, with its own errors)."""
    if not isinstance(model, SequenceModel) or model.weight_drop:
        return None
    rnn = model.rnn
    if type(rnn) not in FAST_CELLS or rnn.num_layers != 1 or rnn.bidirectional:
        return None
    if rnn.nonlinearity not in ("tanh", "relu"):
        return None
    if type(regularizer) is PascanuOmega:
        try:
            weight, _ = regularizer.recurrence(rnn)
        except RnnexpError:
            return None  # the general path raises the regularizer's own error
        if weight is not recurrent_weight(rnn):
            return None  # Ω on W_hh while the recurrence runs on jordan's U_y V + W_hh
    elif type(regularizer) is not NoRegularizer:
        return None
    elif type(rnn) is Elman and clip.grad_hook is None and rnn.weight_hh_l0.is_cuda:
        # on a GPU the loop is bound by kernel launches: cuDNN's fused RNN, which the
        # general path runs when it needs no h_t, took 2.5 ms a step against the fast
        # path's 9.9 (H200, Pascanu config, bench/README.md); with Ω or clip=hidden the
        # general path goes step by step (22.7 ms) and the fast path (10.2 ms) still wins
        return None
    return FastPath(model, clip, regularizer)


class FastPath:
    """The recurrence and backward pass of one training step (see the module docstring).

    Args:
        model: a :class:`rnnexp.nn.model.SequenceModel` whose ``rnn`` is one of
            :data:`FAST_CELLS` (one layer, one direction).
        clip: the clipping rule; its ``grad_hook`` (``clip=hidden``), if any, acts on every
            ``δ_t``. Clipping of the parameter gradients stays with the caller.
        regularizer: :class:`rnnexp.train.regularizers.NoRegularizer` or
            :class:`rnnexp.train.regularizers.PascanuOmega` (whose ``alpha``, ``decay`` it
            reads and whose ``last_value`` it sets, as the regularizer's ``backward`` does).
    """

    def __init__(self, model: SequenceModel, clip: Any, regularizer: Any) -> None:
        self.model, self.clip, self.regularizer = model, clip, regularizer
        self.omega = type(regularizer) is PascanuOmega
        self.workspace = Workspace()  # the kernel's buffers, reused from step to step

    @staticmethod
    def applies(batch: Batch) -> bool:
        """Whether ``batch`` can take the fast path: all its sequences are real to the end."""
        return batch.lengths is None

    def recur(self, inputs: Tensor, state: Any = None, step: int = 1) -> tuple[Tensor, Any, Record]:
        """As :meth:`rnnexp.nn.model.SequenceModel.recur`: the hidden states ``(B, T, H)``
        and the final state ``(1, B, H)``; also the :class:`rnnexp.cells.fused.Record`
        that the backward pass of a loss on them fills in (``δ_t``, Ω). With Ω, that
        backward pass gives the gradient of ``loss + α Ω`` (``α / step`` with ``decay``)."""
        model, cell = self.model, self.model.rnn
        x = model.input_dropout(model.encoder(inputs))  # (B, T, I)
        tensors = cell.layer_tensors(0, 0)
        # torch's elman projects with prepared (transposed) copies; the others read theirs
        tensors = cell.prepare(tensors) if isinstance(cell, Elman) else tensors
        xw = cell.input_projection(x.transpose(0, 1), tensors)  # (T, B, H), time-major
        (h0,) = cell.split_state(state, x.shape[0], x)[0]  # (B, H)
        alpha = None
        if self.omega:
            regularizer = self.regularizer
            alpha = regularizer.alpha / step if regularizer.decay else regularizer.alpha
        record = Record()
        relu = cell.nonlinearity == "relu"
        hs = elman_omega(xw, h0, recurrent_weight(cell), relu, self.clip.grad_hook,
                         alpha, record, self.workspace)  # fmt: skip
        # hs lives in the workspace until the next step; join_state's stack copies h_T out
        return hs.transpose(0, 1), cell.join_state([(hs[-1],)]), record

    def backward(self, loss: Tensor, record: Record) -> None:
        """The gradient of ``loss`` (+ ``α Ω``) into the parameters' ``.grad``, as the
        regularizer's own ``backward`` leaves it; Ω logged as ``train/omega``."""
        loss.backward()
        if self.omega:  # no backward pass through the recurrence: every δ_t = 0, Ω = 0
            omega = record.omega
            self.regularizer.last_value = 0.0 if omega is None else omega.item()
