"""Rebuild a trained model from its checkpoint and score it (``rnnexp evaluate``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnexp.atomic import write_json
from rnnexp.config import build, check_override
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel, build_model
from rnnexp.schema import check_key
from rnnexp.tasks.base import Task, WritesPredictions, check_split
from rnnexp.train import checkpoint
from rnnexp.train.record import resolve_device


@dataclass
class Restored:
    """A trained model with everything it came with."""

    path: Path  # the checkpoint file
    payload: dict[str, Any]
    cfg: DictConfig
    task: Task
    model: SequenceModel
    device: torch.device
    calibration: dict[str, float] | None = None  # the temperature folded into the head


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` overrides onto a saved config; ``+key=value`` adds a new key. None may
    name a special key such as ``_target_`` (:func:`rnnexp.config.check_override`)."""
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key:
            raise RnnexpError(f"override {override!r} is not of the form key=value")
        adding = key.startswith("+")
        key = key.lstrip("+")
        if not adding and OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise RnnexpError(
                f"unknown config key {key!r} in override {override!r}; "
                f"use +{override} to add a new key"
            )
        value = OmegaConf.from_dotlist([f"{key}={override.partition('=')[2]}"])
        check_override(override, OmegaConf.to_container(value))
        cfg = OmegaConf.merge(cfg, value)
        check_key(cfg, key)  # train.* and model.*: the schema's type and range
    return cfg


def restore(
    path_or_run_dir: str | Path, which: str = "best", overrides: list[str] | None = None
) -> Restored:
    """Load a checkpoint and rebuild its task and model from the config saved with it.

    :func:`rnnexp.train.checkpoint.load` has checked that config before it gets here: it can
    only build rnnexp's own classes (:func:`rnnexp.config.check_saved_config`).

    A checkpoint with a ``calibration`` (``task.calibrate``) gets its softmax temperature
    folded into the head, unless the override ``task.calibrate=false`` is given."""
    path = checkpoint.resolve(path_or_run_dir, which)
    payload = checkpoint.load(path)
    cfg = apply_overrides(OmegaConf.create(payload["config"]), list(overrides or []))
    device = resolve_device(cfg.train.device)
    task: Task = build(cfg.task, "task")
    spec = task.setup(payload["task"])  # the saved vocabularies; no data file is read
    model = build_model(cfg, spec)
    checkpoint.load_model_state(model, payload["model"], path)
    calibration = payload.get("calibration") if cfg.task.get("calibrate", False) else None
    if calibration is not None:  # task.calibrate: fold T into the head
        model.divide_logits(calibration["temperature"])
    model.to(device).eval()
    return Restored(path, payload, cfg, task, model, device, calibration)


def evaluate_checkpoint(
    path_or_run_dir: str | Path,
    which: str = "best",
    split: str = "test",
    overrides: list[str] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Score a checkpoint on ``split``; writes ``<checkpoint>.<split>.json`` beside it.

    With ``task.calibrate=true`` (``+task.calibrate=true`` for a run from before the key
    existed), a checkpoint without a ``calibration`` gets its temperature fit on val now.
    With the override ``+write_predictions=true``, the task also writes its predictions
    beside it (``ner``: ``<checkpoint>.<split>.conll``; ``sentiment``: ``.tsv``).
    A result that cannot be written (a read-only run folder) raises :class:`NotWritten`,
    which carries the scores.
    """
    check_split(split)
    restored = restore(path_or_run_dir, which, overrides)
    if restored.calibration is None and restored.cfg.task.get("calibrate", False):
        # an uncalibrated run scored with task.calibrate=true: fit the temperature now
        restored.calibration = restored.task.calibrate(restored.model, restored.device)
        if restored.calibration is not None:
            restored.model.divide_logits(restored.calibration["temperature"])
    metrics = restored.task.evaluate(restored.model, split, restored.device)
    result = {
        "checkpoint": str(restored.path),
        "step": restored.payload["step"],
        "split": split,
        "task": restored.cfg.task.name,
        "cell": restored.cfg.cell.name,
        "overrides": list(overrides or []),
        "metrics": metrics,
    }
    if restored.calibration is not None:
        result["calibration"] = restored.calibration
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
