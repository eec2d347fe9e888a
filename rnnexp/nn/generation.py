"""Text from a language model, O(1) work a token: steppers, the draw, :func:`generate`.

Used by ``rnnexp sample`` (:mod:`rnnexp.cli.sample`) and by the ``charlm`` task's samples at
each evaluation; it needs a model and a :class:`~rnnexp.data.vocab.Vocab`, nothing of a task.

The prompt runs once through the model's own (fused) recurrent module, which returns the
final state. From there a stepper advances one token at a time, carrying the state: the
prefix is never run again. It does *not* call the fused ``nn.LSTM``/``nn.GRU``/``nn.RNN``
once per token, because each call re-packs the weights (about 220 chars/s at 2 x 512 on
2 CPU cores, REFERENCE §4).

* :class:`Stepper` works for every cell: it runs the cell's per-step form
  (:meth:`rnnexp.cells.Cell.unroll`), each layer a pair of plain functions on the cell's
  own tensors: ``project(x)``, the input projection (for the first layer a lookup in a
  ``(V, G)`` table of every token's projection, built once), and ``step(xw, state, t)``,
  one recurrent matmul and the gate arithmetic. A module that is not a cell is called on
  one step at a time (:func:`rnnexp.cells.unroll`).
* :class:`LSTMStepper` is the char-rnn model's path (torch's ``nn.LSTM``), about 1.7x
  as fast (``bench/sample.py``). At batch 1 a step is a few matrix-vector products that
  read every weight once (12 MB at 2 x 512), bound by memory bandwidth, so it copies the
  weights once into column blocks, one per thread, multiplied by one ``bmm`` (a single
  ``addmm`` at batch 1 runs on one core), and joins the products so that a 2-layer
  step is one call (see the class).

:func:`choose` turns logits into a token: temperature, top-k, top-p (nucleus), argmax,
``<unk>`` never emitted, and a Gumbel-max draw from noise that a seeded
``torch.Generator`` makes :data:`NOISE_ROWS` tokens at a time, so that the same seed gives
the same text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp.cells.base import unroll
from rnnexp.cells.torch_cells import Lstm
from rnnexp.data.vocab import Vocab
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import OneHot, SequenceModel

TABLE_LIMIT = 1 << 24  # largest (V, G) first-layer table built up front, in elements
NOISE_ROWS = 64  # tokens' worth of Gumbel noise drawn from the generator at a time


class Stepper:
    """Advance a :class:`SequenceModel` one token at a time, carrying its state.

    ``prime(ids)`` runs the prompt through the model once and returns the logits ``(V,)``
    after it; each ``step(id)`` feeds one more token and returns the next logits.
    ``snapshot``/``restore`` rewind to a saved point (e.g. after the prompt). Build and
    call it under ``torch.inference_mode()`` (as :func:`generate` does): it never trains.
    """

    def __init__(self, model: SequenceModel) -> None:
        self._start(model)
        unrolled = unroll(model.rnn)  # the per-step form; its state: one entry a layer
        self.layers, self.split_state = unrolled.layers, unrolled.split_state
        self.table: Tensor | None = None  # (V, G): the first layer's input projections
        if isinstance(model.encoder, nn.Embedding | OneHot):
            tokens = torch.arange(model.head.out_features, device=self.device)
            first = self.layers[0].project(model.encoder(tokens[None, :1])[0])  # (1, G)
            if len(tokens) * first.shape[1] <= TABLE_LIMIT:
                self.table = self.layers[0].project(model.encoder(tokens[None])[0])

    def _start(self, model: SequenceModel) -> None:
        """What every stepper holds: the model, its device, the state and the clock."""
        if model.bidirectional:
            raise RnnexpError("a bidirectional model reads the future and cannot generate text")
        self.model = model
        self.device = next(model.parameters()).device
        self.state: Any = None
        self.t = 0  # absolute step (the clockwork cell's clock)

    def prime(self, ids: list[int]) -> Tensor:
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, P)
        hidden, state = self.model.recur(tokens)  # the fused module, once over the prompt
        self.t = len(ids)
        self.state = self.split_state(state, 1, hidden)  # one entry per layer
        return self.model.readout(hidden[:, -1:])[0, -1]

    def step(self, token: int) -> Tensor:
        if self.table is not None:
            xw = self.table[token : token + 1]  # (1, G)
        else:
            x = self.model.encoder(torch.tensor([[token]], device=self.device))[:, 0]
            xw = self.layers[0].project(x)
        h = xw
        for k, layer in enumerate(self.layers):
            if k:
                xw = layer.project(h)
            h, self.state[k] = layer.step(xw, self.state[k], self.t)
        self.t += 1
        return self.model.head(h)[0] / self.model.temperature  # the read-out's head(h) / T

    def snapshot(self) -> tuple[Any, int]:
        return list(self.state), self.t  # the steps make new tensors: references suffice

    def restore(self, snapshot: tuple[Any, int]) -> None:
        state, self.t = snapshot
        self.state = list(state)


class LSTMStepper(Stepper):
    """:class:`Stepper` for torch's ``nn.LSTM`` at batch 1, laid out for speed.

    Same state (a ``(h, c)`` pair of ``(1, H)`` tensors per layer) and the same logits as
    :class:`Stepper` up to float rounding; :meth:`step` differs. At batch 1 a step is a
    few matrix-vector products that read every weight once (12 MB at 2 x 512), bound by
    memory bandwidth, so the weights are copied once into a layout that lets every thread
    read its share, in as few calls as possible (``P`` column blocks: torch's thread
    count when it divides ``4H``, on the CPU; else 1); gates are reordered from torch's
    ``i, f, g, o`` to ``i, f, o, g`` so that one ``sigmoid`` covers three of them:

    * ``table`` ``(V, 4H)``: every token's first-layer input projection plus both biases.
    * ``joint`` ``(3P, H, 4H/P)``: ``W_hh`` of layer 0, ``W_ih`` and ``W_hh`` of layer 1,
      each transposed and cut into ``P`` column blocks. One ``bmm`` gives layer 1's gates
      at step ``t`` *and* layer 0's recurrent product for step ``t + 1``: both read only
      ``h^0_t`` and ``h^1_{t-1}``. (One layer: ``joint`` holds ``W_hh`` only.)
    * ``upper[k]`` ``(P, 2H, 4H/P)`` for layers ``k >= 2``: ``[W_ih; W_hh]``, one ``bmm``
      of ``[h^{k-1}_t, h^k_{t-1}]``.

    At 2 x 512 a character is thus a single ``bmm`` (12 MB over both threads) and the
    gate arithmetic.
    """

    def __init__(self, model: SequenceModel) -> None:
        self._start(model)  # not Stepper.__init__: its per-layer weight copies would go unused
        rnn = model.rnn
        assert isinstance(rnn, Lstm), "see LSTMStepper.suits"
        self.split_state = rnn.split_state  # a (h, c) pair of (1, H) tensors per layer
        threads = torch.get_num_threads() if self.device.type == "cpu" else 1
        self.size, self.layer_count = rnn.hidden_size, rnn.num_layers
        self.blocks = threads if (4 * self.size) % threads == 0 else 1
        tokens = torch.arange(model.head.out_features, device=self.device)
        inputs = model.encoder(tokens[None])[0]  # (V, I): every token's encoding
        table = F.linear(inputs, rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0)  # (V, 4H)
        self.table = _ifog(table, dim=1).contiguous()
        joint = [rnn.weight_hh_l0]
        self.bias1 = None
        if self.layer_count > 1:
            joint += [rnn.weight_ih_l1, rnn.weight_hh_l1]
            self.bias1 = _ifog(rnn.bias_ih_l1 + rnn.bias_hh_l1, dim=0).view(1, -1)
        self.joint = torch.cat([self._blocks(w) for w in joint])  # (3P, H, 4H/P)
        self.upper = []  # layers 2..L-1: (weights (P, 2H, 4H/P), bias (P, 1, 4H/P))
        for k in range(2, self.layer_count):
            p = rnn.layer_tensors(k, 0)
            w_ih, w_hh, bias = p["weight_ih"], p["weight_hh"], p["bias_ih"] + p["bias_hh"]
            both = self._blocks(torch.cat([w_ih, w_hh], dim=1))
            self.upper.append((both, _ifog(bias, dim=0).view(self.blocks, 1, -1)))
        # (H, V) and (1, V): addmm on a contiguous right operand, not F.linear's transposed
        # view (about 35 us against 15 at batch 1); the read-out's temperature folded in
        self.head_weight = (model.head.weight / model.temperature).t().contiguous()
        self.head_bias = (model.head.bias / model.temperature).view(1, -1)
        self.pending: Tensor | None = None  # (1, 4H): W_hh h^0_t, layer 0's next product

    @staticmethod
    def suits(model: SequenceModel) -> bool:
        """Whether ``model`` is one this stepper runs: a one-direction ``lstm`` cell (torch's
        ``nn.LSTM``, biases and no projections) whose first layer reads a lookup table."""
        rnn = model.rnn
        return (
            isinstance(rnn, Lstm)
            and not rnn.bidirectional
            and isinstance(model.encoder, nn.Embedding | OneHot)
            and model.head.out_features * 4 * rnn.hidden_size <= TABLE_LIMIT
        )

    def _blocks(self, weight: Tensor) -> Tensor:
        """torch's ``(4H, K)`` weight -> ``(P, K, 4H/P)``: transposed, gates ``i, f, o, g``,
        cut into ``P`` column blocks."""
        columns = _ifog(weight, dim=0).t()  # (K, 4H)
        return columns.reshape(len(columns), self.blocks, -1).transpose(0, 1).contiguous()

    def prime(self, ids: list[int]) -> Tensor:
        self.pending = None
        return super().prime(ids)

    def restore(self, snapshot: tuple[Any, int]) -> None:
        self.pending = None
        super().restore(snapshot)

    def step(self, token: int) -> Tensor:
        size, blocks = self.size, self.blocks
        h, c = self.state[0]
        if self.pending is None:  # after prime/restore, and always with one layer
            self.pending = torch.bmm(h.expand(blocks, 1, size), self.joint[:blocks]).view(1, -1)
        x, c = _lstm_cell(self.pending + self.table[token : token + 1], c, size)
        self.state[0] = (x, c)
        self.pending = None
        if self.layer_count > 1:  # (3P, 1, H) @ (3P, H, 4H/P) -> 3 rows of (1, 4H)
            h, c = self.state[1]
            inputs = torch.cat([x.expand(2 * blocks, size), h.expand(blocks, size)])
            products = torch.bmm(inputs.unsqueeze(1), self.joint).view(3, -1)
            self.pending = products[0:1]
            x, c = _lstm_cell(products[1:2] + products[2:3] + self.bias1, c, size)
            self.state[1] = (x, c)
        for k, (weight, bias) in enumerate(self.upper, start=2):
            h, c = self.state[k]
            both = torch.cat([x, h], dim=1).expand(blocks, 1, 2 * size)  # (P, 1, 2H)
            x, c = _lstm_cell(torch.baddbmm(bias, both, weight).view(1, -1), c, size)
            self.state[k] = (x, c)
        self.t += 1
        return torch.addmm(self.head_bias, x, self.head_weight)[0]


def _lstm_cell(gates: Tensor, c: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``(h, c)`` from the gates ``(1, 4H)`` in the order ``i, f, o, g`` and ``c_{t-1}``."""
    i, f, o = gates[:, : 3 * size].sigmoid().chunk(3, dim=1)
    c = torch.addcmul(f * c, i, gates[:, 3 * size :].tanh())
    return o * c.tanh(), c


