"""Batches and the streams that yield them: what the training loop draws from.

* :class:`Batch`: inputs, targets, true lengths, and whether the carried state resets;
* :class:`Stream`: the one protocol of a training stream: endless ``next(stream)``, and
  a ``state_dict`` that lets a resumed run see exactly the batches the uninterrupted run
  would have seen;
* :class:`BatchStream`: independent batches drawn from a seeded generator (the
  synthetic tasks);
* :class:`EpochStream`: passes over a fixed data set, ``batches_per_epoch`` batches an
  epoch, with one pair of counters (``epoch``, ``position``) and one generator; the
  char LM's :class:`~rnnexp.tasks.charlm.TextStream` and the text tasks'
  :class:`~rnnexp.data.text.BucketStream` say what an epoch is.

Pure data plumbing on torch tensors: nothing here knows a model or a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class Batch:
    """One minibatch.

    ``inputs``: ``(B, T, I)`` float features (encoder ``linear``) or ``(B, T)`` token ids
    (encoders ``embedding``/``onehot``). ``targets``: task-defined, e.g. ``(B, T, O)``.
    ``lengths``: ``(B,)`` valid steps per sequence, ``None`` when all ``T`` are valid.
    ``reset_state``: ``False`` continues from the previous batch's (detached) final state,
    as in truncated BPTT over a long stream.
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None = None
    reset_state: bool = True

    def to(self, device: torch.device | str) -> Batch:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return replace(
            self, inputs=self.inputs.to(device), targets=self.targets.to(device), lengths=lengths
        )


@runtime_checkable
class Stream(Protocol):
    """Endless training batches whose position is plain data (:meth:`state_dict`), so that
    a resumed run continues with the very batch the uninterrupted run would have drawn."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __next__(self) -> Batch: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class BatchStream:
    """Endless training batches drawn by ``sample(batch_size, generator)``.

    The stream owns its ``torch.Generator``; its state goes into every checkpoint so a
    resumed run sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(
        self, sample: Callable[[int, torch.Generator], Batch], batch_size: int, seed: int
    ) -> None:
        self.sample = sample
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.sample(self.batch_size, self.generator)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class EpochStream(ABC):
    """Batches in epochs over a fixed data set: batch ``position`` of epoch ``epoch``.

    A subclass lays out an epoch (:meth:`start_epoch`, which may draw from ``generator``:
    a new epoch's first batch calls it; :meth:`layout` rebuilds a layout already drawn,
    after :meth:`load_state_dict`), says how many batches it holds
    (``batches_per_epoch``) and makes batch ``position`` of it (:meth:`batch`). The state
    dict holds ``epoch``, ``position`` (batches of the epoch already given), the
    generator's state and :meth:`epoch_state` (what :meth:`start_epoch` drew).
    """

    batches_per_epoch: int

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self.start_epoch()

    @abstractmethod
    def start_epoch(self) -> None:
        """Lay out epoch ``self.epoch`` (drawing what it needs from ``generator``)."""

    def layout(self) -> None:
        """Lay out epoch ``self.epoch`` again from :meth:`epoch_state` (no draws)."""
        self.start_epoch()

    @abstractmethod
    def batch(self, position: int) -> Batch:
        """Batch ``position`` of the current epoch."""

    def epoch_state(self) -> dict[str, Any]:
        """What :meth:`start_epoch` drew, as plain data (none by default)."""
        return {}

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`epoch_state`."""
        del state

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self.start_epoch()
        batch = self.batch(self.position)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "position": self.position,
            **self.epoch_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position = state["epoch"], state["position"]
        self.load_epoch_state(state)
        self.layout()
