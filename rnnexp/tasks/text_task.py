"""What text tasks share (``sentiment``, ``ner`` and later ones): :class:`TextTask`.

A text task reads its files lazily, on first use, through the pipeline of
:mod:`rnnexp.data.text`: vocabularies from the training split, padded batches with true
lengths in length buckets, held-out splits sorted by length. A task rebuilt from a
checkpoint gets its vocabularies from :meth:`TextTask.load_state_dict` and never opens a
data file, so ``rnnexp predict`` and ``rnnexp evaluate`` need only the files they score.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from rnnexp.data.text import (
    BucketStream,
    Example,
    check_file,
    collate,
    normalize,
    pretrained_words,
    read_vectors,
    tokenize,
)
from rnnexp.data.vocab import PAD_ID, Vocab
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, PretrainedVectors, Task, TaskSpec, check_split, eval_mode

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """The last evaluation of a split, kept for the figures and for written predictions."""

    split: str
    examples: list[Example]
    outputs: list[Any]  # per example, in file order: logits (C,) or tag ids
    metrics: dict[str, float] = field(default_factory=dict)


def plain(node: Any) -> Any:
    """A config node as plain Python data."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class TextTask(Task):
    """What text tasks share. Subclasses read their files (:meth:`read_split`), build
    their label set (:meth:`fit_labels`), encode a target (:meth:`encode_target`), turn
    model outputs into predictions (:meth:`decode`), score them (:meth:`score`) and label
    typed-in text (:meth:`predict_texts`).

    :meth:`setup` reads the training file (vocabularies, label set, pretrained vectors);
    ``setup(state)`` restores the vocabularies of a checkpoint and opens no data file, so
    ``rnnexp predict`` works without the data. The other splits are read on first use.
    ``val`` is the dev file; ``test`` the test file.

    Args:
        data: ``task.data``: ``train_path``, ``dev_path``, ``test_path`` and the
            subclass's own keys.
        name: the task's name (run folders, logs).
        lowercase, normalize_digits: the vocabulary form of a word (:func:`normalize`).
        tokenizer: ``whitespace`` or ``simple`` (:func:`rnnexp.data.text.tokenize`).
        min_freq, vocab_size: which training words get an entry
            (:meth:`rnnexp.data.vocab.Vocab.by_frequency`).
        word_dropout: training only: each singleton word becomes ``<unk>`` with this
            probability.
        embeddings: ``{"path": GloVe file or None, "freeze": bool, "extend_vocab": bool}``.
        bucket_size: batches per length bucket (:class:`rnnexp.data.text.BucketStream`).
        eval_batch_size: sentences per batch when scoring.
        num_val, num_test: score only the first N dev/test examples (``None``: all).
        max_word_length: characters kept per word for character inputs.
    """

    head: str  # every_step (a tag per word) or last_step (a label per text)
    tagging = False  # a label per word, from a tag set (model.crf may be used)
    chars = False  # whether inputs carry character ids (B, T, 1 + C)
    files = {"train": "train_path", "val": "dev_path", "test": "test_path"}
    source_hint = ""  # where to get the default data; appended to missing-file errors

    def __init__(
        self,
        data: Mapping[str, Any],
        name: str,
        lowercase: bool = False,
        normalize_digits: bool = False,
        tokenizer: str = "whitespace",
        min_freq: int = 1,
        vocab_size: int | None = None,
        word_dropout: float = 0.0,
        embeddings: Mapping[str, Any] | None = None,
        bucket_size: int = 50,
        eval_batch_size: int = 256,
        num_val: int | None = None,
        num_test: int | None = None,
        max_word_length: int = 30,
    ) -> None:
        self.name = name
        self.data = dict(plain(data))
        self.lowercase = lowercase
        self.normalize_digits = normalize_digits
        tokenize("", tokenizer)  # checks the name
        self.tokenizer = tokenizer
        if min_freq < 1:
            raise RnnexpError(f"task.min_freq={min_freq} must be >= 1")
        self.min_freq = min_freq
        self.vocab_size = vocab_size
        if not 0.0 <= word_dropout < 1.0:
            raise RnnexpError(f"task.word_dropout={word_dropout} must be in [0, 1)")
        self.word_dropout = word_dropout
        self.embeddings = {
            "path": None, "freeze": False, "extend_vocab": False, **(plain(embeddings) or {})
        }  # fmt: skip
        self.bucket_size = bucket_size
        self.eval_batch_size = eval_batch_size
        self.limits = {"val": num_val, "test": num_test}
        self.max_word_length = max_word_length
        self.words: Vocab | None = None
        self.labels: Vocab | None = None
        self.char_vocab: Vocab | None = None
        self.restored = False  # vocabularies came from a checkpoint
        self._examples: dict[str, list[Example]] = {}
        self._held_out: dict[str, list[tuple[Batch, list[int]]]] = {}
        self.last: Evaluation | None = None
        self._warned = False  # that split=test is the dev file

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def read_split(self, path: Path, key: str) -> list[tuple[list[str], Any, int, str]]:
        """``(tokens, raw target, line, text)`` for every example of a file."""

    @abstractmethod
    def fit_labels(self, targets: list[Any]) -> Vocab:
        """The label (tag) set from the training targets."""

    @abstractmethod
    def encode_target(self, target: Any, where: str) -> Tensor:
        """A raw target as ids; an unknown label is a one-line error naming ``where``."""

    @abstractmethod
    def score(
        self, evaluation: Evaluation, losses: list[float], sizes: list[int]
    ) -> dict[str, float]:
        """Metrics of the model outputs of ``evaluation``."""

    @abstractmethod
    def decode(self, output: Any, batch: Batch) -> list[Any]:
        """Per-example predictions from the model output of one batch."""

    @abstractmethod
    def predict_texts(self, model: nn.Module, texts: list[str], device: torch.device) -> list[dict]:
        """``rnnexp predict``: a plain-data answer for every typed-in sentence."""

    @abstractmethod
    def write_predictions(
        self, model: nn.Module, split: str, device: torch.device, path: Path
    ) -> Path:
        """``rnnexp evaluate ... +write_predictions=true``: the predictions of ``split``
        beside ``path`` (its name plus the format's suffix); the file written."""

    # ------------------------------------------------------------------ data
    def path(self, split: str) -> tuple[str, str | None]:
        key = self.files[check_split(split)]
        return f"task.data.{key}", self.data.get(key)

    def normal(self, token: str) -> str:
        return normalize(token, self.lowercase, self.normalize_digits)

    def char_ids(self, token: str) -> list[int]:
        """Character ids of a word (case kept; digits normalized as words are)."""
        token = normalize(token, False, self.normalize_digits)[: self.max_word_length]
        return self.char_vocab.encode(token)

    def make_example(
        self, tokens: list[str], target: Tensor, line: int = 0, text: str = ""
    ) -> Example:
        ids = torch.tensor(self.words.encode(self.normal(t) for t in tokens), dtype=torch.long)
        chars = None
        if self.chars:
            rows = [self.char_ids(t) for t in tokens]
            width = max(len(r) for r in rows)
            chars = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)
        return Example(ids, target, tokens, line, chars, text)

    def _read(self, split: str) -> list[tuple[list[str], Any, int, str]]:
        key, value = self.path(split)
        path = check_file(value, key, self.source_hint)
        raw = self.read_split(path, key)
        if not raw:
            raise RnnexpError(
                f"{key}={value} holds no examples (it is empty, or only headers and blank "
                f"lines); point {key} at a file with data"
            )
        return raw

    def _encode(self, split: str, raw: list[tuple[list[str], Any, int, str]]) -> list[Example]:
        _, value = self.path(split)
        return [
            self.make_example(tokens, self.encode_target(target, f"{value}:{line}"), line, text)
            for tokens, target, line, text in raw
        ]

    def fit(self) -> None:
        """Read the training split and build the vocabularies and the label set (once)."""
        if self.words is not None:
            return
        raw = self._read("train")
        counts = Counter(self.normal(t) for tokens, *_ in raw for t in tokens)
        self.words = Vocab.by_frequency(counts, self.min_freq, self.vocab_size)
        if self.embeddings.get("path") and self.embeddings.get("extend_vocab"):
            self.extend_with_pretrained(raw)
        self.labels = self.fit_labels([target for _, target, *_ in raw])
        if self.chars:
            chars = Counter(
                c
                for tokens, *_ in raw
                for t in tokens
                for c in normalize(t, False, self.normalize_digits)
            )
            self.char_vocab = Vocab.by_frequency(chars, level="char")
        self._examples["train"] = self._encode("train", raw)
        log.info(
            "%s: %d training examples; %d distinct words, %d in the vocabulary; %d labels",
            self.name, len(raw), len(counts), len(self.words), len(self.labels),
        )  # fmt: skip

    def extend_with_pretrained(self, train: list[tuple[list[str], Any, int, str]]) -> None:
        """``task.embeddings.extend_vocab``: give an entry to every word of the train, dev
        and test texts that the vocabulary lacks but the vector file has (exact or
        lower-cased form), as Lample et al. 2016 do. Such a word never occurs in training
        (or too rarely for ``min_freq``), so it keeps its pretrained vector instead of
        reading as ``<unk>``. Only the texts are read, never the labels."""
        texts = [train] + [self._read(s) for s in ("val", "test") if self.path(s)[1]]
        missing = {
            form
            for raw in texts
            for tokens, *_ in raw
            for form in map(self.normal, tokens)
            if form not in self.words
        }
        path = self.embeddings["path"]
        file = check_file(path, "task.embeddings.path", "; a GloVe-format text file")
        known = pretrained_words(file, "task.embeddings.path")
        added = sorted(w for w in missing if w in known or w.lower() in known)
        # training counts kept: the added words are no singletons
        self.words = self.words.extended(added)
        log.info(
            "%s: task.embeddings.extend_vocab added %d words with pretrained vectors",
            self.name, len(added),
        )  # fmt: skip

    def examples(self, split: str) -> list[Example]:
        """The encoded examples of ``split`` (cached); ``test`` without a test file is the
        dev file (logged), and ``num_val``/``num_test`` keep only the first N."""
        limit = self.limits.get(check_split(split))
        self.fit()
        if split == "test" and not self.data.get("test_path"):
            if not self._warned:
                log.warning("%s: task.data.test_path is not set: test = the dev file", self.name)
                self._warned = True
            split = "val"
        if split not in self._examples:
            self._examples[split] = self._encode(split, self._read(split))
        found = self._examples[split]
        return found[:limit] if limit else found

    def setup(self, state: dict[str, Any] | None = None) -> TaskSpec:
        """Read the training file (vocabularies, label set), or restore the vocabularies
        of ``state``; then the spec: word ids (and character ids), bidirectional by
        default, the pretrained vectors of a new model (``task.embeddings``)."""
        if state is not None:
            self.load_state_dict(state)
        self.fit()  # nothing to do with restored vocabularies
        path = self.embeddings.get("path")
        return TaskSpec(
            input_kind="embedding",
            input_size=len(self.words),
            output_size=len(self.labels),
            head=self.head,
            bidirectional=True,  # the default of model.bidirectional=null for text tasks
            num_chars=len(self.char_vocab) if self.chars else 0,
            tagging=self.tagging,
            # a restored model has its trained embedding already: no file read
            vectors=self.pretrained_vectors() if path and not self.restored else None,
            freeze_embedding=bool(path) and bool(self.embeddings.get("freeze", False)),
        )

    def pretrained_vectors(self) -> PretrainedVectors:
        """The vectors of ``task.embeddings.path`` for the vocabulary's words."""
        path = self.embeddings["path"]
        file = check_file(path, "task.embeddings.path", "; a GloVe-format text file")
        vectors, found = read_vectors(file, self.words, None, "task.embeddings.path")
        log.info(
            "%s: pretrained vectors for %d of %d words from %s",
            self.name, int(found.sum()), len(self.words), path,
        )  # fmt: skip
        return PretrainedVectors(vectors, found, str(path))

    # ------------------------------------------------------------------ training
    def train_stream(self, batch_size: int, seed: int) -> BucketStream:
        train = self.examples("train")
        counts = self.words.counts  # empty for restored vocabularies: no word dropout
        once = [i for token, i in self.words.index.items() if counts[token] == 1]
        singletons = torch.tensor(once, dtype=torch.long) if once else None

        def make_batch(indices: list[int], generator: torch.Generator) -> Batch:
            chosen = [train[i] for i in indices]
            return collate(chosen, singletons, self.word_dropout, generator)

        stream = BucketStream(
            [len(e) for e in train], make_batch, batch_size, seed, self.bucket_size
        )
        log.info(
            "%s: %d steps per epoch at batch size %d",
            self.name,
            stream.batches_per_epoch,
            batch_size,
        )
        return stream

    # ------------------------------------------------------------------ evaluation
    def held_out(self, split: str) -> list[tuple[Batch, list[int]]]:
        """``split`` in batches sorted by length (little padding), each with the indices
        of its examples (cached)."""
        if split not in self._held_out:
            found = self.examples(split)
            order = sorted(range(len(found)), key=lambda i: len(found[i]))
            size = self.eval_batch_size
            chunks = [order[i : i + size] for i in range(0, len(order), size)]
            self._held_out[split] = [(collate([found[i] for i in c]), c) for c in chunks]
        return self._held_out[split]

    @torch.no_grad()
    def run(
        self, model: nn.Module, batches: list[tuple[Batch, list[int]]], device: torch.device
    ) -> tuple[list[Any], list[float], list[int]]:
        """Predictions per example (in file order), and each batch's loss and size."""
        count = sum(len(c) for _, c in batches)
        outputs: list[Any] = [None] * count
        losses, sizes = [], []
        with eval_mode(model):
            for batch, indices in batches:
                batch = batch.to(device)
                output, _ = model(batch.inputs, lengths=batch.lengths)
                losses.append(self.loss(output, batch).item())
                sizes.append(len(indices))
                for i, prediction in zip(indices, self.decode(output, batch), strict=True):
                    outputs[i] = prediction
        return outputs, losses, sizes

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        examples = self.examples(split)
        outputs, losses, sizes = self.run(model, self.held_out(split), device)
        self.last = Evaluation(split, examples, outputs)
        self.last.metrics = self.score(self.last, losses, sizes)
        return self.last.metrics

    def split_text(self, text: str) -> list[str]:
        """The tokens of a text (``task.tokenizer``)."""
        return tokenize(text, self.tokenizer)

    def encode_texts(self, texts: list[str]) -> list[Example]:
        """Typed-in sentences as examples with placeholder targets (class or tags 0)."""
        self.fit()
        examples = []
        for text in texts:
            tokens = self.split_text(text)
            if not tokens:
                raise RnnexpError(f"nothing to label in {text!r}: give a sentence with words")
            target = torch.zeros(len(tokens) if self.tagging else (), dtype=torch.long)
            examples.append(self.make_example(tokens, target, 0, text))
        return examples

    @torch.no_grad()
    def forward_texts(
        self, model: nn.Module, texts: list[str], device: torch.device
    ) -> tuple[list[Example], Tensor, Batch]:
        """Typed-in sentences through the model as one padded batch, in eval mode:
        ``(examples, model output, batch)`` for :meth:`predict_texts`."""
        examples = self.encode_texts(texts)
        batch = collate(examples).to(device)
        with eval_mode(model):
            output, _ = model(batch.inputs, lengths=batch.lengths)
        return examples, output, batch

    def unknown(self, tokens: list[str]) -> list[str]:
        """The tokens that fall outside the vocabulary (read as ``<unk>``)."""
        return [t for t in tokens if self.normal(t) not in self.words]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        self.fit()
        state = {"words": self.words.state_dict(), "labels": self.labels.state_dict()}
        if self.chars:
            state["chars"] = self.char_vocab.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The vocabularies of :meth:`state_dict`, or the bare lists that checkpoints held
        before :class:`~rnnexp.data.vocab.Vocab` (see its ``from_state``)."""
        self.words = Vocab.from_state(state["words"], list_level="word")
        self.labels = Vocab.from_state(state["labels"], list_level="label")
        if self.chars:
            self.char_vocab = Vocab.from_state(state["chars"], list_level="char")
        self.restored = True
        self._examples.clear()  # encoded with the old vocabularies
        self._held_out.clear()