def _ifog(gates: Tensor, dim: int) -> Tensor:
    """torch's LSTM gate order ``i, f, g, o`` along ``dim`` -> ``i, f, o, g``."""
    i, f, g, o = gates.chunk(4, dim=dim)
    return torch.cat([i, f, o, g], dim=dim)


def stepper_for(model: SequenceModel) -> Stepper:
    """The fastest stepper that runs ``model``."""
    return LSTMStepper(model) if LSTMStepper.suits(model) else Stepper(model)


@dataclass
class Settings:
    """How a token is drawn from the logits."""

    temperature: float = 1.0
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set with this much probability mass
    argmax: bool = False  # always the most likely token (greedy; no randomness)

    def check(self) -> Settings:
        if not self.argmax and not self.temperature > 0:
            raise RnnexpError(f"--temperature {self.temperature} must be > 0 (or use --argmax)")
        if self.top_k is not None and self.top_k < 1:
            raise RnnexpError(f"--top-k {self.top_k} must be >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise RnnexpError(f"--top-p {self.top_p} must be in (0, 1]")
        return self


def choose(logits: Tensor, settings: Settings, noise: Tensor, banned: int | None) -> int:
    """One token id from ``logits`` ``(V,)``; ``banned`` is never chosen.

    ``noise`` ``(V,)`` is standard Gumbel noise (:func:`gumbel_noise`): ``argmax(scores +
    noise)`` picks token ``i`` with probability ``softmax(scores)_i`` (the Gumbel-max
    trick), and never one whose score is ``-inf``. Two cheap ops a token, against a
    ``softmax`` and a ``torch.multinomial`` call.
    """
    scores = logits.float()
    if banned is not None:
        scores = scores.clone()
        scores[banned] = -float("inf")
    if settings.argmax:
        return int(scores.argmax())
    if settings.temperature != 1.0:
        scores = scores / settings.temperature
    if settings.top_k is not None and settings.top_k < len(scores):
        kth = torch.topk(scores, settings.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if settings.top_p is not None and settings.top_p < 1:
        ordered, order = torch.sort(scores, descending=True)
        probs = F.softmax(ordered, dim=0)
        drop = probs.cumsum(0) - probs >= settings.top_p  # mass before it already enough
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -float("inf"))
    return int((scores + noise).argmax())


def gumbel_noise(generator: torch.Generator, rows: int, size: int) -> Tensor:
    """``(rows, size)`` standard Gumbel noise, ``-log E`` with ``E ~ Exp(1)``, drawn from
    ``generator`` in one call (one row per token: see :func:`choose`)."""
    exponential = torch.empty(rows, size).exponential_(generator=generator)
    return exponential.clamp_min_(1e-30).log_().neg_()


def prompt_ids(vocab: Vocab, prime: str) -> list[int]:
    """A prompt as ids. Characters outside the vocabulary are a one-line error naming
    them (even with U+FFFD in the vocabulary: it stands for held-out text, not a prompt);
    unknown words become ``<unk>`` (the model has seen ``<unk>`` in training)."""
    ids, missing = vocab.lookup(vocab.split(prime))
    if missing and vocab.level == "char":
        shown = ", ".join(repr(c) for c in missing[:20])
        raise RnnexpError(
            f"--prime has {len(missing)} character(s) outside the model's vocabulary: "
            f"{shown}; use only characters of the training text"
        )
    return ids


def generate(
    model: SequenceModel,
    vocab: Vocab,
    prime: str,
    length: int,
    settings: Settings | None = None,
    seed: int = 0,
    num_samples: int = 1,
    emit: Callable[[int, str], None] | None = None,
    stepper: Callable[[SequenceModel], Stepper] = stepper_for,
) -> list[str]:
    """``num_samples`` texts, each ``prime`` followed by ``length`` generated tokens.

    The prompt is read once; each sample starts from the state after it. One generator
    seeded with ``seed`` draws all samples in turn, so the first sample of a seed is the
    same whatever ``num_samples`` is. ``emit(k, text)`` receives sample ``k``'s text piece
    by piece as it is generated (the prompt first). An empty prompt starts from a line
    end when the vocabulary has one (not shown), else from a random token. The model runs
    where its parameters are; the draws happen on the CPU. ``stepper`` builds the stepper
    (:func:`stepper_for`, the default, picks the fastest that runs the model).
    """
    settings = (settings or Settings()).check()
    if length < 0 or num_samples < 1:
        raise RnnexpError("--length must be >= 0 and --num-samples >= 1")
    generator = torch.Generator().manual_seed(seed)
    ids = prompt_ids(vocab, prime)
    shown = bool(ids)
    if not ids:
        start = vocab.start_id
        ids = [start if start is not None else int(torch.randint(len(vocab), (1,),
                                                                 generator=generator))]  # fmt: skip
    with torch.inference_mode():  # no autograd bookkeeping: cheaper ops on the hot path
        return _generate(
            stepper(model), vocab, ids, shown, length, settings, generator, num_samples, emit
        )


def _generate(
    stepper: Stepper,
    vocab: Vocab,
    ids: list[int],
    shown: bool,
    length: int,
    settings: Settings,
    generator: torch.Generator,
    num_samples: int,
    emit: Callable[[int, str], None] | None,
) -> list[str]:
    logits = stepper.prime(ids)
    after_prime = stepper.snapshot()
    texts = []
    for k in range(num_samples):
        stepper.restore(after_prime)
        previous = ids[-1]
        pieces = [vocab.decode(ids)] if shown else []
        if emit is not None and pieces:
            emit(k, pieces[0])
        next_logits = logits
        for n in range(length):
            if n % NOISE_ROWS == 0:  # the next NOISE_ROWS tokens' noise
                noise = gumbel_noise(generator, NOISE_ROWS, len(logits))
            token = choose(next_logits.cpu(), settings, noise[n % NOISE_ROWS], vocab.unk_id)
            piece = vocab.piece(token, previous)
            pieces.append(piece)
            if emit is not None:
                emit(k, piece)
            previous = token
            if n + 1 < length:
                next_logits = stepper.step(token)
        texts.append("".join(pieces))
    return texts
