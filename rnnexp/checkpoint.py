"""Checkpoints: plain tensors and plain Python data, written atomically, loaded safely.

A checkpoint is a dict (see :func:`rnnexp.train.make_checkpoint`) with ``format``,
``step``, ``config`` (the resolved run config as plain dicts), ``model``, ``optimizer``
and ``scheduler`` state dicts, the ``task`` state, RNG states and ``best`` (and ``ema`` with
``train.ema_decay``: ``model`` then holds the averaged weights; ``calibration`` with
``task.calibrate``: the softmax temperature, the weights staying as trained). No pickled
objects: :func:`load` uses ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers, so opening a checkpoint cannot run code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rnnexp.errors import RnnexpError

FORMAT = "rnnexp-checkpoint-v1"
REQUIRED_KEYS = ("format", "step", "config", "model")


def save(payload: dict[str, Any], path: Path) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder,
    flushed to disk, then renamed over ``path``. A crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def resolve(path_or_run_dir: str | Path, which: str = "last") -> Path:
    """A checkpoint file from a checkpoint path or a run folder (``checkpoints/<which>.pt``)."""
    path = Path(path_or_run_dir).expanduser()
    if path.is_dir():
        candidate = path / "checkpoints" / f"{which}.pt"
        if not candidate.is_file():
            raise RnnexpError(
                f"no checkpoint at {candidate}: is {path} a finished rnnexp run folder? "
                "Pass a run folder under outputs/ or a .pt file"
            )
        return candidate
    if not path.is_file():
        raise RnnexpError(f"checkpoint not found: {path}; pass a run folder or a .pt file")
    return path


def load(path_or_run_dir: str | Path, which: str = "last") -> dict[str, Any]:
    """Load and check a checkpoint onto the CPU (a CUDA checkpoint loads on a CPU-only box)."""
    path = resolve(path_or_run_dir, which)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not zipfile.is_zipfile(path):
            raise RnnexpError(
                f"cannot read checkpoint {path}: it is not a torch checkpoint (corrupt, "
                "truncated or another kind of file); use another one, e.g. checkpoints/best.pt"
            ) from None
        raise RnnexpError(
            f"refusing to load {path}: it holds pickled Python objects, which could run code "
            "when loaded; rnnexp checkpoints hold only tensors and plain data"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise RnnexpError(
            f"cannot read checkpoint {path}: the file is corrupt or truncated "
            f"({type(err).__name__}); use another one, e.g. checkpoints/best.pt"
        ) from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise RnnexpError(f"{path} is not an rnnexp checkpoint (no {', '.join(REQUIRED_KEYS)})")
    if payload["format"] != FORMAT:
        raise RnnexpError(
            f"{path} has checkpoint format {payload['format']!r}; this rnnexp reads {FORMAT!r}"
        )
    return payload


def load_model_state(model: torch.nn.Module, state: dict[str, Any], source: Path | str) -> None:
    """``model.load_state_dict(state)`` with a one-line error when they do not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise RnnexpError(
            f"checkpoint {source} does not fit the model built from its config ({detail}); "
            "was it written by another rnnexp version or with other model.* overrides?"
        ) from None
