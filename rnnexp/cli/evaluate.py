"""``rnnexp evaluate``: rebuild a trained model from its checkpoint
(:func:`rnnexp.train.checkpoint.restore`) and score it on a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rnnexp.atomic import write_json
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import WritesPredictions, check_split
from rnnexp.train.checkpoint import restore


def evaluate_checkpoint(
    path_or_run_dir: str | Path,
    which: str = "best",
    split: str = "test",
    overrides: list[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Score a checkpoint on ``split``; writes ``<checkpoint>.<split>.json`` beside it.

    With the override ``+write_predictions=true``, the task also writes its predictions
    beside it (``ner``: ``<checkpoint>.<split>.conll``; ``sentiment``: ``.tsv``).
    A result that cannot be written (a read-only run folder) raises :class:`NotWritten`,
    which carries the scores.
    """
    check_split(split)
    restored = restore(path_or_run_dir, which, overrides or [])
    metrics = restored.task.evaluate(restored.model, split, restored.device)
    result = {
        "checkpoint": str(restored.path),
        "step": restored.checkpoint.step,
        "split": split,
        "task": restored.cfg.task.name,
        "cell": restored.cfg.cell.name,
        "overrides": list(overrides or []),
        "metrics": metrics,
    }
    if restored.checkpoint.calibration is not None:  # the model's read-out divides by T
        result["calibration"] = restored.checkpoint.calibration
    if restored.cfg.get("write_predictions"):
        if not isinstance(restored.task, WritesPredictions):
            raise RnnexpError(
                f"task {restored.cfg.task.name!r} cannot write predictions; "
                "+write_predictions=true works with the text tasks (sentiment, ner)"
            )
        stem = restored.path.with_name(f"{restored.path.stem}.{split}")
        predictions = restored.task.write_predictions(restored.model, split, restored.device, stem)
        result["predictions"] = str(predictions)
    out = restored.path.with_name(f"{restored.path.stem}.{split}.json")
    try:
        write_json(out, result)
    except RnnexpError as err:  # a read-only run folder, a full disk: the scores still count
        raise NotWritten(str(err), result) from None
    return result, out


class NotWritten(RnnexpError):
    """:func:`evaluate_checkpoint` scored the model but could not write the result file;
    ``result`` holds the scores, so that ``rnnexp evaluate`` still prints them."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result
