"""The network every task trains: input encoder -> stacked recurrent layers -> head."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnexp.cells.base import Cell, unroll
from rnnexp.cells.common import HEAD_STD
from rnnexp.cells.torch_cells import FusedCell
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRF, CRFScores
from rnnexp.nn.encoders import WordEncoder, word_embedding

if TYPE_CHECKING:  # the spec is plain data; the model does not depend on the tasks
    from rnnexp.tasks.base import TaskSpec

POOLINGS = ("last", "mean", "max")


class OneHot(nn.Module):
    """Token ids ``(B, T)`` -> one-hot float vectors ``(B, T, V)``; no parameters."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens, self.vocab_size).float()


def recur_padded(rnn: nn.Module, x: Tensor, lengths: Tensor, state: Any) -> tuple[Tensor, Any]:
    """Run ``rnn`` on right-padded ``x`` ``(B, T, I)`` so that padding changes nothing.

    torch's fused cells (elman, lstm, gru) get a packed sequence: each sequence is run for
    its own length only, the backward direction starts at its last real step, and the
    final state is the one at that step. Outputs at padded steps are zero. Hand-written
    cells run the padded batch: a forward direction's outputs at real steps never see
    the padding after them, but a backward direction would read it first, hence the error.
    """
    if isinstance(rnn, nn.RNNBase):  # torch's RNN/LSTM/GRU, which the fused cells are
        forward = rnn.forward
        if isinstance(rnn, FusedCell):
            if state is None:
                state = rnn.default_state(x.shape[0], x)  # None (zeros) or the learned h_0
            # FusedCell.forward only adds that learned h_0 and cannot take packed input;
            # torch's own forward (nn.LSTM/GRU/RNN, next in the MRO) can.
            forward = super(FusedCell, rnn).forward
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = forward(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state
    if isinstance(rnn, Cell) and rnn.bidirectional:
        raise RnnexpError(
            "a bidirectional hand-written cell would read the padding of shorter sequences; "
            "use cell=lstm, gru or elman (packed sequences) or model.bidirectional=false"
        )
    return rnn(x, state)  # final state: at the padded end; text tasks do not carry it


class PaddedRecurrence(nn.Module):
    """:func:`recur_padded` as a module, so that ``functional_call`` can swap its weights."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: Tensor, lengths: Tensor, state: Any) -> tuple[Tensor, Any]:
        return recur_padded(self.rnn, x, lengths, state)


def pool(hidden: Tensor, lengths: Tensor | None, how: str) -> Tensor:
    """Mean or max of ``hidden`` ``(B, T, D)`` over each sequence's real steps: ``(B, D)``."""
    if lengths is None:
        return hidden.mean(1) if how == "mean" else hidden.amax(1)
    steps = torch.arange(hidden.shape[1], device=hidden.device)
    real = (steps < lengths.to(hidden.device).unsqueeze(1)).unsqueeze(2)  # (B, T, 1)
    if how == "mean":
        return (hidden * real).sum(1) / real.sum(1)
    return hidden.masked_fill(~real, float("-inf")).amax(1)


class SequenceModel(nn.Module):
    """``encoder`` -> ``rnn`` (any cell from :mod:`rnnexp.cells`) -> dropout -> ``head``.

    Args:
        encoder: maps the task's inputs to ``(B, T, I)`` features.
        rnn: a cell module, ``forward(x (B, T, I), state) -> (outputs (B, T, D*H), state)``.
        head: ``nn.Linear(D*H, O)``.
        head_mode: ``every_step`` gives ``(B, T, O)``; ``last_step`` gives ``(B, O)`` read
            at each sequence's last valid step (the backward direction's output at step 0
            for bidirectional nets, which is where it has read the whole sequence).
        bidirectional: whether ``rnn`` runs both directions.
        dropout: dropout on the recurrent outputs before the head.
        pooling: how a ``last_step`` head reads the sequence: ``last`` (as above),
            ``mean`` or ``max`` over each sequence's real steps.
        input_dropout: dropout on the encoder's output (e.g. word embeddings).
        crf: a :class:`rnnexp.nn.crf.CRF` over the head's per-step scores (taggers): the
            read-out is then a :class:`rnnexp.nn.crf.CRFScores` (the head's output, the
            emissions, with the CRF), from which the task's loss and decoding read.
        weight_drop: DropConnect on the recurrent weights ``W_hh`` while training (Wan et
            al. 2013, as AWD-LSTM uses it: Merity et al. 2018, Regularizing and optimizing
            LSTM language models): each batch zeroes this fraction of every
            ``weight_hh_l*`` entry, one mask for all its steps, and scales the rest by
            ``1 / (1 - p)``. The fused kernels still run; the parameters keep their names.

    With ``lengths`` (right-padded batches of sequences of different lengths), the
    recurrence is padding-safe: see :func:`recur_padded`.

    The buffer ``temperature`` (a scalar, 1 unless calibrated) divides the head's output:
    the read-out is ``head(h) / T``. The calibration callback
    (:class:`rnnexp.train.callbacks.Calibration`) fits ``T`` on val after training and the
    checkpoints keep it, so every user of the model (evaluate, sample, predict, the Python
    API) gets the calibrated scores without knowing of it; the weights stay as trained.
    """

    def __init__(
        self,
        encoder: nn.Module,
        rnn: nn.Module,
        head: nn.Linear,
        head_mode: str,
        bidirectional: bool,
        dropout: float,
        pooling: str = "last",
        input_dropout: float = 0.0,
        crf: CRF | None = None,
        weight_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if head_mode not in ("every_step", "last_step"):
            raise RnnexpError(f"unknown head {head_mode!r}; choose every_step or last_step")
        if pooling not in POOLINGS:
            raise RnnexpError(f"model.pooling={pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if not 0.0 <= weight_drop < 1.0:
            raise RnnexpError(f"model.weight_drop={weight_drop}; use a fraction in [0, 1)")
        # The recurrent weights DropConnect masks: torch's names, W_hh of every layer.
        self.dropped_weights = [n for n, _ in rnn.named_parameters() if n.startswith("weight_hh")]
        if weight_drop and not self.dropped_weights:
            raise RnnexpError(
                f"model.weight_drop={weight_drop}, but this cell has no trainable recurrent "
                "weights (weight_hh_l*) to drop; set model.weight_drop=0"
            )
        self.weight_drop = weight_drop
        self.encoder = encoder
        # Identity when 0: the synthetic tasks' fast path stays exactly as it was.
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.rnn = rnn
        self.dropout = nn.Dropout(dropout)
        self.head = head
        self.head_mode = head_mode
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.crf = crf
        self.register_buffer("temperature", torch.ones(()))  # T of the read-out's head(h) / T

    def forward(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        hidden, state = self.recur(inputs, state, lengths)
        return self.readout(hidden, lengths), state

    def recur(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """Encoder and recurrent layers: the top layer's hidden states ``(B, T, D*H)``.

        The training loop calls this and :meth:`readout` separately, so that regularizers
        and diagnostics can reach the hidden states ``h_t``. ``lengths`` ``(B,)``: the
        real steps of right-padded sequences (``None``: all ``T`` are real).
        """
        x = self.input_dropout(self.encoder(inputs))  # (B, T, I)
        if self.weight_drop and self.training:
            return self._recur_weight_dropped(x, state, lengths)
        if lengths is None:
            return self.rnn(x, state)
        return recur_padded(self.rnn, x, lengths, state)

    def _recur_weight_dropped(
        self, x: Tensor, state: Any, lengths: Tensor | None
    ) -> tuple[Tensor, Any]:
        """:meth:`recur` with DropConnect on ``W_hh``: the masked copies stand in for the
        parameters during this call only, so the gradient reaches them through the mask."""
        dropped = {
            name: F.dropout(self.rnn.get_parameter(name), self.weight_drop)
            for name in self.dropped_weights
        }
        if lengths is None:
            return functional_call(self.rnn, dropped, (x, state))
        dropped = {f"rnn.{name}": weight for name, weight in dropped.items()}
        return functional_call(PaddedRecurrence(self.rnn), dropped, (x, lengths, state))

    def recur_steps(
        self, inputs: Tensor, state: Any = None, grad_hook: Callable | None = None
    ) -> tuple[Tensor, Any, list[Tensor]]:
        """As :meth:`recur`, one step at a time, also returning the top layer's ``h_t``.

        Each ``h_t`` ``(B, H)`` is the very tensor that feeds both the head and step
        ``t + 1``, so ``torch.autograd.grad(loss, steps)`` gives the total derivatives
        ``∂L/∂h_t`` through time, which a fused multi-step kernel hides. ``grad_hook``
        is registered on every ``h_t`` (e.g. to clamp the backpropagated gradient,
        Mikolov 2012). Slower than :meth:`recur`: use it only where ``h_t`` is needed.

        Each layer runs the cell's per-step form (:meth:`rnnexp.cells.Cell.unroll`): the
        input projection of all steps in one matmul, then one step at a time on the cell's
        own weights.
        """
        if self.bidirectional:
            raise RnnexpError(
                "step-by-step hidden states (regularizer=pascanu, clip=hidden, diagnostics) "
                "need a one-direction net: set model.bidirectional=false"
            )
        if self.weight_drop and self.training:
            raise RnnexpError(
                "model.weight_drop works on whole-sequence recurrences only, not with "
                "regularizer=pascanu or clip=hidden; set model.weight_drop=0"
            )
        x = self.input_dropout(self.encoder(inputs))  # (B, T, I)
        unrolled = unroll(self.rnn)
        per_layer = unrolled.split_state(state, x.shape[0], x)
        for k, layer in enumerate(unrolled.layers):
            top = k == len(unrolled.layers) - 1
            if k and self.training and unrolled.dropout:  # between stacked layers, as torch
                x = F.dropout(x, unrolled.dropout, training=True)
            layer_state, steps = per_layer[k], []
            for t, xw_t in enumerate(layer.project(x).unbind(1)):  # xw_t: (B, G)
                h_t, layer_state = layer.step(xw_t, layer_state, t)  # h_t is in layer_state
                if top and grad_hook is not None and h_t.requires_grad:
                    h_t.register_hook(grad_hook)
                steps.append(h_t)
            per_layer[k] = layer_state
            x = torch.stack(steps, dim=1)  # (B, T, H): the next layer's input
        return x, unrolled.join_state(per_layer), steps

    def readout(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor | CRFScores:
        """The head on the hidden states: ``(B, T, O)`` or ``(B, O)`` (``last_step``);
        with a CRF, those emissions and the CRF as a :class:`rnnexp.nn.crf.CRFScores`."""
        scores = self.head(self.dropout(self.select(hidden, lengths))) / self.temperature
        return scores if self.crf is None else CRFScores(scores, self.crf)

    def features(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """What the head reads: ``(B, T, D*H)`` (every_step) or ``(B, D*H)`` (last_step)."""
        hidden, state = self.recur(inputs, state, lengths)
        return self.select(hidden, lengths), state

    def select(self, hidden: Tensor, lengths: Tensor | None) -> Tensor:
        """All steps; or, for a ``last_step`` head, each sequence's last valid step
        (``pooling=last``) or the mean or max over its valid steps."""
        if self.head_mode != "last_step":
            return hidden
        if self.pooling == "last":
            return self._last_step(hidden, lengths)
        return pool(hidden, lengths, self.pooling)

    def _last_step(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        batch, steps, width = outputs.shape
        if lengths is None:
            last = torch.full((batch,), steps - 1, device=outputs.device)
        else:
            last = lengths.to(outputs.device) - 1
        index = last.view(batch, 1, 1).expand(batch, 1, width)
        final = outputs.gather(1, index).squeeze(1)  # (B, D*H) at each last valid step
        if not self.bidirectional:
            return final
        hidden = width // 2
        return torch.cat([final[:, :hidden], outputs[:, 0, hidden:]], dim=-1)


def build_encoder(model_cfg: DictConfig, spec: TaskSpec) -> tuple[nn.Module, int]:
    """The input encoder for ``spec`` and the features it gives each step."""
    char_encoder = model_cfg.get("char_encoder", "none")
    if spec.input_kind == "linear":
        return nn.Identity(), spec.input_size  # W_ih is the linear input map
    if spec.input_kind == "onehot":
        return OneHot(spec.input_size), spec.input_size
    if spec.num_chars or char_encoder != "none":
        encoder = WordEncoder(
            spec.input_size,
            model_cfg.embedding_size,
            char_encoder,
            spec.num_chars,
            model_cfg.get("char_embedding_size", 25),
            model_cfg.get("char_hidden_size", 25),
        )
        return encoder, encoder.output_size
    return nn.Embedding(spec.input_size, model_cfg.embedding_size), model_cfg.embedding_size


@torch.no_grad()
def init_embedding(encoder: nn.Module, spec: TaskSpec) -> None:
    """The spec's pretrained vectors into the word embedding, which is frozen when asked
    (``task.embeddings``)."""
    if spec.vectors is None and not spec.freeze_embedding:
        return
    embedding = word_embedding(encoder)
    if (given := spec.vectors) is not None:
        width, size = given.vectors.shape[1], embedding.embedding_dim
        if width != size:
            raise RnnexpError(
                f"task.embeddings.path={given.source}: {width}-d vectors, but "
                f"model.embedding_size={size}; set model.embedding_size={width}"
            )
        embedding.weight[given.found] = given.vectors[given.found]
    embedding.weight.requires_grad_(not spec.freeze_embedding)


def build_model(cfg: DictConfig, spec: TaskSpec) -> SequenceModel:
    """The model for a task's spec (:meth:`rnnexp.tasks.base.Task.setup`) from the
    ``model`` and ``cell`` config groups. Random draws, in order: the encoder, the cell,
    the head, the CRF."""
    model_cfg = cfg.model
    encoder, features = build_encoder(model_cfg, spec)
    # model.bidirectional=null: the task's default (true for the text tasks)
    bidirectional = model_cfg.get("bidirectional")
    bidirectional = spec.bidirectional if bidirectional is None else bool(bidirectional)
    rnn = build(  # a bad cell option is one line (the cell's RnnexpError), not Hydra's
        cfg.cell,
        "cell",
        input_size=features,
        hidden_size=model_cfg.hidden_size,
        num_layers=model_cfg.num_layers,
        bidirectional=bidirectional,
        dropout=model_cfg.dropout,
        _convert_="all",
    )
    directions = 2 if bidirectional else 1
    head = nn.Linear(directions * model_cfg.hidden_size, spec.output_size)
    if (std := HEAD_STD.get(cfg.cell.get("init", "default"))) is not None:
        with torch.no_grad():  # Pascanu's inits set W_hy too, as his code does
            head.weight.normal_(0.0, std)
            head.bias.zero_()
    crf = None
    if model_cfg.get("crf", False):
        if not spec.tagging:
            raise RnnexpError(
                f"model.crf=true needs a tagging task (ner); task {cfg.task.get('name')!r} "
                "is not one"
            )
        crf = CRF(spec.output_size)
    model = SequenceModel(
        encoder,
        rnn,
        head,
        head_mode=spec.head,
        bidirectional=bidirectional,
        dropout=model_cfg.dropout,
        pooling=model_cfg.get("pooling", "last"),
        input_dropout=model_cfg.get("input_dropout", 0.0),
        crf=crf,
        weight_drop=model_cfg.get("weight_drop", 0.0),
    )
    init_embedding(encoder, spec)  # e.g. GloVe vectors, after every random draw
    return model
