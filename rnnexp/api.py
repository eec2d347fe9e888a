"""The Python API: a trained run as objects (:func:`load_run`).

``import rnnexp`` stays light (no torch); ``rnnexp.load_run`` imports this module when it is
first called. The cell API is :mod:`rnnexp.cells` (``create``, ``available``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rnnexp import export
from rnnexp.errors import RnnexpError
from rnnexp.report.load import METRICS_FILE, read_metrics
from rnnexp.tasks.base import Generates, Task, check_split
from rnnexp.train.checkpoint import Restored, restore


@dataclass(repr=False)
class Run:
    """A trained run, rebuilt from one of its checkpoints by :func:`load_run`.

    Attributes:
        model: the trained network (``rnnexp.nn.model.SequenceModel``, a ``torch.nn.Module``)
            in eval mode on ``device``. Its ``forward(inputs)`` takes the task's batch inputs
            and returns ``(outputs, state)``.
        task: the task it was trained on (``rnnexp.tasks.base.Task``), with the state saved
            in the checkpoint (e.g. a vocabulary); ``task.evaluate(model, split, device)``
            scores a split, ``task.train_stream(batch_size, seed)`` yields batches.
        config: the run's composed config as saved in the checkpoint (``DictConfig``),
            e.g. ``config.cell.name``, ``config.model.hidden_size``.
        metrics: the run folder's ``metrics.json`` (status, ``final`` test scores,
            ``best``, overrides, ...), or ``None`` for a checkpoint outside a run folder.
        checkpoint: the checkpoint file that was loaded.
        step: the training step at which it was written.
        device: where the model's parameters are.
    """

    model: torch.nn.Module
    task: Task
    config: DictConfig
    metrics: dict[str, Any] | None
    checkpoint: Path
    step: int
    device: torch.device

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Score the model on ``split`` (``test``, ``val`` or ``train``): the same metrics as
        ``rnnexp evaluate`` (nothing is written)."""
        return self.task.evaluate(self.model, check_split(split), self.device)

    def sample(
        self, prime: str = "", length: int = 200, temperature: float = 1.0, seed: int = 0
    ) -> str:
        """A text from a language model (``task=charlm``): ``prime`` followed by ``length``
        generated tokens, drawn at ``temperature`` with the generator seeded by ``seed``
        (``rnnexp sample``'s draws: the same seed gives the same text)."""
        from rnnexp.nn.generation import Settings, generate  # the generator of ``rnnexp sample``

        if not isinstance(self.task, Generates):
            raise RnnexpError(
                f"{self.checkpoint} is a {self.config.task.name} model; sample needs a "
                "language model (task=charlm)"
            )
        settings = Settings(temperature=temperature)
        return generate(self.model, self.task.token_vocab(), prime, length, settings, seed)[0]

    def __repr__(self) -> str:
        return (
            f"Run(task={self.config.task.name!r}, cell={self.config.cell.name!r}, "
            f"step={self.step}, checkpoint={str(self.checkpoint)!r})"
        )


def load_run(path: str | Path, which: str = "best", device: str = "cpu") -> Run:
    """Load a trained run for use from Python.

    ``path`` is a run folder (``outputs/<task>/<cell>/<time>/``, whose
    ``checkpoints/<which>.pt`` is loaded: ``best`` or ``last``) or a ``.pt`` file.
    ``device`` is where the model goes (``cpu``, ``cuda``, ``cuda:N``, ``auto``).

    The checkpoint is loaded as ``rnnexp evaluate`` loads it
    (:func:`rnnexp.train.checkpoint.restore`): its config is checked against rnnexp's own configs
    before anything is built from it, and its tensors are read with ``weights_only``. A
    missing, corrupt or refused checkpoint raises :class:`rnnexp.errors.RnnexpError`.
    """
    restored = restore(path, which, overrides=[f"train.device={device}"])
    return _run(restored, _run_metrics(restored.path))


def load_safetensors(path: str | Path, device: str = "cpu") -> Run:
    """Load a model exported by ``rnnexp export RUN`` (``model.safetensors``) for use from
    Python, as :func:`load_run` loads a checkpoint, without pickle.

    The file's metadata holds the run's config and task state (e.g. a vocabulary): the
    config is checked against rnnexp's own configs before anything is built from it
    (:func:`rnnexp.export.load_safetensors`), the task and the model are rebuilt from it
    and the weights loaded, bit for bit. ``metrics`` is the ``metrics.json`` beside the
    file (a run folder's), or ``None``. A missing, foreign or refused file raises
    :class:`rnnexp.errors.RnnexpError`.
    """
    restored = export.load_safetensors(path, overrides=[f"train.device={device}"])
    return _run(restored, _folder_metrics(restored.path.parent))


def _run(restored: Restored, metrics: dict[str, Any] | None) -> Run:
    """A :class:`Run` of a restored model."""
    return Run(
        model=restored.model,
        task=restored.task,
        config=restored.cfg,
        metrics=metrics,
        checkpoint=restored.path,
        step=int(restored.checkpoint.step),
        device=restored.device,
    )


def _run_metrics(checkpoint: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of the run folder holding ``checkpoint``
    (``<run>/checkpoints/<name>.pt``); ``None`` when there is none or it is unreadable."""
    if checkpoint.parent.name != "checkpoints":
        return None
    return _folder_metrics(checkpoint.parent.parent)


def _folder_metrics(folder: Path) -> dict[str, Any] | None:
    """``folder``'s ``metrics.json``; ``None`` when there is none or it is unreadable."""
    try:
        return read_metrics(folder / METRICS_FILE)
    except ValueError:  # unreadable, or not a JSON object
        return None
