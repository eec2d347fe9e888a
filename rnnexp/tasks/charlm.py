"""Character (or word) language model on a text file, trained as char-rnn does.

The text is any UTF-8 file (``task.data.path``) or a named corpus downloaded into the
cache (``task.data.name=tinyshakespeare``). It is split *contiguously*: the first part
trains, the next ``val_fraction`` validates, the last ``test_fraction`` tests. The
vocabulary is built from the training part (Unicode characters, not bytes) and saved in
every checkpoint, so sampling needs no data file.

Training batches follow char-rnn: the training text is cut into ``B`` equal streams read
side by side, ``seq_len`` steps a batch, the hidden state carried (detached) from one batch
to the next and reset at each epoch. Metrics come from one full pass over the split with
the state carried along: loss in nats per character (per word at ``level=word``), bits
per character and perplexity. See ``tasks/charlm/README.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp.data import download
from rnnexp.data.streams import Batch, EpochStream
from rnnexp.data.vocab import UNK_CHAR, Vocab, split_tokens
from rnnexp.errors import RnnexpError
from rnnexp.nn.generation import Settings, generate
from rnnexp.tasks.base import Task, TaskSpec, check_split, eval_mode

log = logging.getLogger(__name__)

# Named corpora for task.data.name: URL, sha256 and file name in the cache.
CORPORA = {
    "tinyshakespeare": {
        "url": "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
        "tinyshakespeare/input.txt",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "file": "tinyshakespeare/input.txt",
    },
}
DATA_KEYS = ("path", "name", "cache_dir", "val_fraction", "test_fraction")

IGNORE = -100  # F.cross_entropy's ignore_index: padding in the evaluation pass
MAX_NEWTON_STEPS = 12  # task.calibrate: passes over val to fit the temperature (4-5 suffice)


def encode(vocab: Vocab, tokens: list[str] | str) -> tuple[Tensor, list[str]]:
    """Ids ``(N,)`` (int64) and the distinct tokens outside the vocabulary (mapped to
    ``unk``, or to -1 when there is none): :meth:`Vocab.lookup`, vectorized for a long
    text of characters (code points -> ids through one table)."""
    if vocab.level != "char" or len(tokens) <= 10_000:
        ids, missing = vocab.lookup(tokens)
        return torch.tensor(ids, dtype=torch.long), missing
    unk = -1 if vocab.unk_id is None else vocab.unk_id
    codes = torch.frombuffer(bytearray(tokens.encode("utf-32-le")), dtype=torch.int32).long()
    known = torch.tensor([ord(t) for t in vocab.tokens], dtype=torch.long)
    top = int(max(codes.max().item(), known.max().item())) + 1
    table = torch.full((top,), -1, dtype=torch.long)
    table[known] = torch.arange(len(vocab.tokens))
    ids = table[codes]
    missing = sorted({chr(c) for c in codes[ids < 0].unique().tolist()})
    ids[ids < 0] = unk
    return ids, missing


class TextStream(EpochStream):
    """char-rnn batches over one long token sequence.

    At each epoch start the text, shifted by a random offset in ``[0, seq_len)`` (drawn
    from the stream's generator, so truncation points move between epochs), is cut into
    ``batch_size`` contiguous streams of ``L`` tokens: ``(B, L)``. Batch ``k`` of the epoch
    is ``inputs = streams[:, kT:(k+1)T]``, ``targets`` the same shifted by one, with
    ``reset_state`` only at ``k = 0``, so the training loop carries the hidden state
    across the epoch. The state dict (:class:`EpochStream`'s and the offset) lets a
    resumed run continue with the very next batch.
    """

    def __init__(self, tokens: Tensor, batch_size: int, seq_len: int, seed: int) -> None:
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.offset = 0
        super().__init__(seed)  # the generator draws each epoch's offset

    def start_epoch(self) -> None:
        self.offset = int(torch.randint(self.seq_len, (1,), generator=self.generator))
        self.layout()

    def layout(self) -> None:
        length = (len(self.tokens) - self.offset) // self.batch_size
        used = self.tokens[self.offset : self.offset + length * self.batch_size]
        self.streams = used.view(self.batch_size, length)  # (B, L)
        self.batches_per_epoch = (length - 1) // self.seq_len

    def batch(self, position: int) -> Batch:
        start = position * self.seq_len
        chunk = self.streams[:, start : start + self.seq_len + 1]  # (B, T + 1)
        return Batch(inputs=chunk[:, :-1], targets=chunk[:, 1:], reset_state=position == 0)

    def epoch_state(self) -> dict[str, Any]:
        return {"offset": self.offset}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        self.offset = state["offset"]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "index" in state:  # written before EpochStream, which calls the position so
            state = {**state, "position": state["index"]}
        super().load_state_dict(state)


class CharLMTask(Task):
    """Next-token prediction on a text: inputs and targets ``(B, T)`` token ids, output
    ``(B, T, V)`` logits, cross-entropy at every step.

    Args:
        data: ``path`` (a UTF-8 file; wins over ``name``), ``name`` (a corpus of
            :data:`CORPORA`, downloaded into ``cache_dir``), ``cache_dir`` (``None``:
            ``$RNNEXP_CACHE`` or ``~/.cache/rnnexp``), ``val_fraction``, ``test_fraction``.
        level: ``char`` or ``word``.
        seq_len: truncated-BPTT steps per training batch (and per evaluation chunk).
        vocab_size: ``level=word``: the vocabulary, ``<unk>`` and ``<eos>`` included.
        encoder: ``onehot`` or ``embedding`` (``model.embedding_size``); ``None``: one-hot
            for characters (char-rnn), an embedding for words.
        num_val, num_test: score only the first so many tokens of the split (``None``: all).
        eval_batch_size: parallel streams of the evaluation pass.
        num_samples, sample_length, sample_temperature: the samples logged to TensorBoard
            at each evaluation (text ``samples``).
        calibrate: after training, fit a softmax temperature on val and fold it into the
            head (:meth:`calibrate`); the test score and the checkpoints then use it.
    """

    name = "charlm"
    metric = "loss"
    metric_mode = "min"

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        level: str = "char",
        seq_len: int = 100,
        vocab_size: int = 10_000,
        encoder: str | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        eval_batch_size: int = 32,
        num_samples: int = 2,
        sample_length: int = 300,
        sample_temperature: float = 0.8,
        calibrate: bool = False,
        name: str = "charlm",
    ) -> None:
        self.data = {"path": None, "name": "tinyshakespeare", "cache_dir": None,
                     "val_fraction": 0.05, "test_fraction": 0.05, **dict(data or {})}  # fmt: skip
        unknown = sorted(set(self.data) - set(DATA_KEYS))
        if unknown:
            raise RnnexpError(
                f"task.data has no key {', '.join(unknown)}; it takes: {', '.join(DATA_KEYS)}"
            )
        val, test = float(self.data["val_fraction"]), float(self.data["test_fraction"])
        if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
            raise RnnexpError(
                f"task.data.val_fraction={val} and task.data.test_fraction={test} must be in "
                "(0, 1) and leave some text for training"
            )
        if level not in ("char", "word"):
            raise RnnexpError(f"task.level={level!r}; choose char or word")
        self.level = level
        if seq_len < 1 or vocab_size < 3:
            raise RnnexpError("task.seq_len must be >= 1 and task.vocab_size >= 3")
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self.encoder = encoder or ("onehot" if level == "char" else "embedding")
        if self.encoder not in ("onehot", "embedding"):
            raise RnnexpError(f"task.encoder={encoder!r}; choose onehot, embedding or null")
        self.limits = {"train": num_val, "val": num_val, "test": num_test}
        self.eval_batch_size = eval_batch_size
        self.num_samples, self.sample_length = num_samples, sample_length
        self.sample_temperature = sample_temperature
        self.calibrate_temperature = calibrate
        self._vocab: Vocab | None = None  # from the training text or a checkpoint
        self._splits: dict[str, Tensor] | None = None  # read lazily: sampling needs no data

    # ------------------------------------------------------------------ data
    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            self._prepare()
        assert self._vocab is not None
        return self._vocab

    def setup(self, state: dict[str, Any] | None = None) -> TaskSpec:
        """Read and split the text and build the vocabulary; or restore the vocabulary of
        ``state`` (the text is then read on first use only: sampling needs none). The
        model reads one token a step (one-hot or embedded) and scores the next."""
        if state is not None:
            self.load_state_dict(state)
        size = len(self.vocab)
        return TaskSpec(self.encoder, size, size, head="every_step")

    def token_vocab(self) -> Vocab:
        """The vocabulary the model reads and predicts (:class:`~rnnexp.tasks.base.Generates`)."""
        return self.vocab

    def text_path(self) -> str:
        """The text file: ``data.path``, or the cached download of ``data.name``."""
        if self.data["path"]:
            return str(self.data["path"])
        name = self.data["name"]
        if name not in CORPORA:
            raise RnnexpError(
                f"task.data.name={name!r} is not a known corpus ({', '.join(CORPORA)}); "
                "pass your own text with task.data.path=FILE"
            )
        corpus = CORPORA[name]
        hint = "pass a local copy with task.data.path=FILE"
        return str(download.fetch(corpus["url"], corpus["sha256"], corpus["file"],
                              self.data["cache_dir"], hint=hint))  # fmt: skip

    def _prepare(self) -> None:
        """Read, tokenize and split the text; build the vocabulary unless one was loaded."""
        path = self.text_path()
        tokens = split_tokens(download.read_text(path), self.level)
        total = len(tokens)
        if total == 0:
            raise RnnexpError(
                f"task.data.path={path} is empty (no {self.level}s); pass a text file"
            )
        n_test = int(total * self.data["test_fraction"])
        n_val = int(total * self.data["val_fraction"])
        n_train = total - n_val - n_test
        if min(n_val, n_test) < 2 or n_train < 2:
            raise RnnexpError(
                f"task.data.path={path} is too short to split ({total} {self.level}s into "
                f"train/val/test {n_train}/{n_val}/{n_test}); use a longer text"
            )
        parts = {"train": tokens[:n_train], "val": tokens[n_train : n_train + n_val],
                 "test": tokens[n_train + n_val :]}  # fmt: skip
        vocab = self._vocab or (
            Vocab.of_characters(parts["train"])
            if self.level == "char"
            else Vocab.of_words(parts["train"], self.vocab_size)
        )
        splits, missing = {}, set()
        for name, part in parts.items():
            splits[name], unseen = encode(vocab, part)
            missing.update(unseen)
        if missing and vocab.unk is None:
            if self._vocab is not None:
                raise RnnexpError(
                    f"{path} has characters outside the checkpoint's vocabulary "
                    f"({', '.join(repr(c) for c in sorted(missing)[:10])}); was the "
                    "model trained on another text?"
                )
            log.warning("charlm: %d characters of val/test are not in the training text "
                        "(%s); they are scored as U+FFFD", len(missing),
                        ", ".join(repr(c) for c in sorted(missing)[:10]))  # fmt: skip
            vocab = vocab.extended([UNK_CHAR], unk=UNK_CHAR)
            splits = {name: encode(vocab, part)[0] for name, part in parts.items()}
        self._vocab, self._splits = vocab, splits
        log.info("charlm: %s: %d %ss, vocabulary %d; train/val/test %d/%d/%d", path, total,
                 self.level, len(vocab), n_train, n_val, n_test)  # fmt: skip

    def split(self, name: str) -> Tensor:
        """The token ids ``(N,)`` of ``train``, ``val`` or ``test``."""
        check_split(name)
        if self._splits is None:
            self._prepare()
        assert self._splits is not None
        return self._splits[name]

    # ------------------------------------------------------------------ training
    def train_stream(self, batch_size: int, seed: int) -> TextStream:
        tokens = self.split("train")
        if len(tokens) < batch_size * (2 * self.seq_len + 1):
            raise RnnexpError(
                f"the training text ({len(tokens)} {self.level}s) is too short for "
                f"train.batch_size={batch_size} streams of task.seq_len={self.seq_len} steps; "
                "lower them or use a longer text"
            )
        stream = TextStream(tokens, batch_size, self.seq_len, seed)
        log.info("charlm: %d streams x %d steps: %d batches per epoch", batch_size,
                 self.seq_len, stream.batches_per_epoch)  # fmt: skip
        return stream

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), batch.targets.reshape(-1))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """One pass over the whole split (or its first ``num_val``/``num_test`` tokens).

        The split is cut into ``eval_batch_size`` contiguous streams read ``seq_len`` steps
        at a time with the state carried, so every token but the first is predicted once,
        from all the text before it in its stream.
        """
        total, count = torch.zeros((), dtype=torch.float64), 0
        for logits, targets in self.predictions(model, split, device):
            total += F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum").cpu()
            count += int((targets != IGNORE).sum())
        loss = total.item() / count
        unit = "char" if self.level == "char" else "word"
        return {"loss": loss, f"bits_per_{unit}": loss / math.log(2), "perplexity": math.exp(loss)}

    def predictions(
        self, model: nn.Module, split: str, device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """:meth:`evaluate`'s pass: ``(logits (N, V) float32, targets (N,))`` a chunk at
        a time, the padding at the end of the last stream marked ``IGNORE``. With
        ``eval_batch_size=1`` the chunks follow the text in order."""
        tokens = self.split(split)
        limit = self.limits[split]
        if limit is not None:
            tokens = tokens[: max(int(limit), 1) + 1]
        count = len(tokens) - 1  # predictions
        streams = max(1, min(self.eval_batch_size, count))
        length = math.ceil(count / streams)
        inputs = torch.zeros(streams * length, dtype=torch.long)
        targets = torch.full((streams * length,), IGNORE, dtype=torch.long)
        inputs[:count], targets[:count] = tokens[:-1], tokens[1:]
        inputs, targets = inputs.view(streams, length), targets.view(streams, length)
        state = None
        with eval_mode(model):
            for start in range(0, length, self.seq_len):
                chunk = slice(start, start + self.seq_len)
                output, state = model(inputs[:, chunk].to(device), state)
                yield (
                    output.float().reshape(-1, output.shape[-1]),
                    targets[:, chunk].reshape(-1).to(device),
                )

    @torch.no_grad()
    def calibrate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        r"""With ``task.calibrate``: the softmax temperature ``T`` that minimises the
        validation loss of ``logits / T`` (temperature scaling: Guo, Pleiss, Sun and
        Weinberger 2017, "On calibration of modern neural networks"). ``None`` without it.

        The loss is convex in :math:`\beta = 1/T`, with

        .. math::
            \frac{dL}{d\beta} = \overline{E_p[z] - z_y}, \qquad
            \frac{d^2L}{d\beta^2} = \overline{\mathrm{Var}_p[z]}

        over the predictions (``z``: logits, ``y``: target, ``p = softmax(beta z)``), so a
        few Newton steps from :math:`\beta = 1` find it: one pass over val each.
        """
        if not self.calibrate_temperature:
            return None
        beta, losses = 1.0, []
        for _ in range(MAX_NEWTON_STEPS):
            # sums over the predictions, in float64: loss, dL/dbeta, d2L/dbeta2
            loss, slope, curvature = torch.zeros(3, dtype=torch.float64, device=device).unbind()
            count = 0
            for logits, targets in self.predictions(model, "val", device):
                keep = targets != IGNORE
                z, y = logits[keep].double(), targets[keep]  # (N, V), (N,)
                log_p = torch.log_softmax(beta * z, dim=-1)
                p = log_p.exp()
                mean_z = (p * z).sum(-1)  # E_p[z]: (N,)
                loss += -log_p.gather(1, y[:, None]).sum()
                slope += (mean_z - z.gather(1, y[:, None])[:, 0]).sum()
                curvature += (p * (z - mean_z[:, None]) ** 2).sum()
                count += len(y)
            losses.append(loss.item() / count)  # at this beta
            step = (slope / curvature.clamp_min(1e-12)).item()
            if abs(step) < 1e-4 * beta:
                break
            beta = max(beta - step, beta / 4)  # a convex loss; never let beta reach 0
        else:
            raise RnnexpError(
                f"task.calibrate: the softmax temperature did not converge in "
                f"{MAX_NEWTON_STEPS} Newton steps (val losses {losses}); set task.calibrate=false"
            )
        result = {"temperature": 1.0 / beta, "val_loss_before": losses[0], "val_loss": losses[-1]}
        log.info("charlm: softmax temperature %.4f fit on val in %d passes: val loss %.4f -> %.4f",
                 result["temperature"], len(losses), losses[0], losses[-1])  # fmt: skip
        return result

    def diagnostics_batch(self) -> Batch:
        """The first ``4 x seq_len`` validation tokens as 4 streams (``train.diagnostics``)."""
        tokens = self.split("val")
        steps = max(1, min(self.seq_len, (len(tokens) - 1) // 4))
        chunk = tokens[: 4 * steps + 1]
        inputs, targets = chunk[:-1].view(4, steps), chunk[1:].view(4, steps)
        return Batch(inputs=inputs, targets=targets)

    def texts(self, model: nn.Module, device: torch.device) -> dict[str, str]:
        """A few samples (fixed seeds, ``sample_temperature``) as TensorBoard text."""
        if self.num_samples < 1 or self.sample_length < 1:
            return {}
        settings = Settings(temperature=self.sample_temperature)
        with eval_mode(model):
            samples = generate(model, self.vocab, "", self.sample_length, settings,
                               seed=0, num_samples=self.num_samples)  # fmt: skip
        blocks = [
            f"sample {k + 1} (temperature {self.sample_temperature}):\n\n"
            + "\n".join("    " + line for line in text.split("\n"))
            for k, text in enumerate(samples)
        ]
        return {"samples": "\n\n".join(blocks)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.vocab.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state or "vocab" not in state:
            raise RnnexpError("the checkpoint holds no charlm vocabulary; was it a charlm run?")
        vocab = Vocab.from_state(state["vocab"])
        if vocab.level != self.level:
            raise RnnexpError(
                f"the checkpoint is a task.level={vocab.level} model; set task.level={vocab.level}"
            )
        if self._vocab is not None and vocab != self._vocab:
            raise RnnexpError(
                f"the vocabulary of the text ({len(self._vocab)} tokens) differs from the "
                f"checkpoint's ({len(vocab)}); resume with the same task.data and task.level"
            )
        self._vocab = vocab
