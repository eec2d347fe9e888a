"""Generate text from a trained language model (``rnnexp sample``), O(1) work a token.

The prompt runs once through the model's own (fused) recurrent module, which returns the
final state. From there :class:`Stepper` advances one token at a time, carrying the state:
the prefix is never run again. It does *not* call the fused ``nn.LSTM``/``nn.GRU``/
``nn.RNN`` once per token, because each call re-packs the weights (about 220 chars/s at
2 x 512 on 2 CPU cores, REFERENCE §4). Instead each layer is a pair of plain functions on
the module's own tensors, from :mod:`rnnexp.cells.steps`: ``project(x)``, the input
projection (for the first layer a lookup in a ``(V, G)`` table of every token's
projection, built once), and ``step(xw, state, t)``, one recurrent matmul and the gate
arithmetic. A module without such a form is called on one step at a time.

:func:`generate` turns logits into tokens: temperature, top-k, top-p (nucleus), argmax,
``<unk>`` never emitted, a seeded ``torch.Generator`` so that the same seed gives the same
text. :func:`sample_run` is the command: it rebuilds the model with
:func:`rnnexp.evaluate.restore`, the same path as ``rnnexp evaluate``.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp.cells.steps import split_state, step_layers
from rnnexp.errors import RnnexpError
from rnnexp.model import OneHot, SequenceModel

if TYPE_CHECKING:
    from rnnexp.tasks.charlm import Vocabulary

TABLE_LIMIT = 1 << 24  # largest (V, G) first-layer table built up front, in elements


class Stepper:
    """Advance a :class:`SequenceModel` one token at a time, carrying its state.

    ``prime(ids)`` runs the prompt through the model once and returns the logits ``(V,)``
    after it; each ``step(id)`` feeds one more token and returns the next logits.
    ``snapshot``/``restore`` rewind to a saved point (e.g. after the prompt). Build and
    call it under ``torch.inference_mode()`` (as :func:`generate` does): it never trains.
    """

    def __init__(self, model: SequenceModel) -> None:
        if model.bidirectional:
            raise RnnexpError("a bidirectional model reads the future and cannot generate text")
        self.model = model
        self.layers = step_layers(model.rnn)  # None: call the module one step at a time
        self.device = next(model.parameters()).device
        self.table: Tensor | None = None  # (V, G): the first layer's input projections
        if self.layers is not None and isinstance(model.encoder, nn.Embedding | OneHot):
            tokens = torch.arange(model.head.out_features, device=self.device)
            first = self.layers[0].project(model.encoder(tokens[None, :1])[0])  # (1, G)
            if len(tokens) * first.shape[1] <= TABLE_LIMIT:
                self.table = self.layers[0].project(model.encoder(tokens[None])[0])
        self.state: Any = None
        self.t = 0  # absolute step (the clockwork cell's clock)

    def prime(self, ids: list[int]) -> Tensor:
        tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, P)
        hidden, state = self.model.recur(tokens)  # the fused module, once over the prompt
        self.t = len(ids)
        if self.layers is None:
            self.state = state
        else:  # (L, B, H) tensors (or a tuple of them) -> one tuple of (B, H) per layer
            self.state = split_state(self.model.rnn, state, 1, hidden)
        return self.model.readout(hidden[:, -1:])[0, -1]

    def step(self, token: int) -> Tensor:
        if self.layers is None:
            x = self.model.encoder(torch.tensor([[token]], device=self.device))  # (1, 1, I)
            out, self.state = self.model.rnn(x, self.state)
            h = out[:, 0]
        else:
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
        return self.model.head(h)[0]

    def snapshot(self) -> tuple[Any, int]:
        state = list(self.state) if isinstance(self.state, list) else self.state
        return state, self.t  # the steps make new tensors: references suffice

    def restore(self, snapshot: tuple[Any, int]) -> None:
        state, self.t = snapshot
        self.state = list(state) if isinstance(state, list) else state


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


def choose(
    logits: Tensor, settings: Settings, generator: torch.Generator, banned: int | None
) -> int:
    """One token id from ``logits`` ``(V,)`` (on the CPU); ``banned`` is never chosen.

    The draw is an exponential race, ``argmax(p / E)`` with ``E ~ Exp(1)`` per token, which
    picks token ``i`` with probability ``p_i`` and never one with ``p_i = 0``; it is about
    3x cheaper than ``torch.multinomial`` for one draw.
    """
    logits = logits.float()
    if banned is not None:
        logits = logits.clone()
        logits[banned] = -float("inf")
    if settings.argmax:
        return int(logits.argmax())
    if settings.temperature != 1.0:
        logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < len(logits):
        kth = torch.topk(logits, settings.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if settings.top_p is not None and settings.top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        probs = F.softmax(ordered, dim=0)
        drop = probs.cumsum(0) - probs >= settings.top_p  # mass before it already enough
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -float("inf"))
    probs = F.softmax(logits, dim=0)
    race = torch.empty_like(probs).exponential_(generator=generator).clamp_min_(1e-30)
    return int((probs / race).argmax())


def generate(
    model: SequenceModel,
    vocab: Vocabulary,
    prime: str,
    length: int,
    settings: Settings | None = None,
    seed: int = 0,
    num_samples: int = 1,
    emit: Callable[[int, str], None] | None = None,
) -> list[str]:
    """``num_samples`` texts, each ``prime`` followed by ``length`` generated tokens.

    The prompt is read once; each sample starts from the state after it. One generator
    seeded with ``seed`` draws all samples in turn, so the first sample of a seed is the
    same whatever ``num_samples`` is. ``emit(k, text)`` receives sample ``k``'s text piece
    by piece as it is generated (the prompt first). An empty prompt starts from a line
    end when the vocabulary has one (not shown), else from a random token. The model runs
    where its parameters are; the draws happen on the CPU.
    """
    settings = (settings or Settings()).check()
    if length < 0 or num_samples < 1:
        raise RnnexpError("--length must be >= 0 and --num-samples >= 1")
    generator = torch.Generator().manual_seed(seed)
    ids = vocab.encode_prime(prime)
    shown = bool(ids)
    if not ids:
        start = vocab.start_id
        ids = [start if start is not None else int(torch.randint(len(vocab), (1,),
                                                                 generator=generator))]  # fmt: skip
    with torch.inference_mode():  # no autograd bookkeeping: cheaper ops on the hot path
        return _generate(model, vocab, ids, shown, length, settings, generator, num_samples, emit)


def _generate(
    model: SequenceModel,
    vocab: Vocabulary,
    ids: list[int],
    shown: bool,
    length: int,
    settings: Settings,
    generator: torch.Generator,
    num_samples: int,
    emit: Callable[[int, str], None] | None,
) -> list[str]:
    stepper = Stepper(model)
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
            token = choose(next_logits.cpu(), settings, generator, vocab.unk_id)
            piece = vocab.piece(token, previous)
            pieces.append(piece)
            if emit is not None:
                emit(k, piece)
            previous = token
            if n + 1 < length:
                next_logits = stepper.step(token)
        texts.append("".join(pieces))
    return texts


SEPARATOR = "\n---------------\n"  # between samples, as nanoGPT prints them


def sample_run(
    run: str | Path,
    which: str = "best",
    prime: str = "",
    length: int = 500,
    settings: Settings | None = None,
    seed: int | None = None,
    num_samples: int = 1,
    device: str = "cpu",
    output: Path | None = None,
    stream: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[str]:
    """``rnnexp sample``: restore the checkpoint, generate, write the text.

    Text goes to ``output`` (a file, UTF-8) or to ``out`` (stdout). ``stream`` writes each
    piece as it comes (default: when ``out`` is a terminal); otherwise each sample is
    written whole. Without ``seed`` a random one is drawn and reported on ``err``.
    """
    from rnnexp.evaluate import restore
    from rnnexp.tasks.charlm import CharLMTask  # it imports this module

    out, err = out or sys.stdout, err or sys.stderr
    restored = restore(run, which, overrides=[f"train.device={device}"])
    if not isinstance(restored.task, CharLMTask):
        raise RnnexpError(
            f"{restored.path} is a {restored.cfg.task.name} model; rnnexp sample needs a "
            "language model (task=charlm)"
        )
    vocab = restored.task.vocab  # from the checkpoint: no data file is read
    vocab.encode_prime(prime)  # a bad prompt fails before anything is written
    if seed is None:
        seed = secrets.randbelow(2**31)
        print(f"seed {seed} (repeat with --seed {seed})", file=err)
    target = open(output, "w", encoding="utf-8") if output else out  # noqa: SIM115
    if stream is None:
        stream = output is None and out.isatty()

    started = [False] * num_samples

    def emit(k: int, piece: str) -> None:
        if k and not started[k]:
            target.write(SEPARATOR)
        started[k] = True
        target.write(piece)
        target.flush()

    try:
        texts = generate(restored.model, vocab, prime, length, settings, seed=seed,
                         num_samples=num_samples, emit=emit if stream else None)  # fmt: skip
        if not stream:
            target.write(SEPARATOR.join(texts))
        target.write("\n")
        target.flush()
    finally:
        if output:
            target.close()
    if output:
        print(f"wrote {num_samples} sample(s) to {output}", file=err)
    return texts
