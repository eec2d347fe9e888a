"""The interface between a task and the rest: :class:`Task`, :class:`TaskSpec`, protocols."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from rnnexp.data.streams import Batch, BatchStream, Stream
from rnnexp.errors import RnnexpError

if TYPE_CHECKING:
    from rnnexp.data.vocab import Vocab

SPLITS = ("train", "val", "test")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block (no dropout), the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


HELD_OUT_SEED_BASE = 1_000_003


INPUT_KINDS = ("linear", "onehot", "embedding")
HEADS = ("every_step", "last_step")


@dataclass(frozen=True, eq=False)
class PretrainedVectors:
    """Word vectors for the word embedding of a new model, read by the task's data layer
    (:func:`rnnexp.data.text.read_vectors`): row ``i`` of ``vectors`` ``(V, D)`` belongs to word
    id ``i``; rows where ``found`` ``(V,)`` is false keep the embedding's random init.
    ``D`` is the file's width, which must equal ``model.embedding_size``; ``source`` names
    the file in messages."""

    vectors: Tensor
    found: Tensor
    source: str


@dataclass(frozen=True)
class TaskSpec:
    """What :func:`rnnexp.nn.model.build_model` needs to know of a task, and all of it: the
    builder never reads the task itself. :meth:`Task.setup` returns it.

    Attributes:
        input_kind: ``linear`` (float features ``(B, T, input_size)`` fed as they are: the
            first layer's ``W_ih`` is the input map), ``onehot`` or ``embedding`` (token
            ids ``(B, T)``, or ``(B, T, 1 + C)`` with character ids, see ``num_chars``).
        input_size: features per step, or the (word) vocabulary size.
        output_size: the head's outputs: ``(B, T, O)`` or ``(B, O)``.
        head: ``every_step`` (an output at every step) or ``last_step`` (one per sequence).
        bidirectional: what ``model.bidirectional=null`` means for this task.
        num_chars: > 0: token inputs carry character ids ``(B, T, 1 + C)`` from a character
            vocabulary of this size (``model.char_encoder``); 0: none.
        tagging: the task labels every step from a tag set, so ``model.crf=true`` may put
            a CRF on the head (the model's output is then a :class:`rnnexp.nn.crf.CRFScores`).
        vectors: pretrained word vectors for a new model's embedding (``None``: none, or a
            model restored from a checkpoint, whose trained embedding is loaded after).
        freeze_embedding: the word embedding does not train (``task.embeddings.freeze``).
    """

    input_kind: Literal["linear", "onehot", "embedding"]
    input_size: int
    output_size: int
    head: Literal["every_step", "last_step"] = "every_step"
    bidirectional: bool = False
    num_chars: int = 0
    tagging: bool = False
    vectors: PretrainedVectors | None = None
    freeze_embedding: bool = False

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise RnnexpError(
                f"unknown input kind {self.input_kind!r}; choose one of: {', '.join(INPUT_KINDS)}"
            )
        if self.head not in HEADS:
            raise RnnexpError(f"unknown head {self.head!r}; choose every_step or last_step")
        if self.input_size < 1 or self.output_size < 1 or self.num_chars < 0:
            raise RnnexpError(
                f"a task spec needs input_size >= 1, output_size >= 1 and num_chars >= 0 "
                f"(got {self.input_size}, {self.output_size}, {self.num_chars})"
            )


class Task(ABC):
    """Data, loss, metrics and figures for one kind of sequence problem.

    The life of a task: it is built from ``conf/task/<name>.yaml`` (constructor arguments
    only, no file read), then :meth:`setup` is called once, before the model exists. It
    reads the data (a new run), or restores the state a checkpoint saved
    (``setup(state)``: vocabularies, read from no data file), and returns the
    :class:`TaskSpec` that :func:`rnnexp.nn.model.build_model` builds the network from.
    The task never receives the model back: the training loop, evaluation and the
    figures hand it the model's outputs (:meth:`loss`) or the model to run
    (:meth:`evaluate`, :meth:`figures`, ...). A tagger's CRF is part of the model's
    output (:class:`rnnexp.nn.crf.CRFScores`), not of the task. ``train.resume`` sets the
    task up as its first run did (:meth:`setup` without state) and restores
    :meth:`state_dict` along with the rest of the run's state.

    ``metric`` names the key of :meth:`evaluate`'s result that selects ``best.pt``
    (``metric_mode`` ``min``/``max``) and that the progress bar shows; ``diagnostics``
    turns the gradient-flow diagnostics on by default (``train.diagnostics=null``).

    Optional abilities are the protocols below, checked with ``isinstance``:
    :class:`Generates` (a language model: ``rnnexp sample``), :class:`LabelsSentences`
    (``rnnexp predict``), :class:`WritesPredictions` (``+write_predictions=true``),
    :class:`Calibrates` (a softmax temperature fit after training).

    A new task: its module here, its ``conf/task/<name>.yaml``, its page in
    ``tasks/<name>/README.md`` and its test (README, "Layout").
    """

    name: str
    metric: str
    metric_mode: Literal["min", "max"] = "min"
    diagnostics: bool = False  # gradient-flow diagnostics by default (train.diagnostics=null)

    @abstractmethod
    def setup(self, state: dict[str, Any] | None = None) -> TaskSpec:
        """Read the data, or restore ``state`` (what :meth:`state_dict` returned, from a
        checkpoint) without reading data files; the spec the model is built from. Called
        once, before the model is built (the order of random draws depends on it)."""

    @abstractmethod
    def train_stream(self, batch_size: int, seed: int) -> Stream:
        """Endless training batches (:class:`rnnexp.data.streams.Stream`)."""

    @abstractmethod
    def loss(self, output: Any, batch: Batch) -> Tensor:
        """Scalar training loss of the model's ``output`` on ``batch`` (a tensor, or a
        tagger's :class:`rnnexp.nn.crf.CRFScores`)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        """Metrics on a held-out split (``val`` or ``test``); includes ``metric``."""

    def figures(self, model: nn.Module, device: torch.device) -> dict[str, Figure]:
        """Pictures logged at each evaluation (TensorBoard and ``plots/<name>.png``)."""
        return {}

    def texts(self, model: nn.Module, device: torch.device) -> dict[str, str]:
        """Markdown text logged at each evaluation (TensorBoard text), e.g. samples."""
        return {}

    def diagnostics_batch(self) -> Batch | None:
        """A fixed batch for the gradient-flow diagnostics; ``None``: no diagnostics."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Plain data the task needs to rebuild a trained model (e.g. a vocabulary)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (:meth:`setup` with a state calls it)."""
        del state  # stateless by default


