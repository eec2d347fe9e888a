"""The interface between a task and the training loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from rnnexp.errors import RnnexpError
from rnnexp.streams import Batch, BatchStream, Stream

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


class Task(ABC):
    """What the training loop needs from a task.

    Class attributes tell :func:`rnnexp.model.build_model` how to wire the network:
    ``encoder`` (``linear``: feed float features as they are; ``onehot``/``embedding``:
    token ids), ``input_size`` (features or vocabulary size), ``output_size`` and
    ``head`` (``every_step`` or ``last_step``). ``metric`` names the key of
    :meth:`evaluate`'s result that selects ``best.pt`` (``metric_mode`` ``min``/``max``)
    and that the progress bar shows. ``bidirectional`` is the task's default for
    ``model.bidirectional=null``; ``num_chars`` > 0 says token inputs carry character ids
    ``(B, T, 1 + C)`` from a character vocabulary of that size (``model.char_encoder``);
    ``tagging`` says the task labels every step from a tag set and can use ``model.crf``.
    """

    name: str
    encoder: Literal["linear", "onehot", "embedding"] = "linear"
    input_size: int
    output_size: int
    head: Literal["every_step", "last_step"] = "every_step"
    metric: str
    metric_mode: Literal["min", "max"] = "min"
    diagnostics: bool = False  # gradient-flow diagnostics by default (train.diagnostics=null)
    bidirectional: bool = False  # model.bidirectional=null means this
    num_chars: int = 0
    tagging: bool = False

    @abstractmethod
    def train_stream(self, batch_size: int, seed: int) -> Stream:
        """Endless training batches (:class:`rnnexp.streams.Stream`)."""

    @abstractmethod
    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Scalar training loss of the model's ``output`` on ``batch``."""

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

    def calibrate(self, model: nn.Module, device: torch.device) -> dict[str, float] | None:
        """Fit the model's softmax temperature on val after training (the training loop
        folds ``temperature`` into the head); ``None``: the task does not calibrate."""
        del model, device
        return None

    def state_dict(self) -> dict[str, Any]:
        """Plain data the task needs to rebuild a trained model (e.g. a vocabulary)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        del state  # stateless by default

    def bind(self, model: nn.Module) -> None:
        """Called by :func:`rnnexp.model.build_model` with the model just built for this
        task: e.g. to load pretrained word vectors, or to keep the CRF layer the loss needs."""
        del model  # nothing to do by default


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
    """

    def __init__(self, seed: int, num_val: int, num_test: int, eval_batch_size: int) -> None:
        self.seed = seed
        self.num_examples = {"val": num_val, "test": num_test}
        self.eval_batch_size = eval_batch_size
        self._held_out: dict[str, list[Batch]] = {}

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
            draw = self.sample_train if split == "train" else self.sample
            remaining, chunks = size, []
            while remaining > 0:
                size = min(self.eval_batch_size, remaining)
                chunks.append(draw(size, generator))
                remaining -= size
            self._held_out[split] = chunks
        return self._held_out[split]

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