@runtime_checkable
class Generates(Protocol):
    """A language model's task: the model's output at each step scores the next token of
    :meth:`token_vocab`, so :func:`rnnexp.nn.generation.generate` writes text with it
    (``rnnexp sample``, :meth:`rnnexp.api.Run.sample`)."""

    def token_vocab(self) -> Vocab:
        """The vocabulary the model reads and predicts (from the checkpoint: no data)."""
        ...


@runtime_checkable
class LabelsSentences(Protocol):
    """A task that labels typed-in sentences (``rnnexp predict``)."""

    def predict_texts(self, model: nn.Module, texts: list[str], device: torch.device) -> list[dict]:
        """A plain-data answer for every sentence."""
        ...


@runtime_checkable
class WritesPredictions(Protocol):
    """A task that writes a split's predictions to a file (``+write_predictions=true``)."""

    def write_predictions(
        self, model: nn.Module, split: str, device: torch.device, path: Path
    ) -> Path:
        """The predictions of ``split`` beside ``path``; the file written."""
        ...


@runtime_checkable
class Calibrates(Protocol):
    """A task whose model's softmax may be calibrated after training: the calibration
    callback (:class:`rnnexp.train.callbacks.Calibration`) sets the read-out's
    ``temperature`` to the fit."""

    def calibrate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        """Fit the softmax temperature of ``model``'s logits on val: ``{"temperature",
        "val_loss_before", "val_loss"}``; ``None`` when the task's config turns it off."""
        ...


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` of a metric whose ``mode`` is ``min`` or ``max`` (``Task.metric_mode``)
    beats ``best`` (``None``: nothing yet)."""
    return best is None or (value < best if mode == "min" else value > best)


# Whether lower (min) or higher (max) is better, for the val metrics rnnexp's tasks report
# (a name also covers its per-kind variants: error_rate_hs97, f1_PER, ...). A task's own
# metric has its class's ``metric_mode``; this table gives the others (``train.objective``).
METRIC_MODES: dict[str, Literal["min", "max"]] = {
    "loss": "min",
    "mse": "min",
    "nrmse": "min",
    "error_rate": "min",
    "bits_per_char": "min",
    "bits_per_word": "min",
    "perplexity": "min",
    "accuracy": "max",
    "solved": "max",
    "f1": "max",
    "macro_f1": "max",
    "precision": "max",
    "recall": "max",
}


def metric_mode(task: type[Task] | Task, name: str | None = None) -> Literal["min", "max"]:
    """``min`` or ``max``: the mode of the val metric ``name`` of ``task`` (a class or an
    instance); ``None`` or the task's own ``metric`` give its ``metric_mode``, others come
    from :data:`METRIC_MODES`. An unknown name is one :class:`RnnexpError` line."""
    if name is None or name == task.metric:
        return task.metric_mode
    known = METRIC_MODES.get(name) or next(
        (mode for key, mode in METRIC_MODES.items() if name.startswith(f"{key}_")), None
    )
    if known is None:
        raise RnnexpError(
            f"train.objective={name} is not a metric rnnexp knows; give null (the task's "
            f"{task.metric}) or a val metric of the task, e.g. {', '.join(METRIC_MODES)}"
        )
    return known


def check_split(split: str) -> str:
    """``split`` if it names one, else a one-line error listing the splits."""
    if split not in SPLITS:
        raise RnnexpError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return split


class SyntheticTask(Task):
    """A task whose data come from a seeded generator (timer, latching, adding, ...).

    Subclasses implement :meth:`sample` and :meth:`score`. Training batches are drawn
    from ``train.seed``; the held-out ``val`` and ``test`` sets are fixed by
    ``task.seed`` alone, so every run of a sweep is scored on the same sequences.

    A subclass states the shape of its sequences, which :meth:`setup` hands on as the
    :class:`TaskSpec`: ``encoder`` (the input kind), ``input_size``, ``output_size`` and
    ``head`` (class attributes, or set in ``__init__`` when they depend on arguments).
    """

    encoder: Literal["linear", "onehot", "embedding"] = "linear"
    input_size: int
    output_size: int
    head: Literal["every_step", "last_step"] = "every_step"

    def __init__(self, seed: int, num_val: int, num_test: int, eval_batch_size: int) -> None:
        self.seed = seed
        self.num_examples = {"val": num_val, "test": num_test}
        self.eval_batch_size = eval_batch_size
        self._held_out: dict[str, list[Batch]] = {}

    def setup(self, state: dict[str, Any] | None = None) -> TaskSpec:
        """Nothing to read and no state: the spec of the generator's sequences."""
        del state
        return TaskSpec(self.encoder, self.input_size, self.output_size, self.head)

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """``batch_size`` fresh sequences drawn with ``generator``."""

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A training batch; the held-out distribution (:meth:`sample`) unless a task
        trains on a wider one."""
        return self.sample(batch_size, generator)

    @abstractmethod
    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        """Metrics of the model outputs on the held-out batches."""

    def train_stream(self, batch_size: int, seed: int) -> BatchStream:
        return BatchStream(self.sample_train, batch_size, seed)

    def held_out(self, split: str) -> list[Batch]:
        """The fixed ``train``/``val``/``test`` set, in chunks of ``eval_batch_size`` (cached)."""
        check_split(split)
        if split not in self._held_out:
            # Distinct, fixed streams per split. "train" is a fixed sample of the training
            # distribution (the training stream itself is endless), as large as val.
            # Held-out seeds live far from typical train.seed values (0, 1, 2, ...), so a
            # training stream never replays a held-out set.
            offset = {"train": 0, "val": 1, "test": 2}[split]
            generator = torch.Generator().manual_seed(HELD_OUT_SEED_BASE + 3 * self.seed + offset)
            size = self.num_examples["val" if split == "train" else split]
            draw = self.held_out_draw(split)
            remaining, chunks = size, []
            while remaining > 0:
                size = min(self.eval_batch_size, remaining)
                chunks.append(draw(size, generator))
                remaining -= size
            self._held_out[split] = chunks
        return self._held_out[split]

    def held_out_draw(self, split: str) -> Callable[[int, torch.Generator], Batch]:
        """How the fixed ``split`` set draws its chunks: :meth:`sample_train` for ``train``,
        :meth:`sample` (the held-out distribution) for ``val`` and ``test``."""
        return self.sample_train if split == "train" else self.sample

    def diagnostics_batch(self) -> Batch:
        return self.held_out("val")[0]

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, device: torch.device) -> list[Tensor]:
        """Model outputs (on the CPU) for each held-out chunk."""
        outputs = []
        with eval_mode(model):
            for batch in self.held_out(split):
                batch = batch.to(device)
                output, _ = model(batch.inputs, lengths=batch.lengths)
                outputs.append(output.float().cpu())
        return outputs

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, float]:
        return self.score(self.predict(model, split, device), self.held_out(split))
