"""Checkpoints: plain tensors and plain Python data, written atomically, loaded safely.

A checkpoint is a dict (see :func:`rnnexp.train.loop.make_checkpoint`) with ``format``,
``step``, ``config`` (the resolved run config as plain dicts), ``model``, ``optimizer``
and ``scheduler`` state dicts, the ``task`` state, RNG states and ``best`` (and ``ema`` with
``train.ema_decay``: ``model`` then holds the averaged weights; ``calibration`` with
``task.calibrate``: the softmax temperature, the weights staying as trained). No pickled
objects: :func:`load` uses ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers, checks the archive's CRCs first (:func:`verify`) and the
saved config after (:func:`rnnexp.config.check_saved_config`: only rnnexp's own classes may
be built from it), so opening a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from rnnexp.atomic import atomic_write
from rnnexp.config import check_saved_config
from rnnexp.errors import RnnexpError

log = logging.getLogger(__name__)

FORMAT = "rnnexp-checkpoint-v1"
REQUIRED_KEYS = ("format", "step", "config", "model")


def save(payload: dict[str, Any], path: Path) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`rnnexp.atomic.atomic_write`): a
    crash or a signal leaves the old file or the new one, never a part of it."""
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def resolve(path_or_run_dir: str | Path, which: str = "last") -> Path:
    """A checkpoint file from a checkpoint path or a run folder (``checkpoints/<which>.pt``).

    A run folder without ``best.pt`` but with ``last.pt`` (a resumed run whose val never
    improved) gives ``last.pt``, with a warning that says so."""
    path = Path(path_or_run_dir).expanduser()
    if path.is_dir() and path.suffix == ".pt":
        raise RnnexpError(f"cannot read checkpoint {path}: it is a folder, not a checkpoint file")
    if path.is_dir():
        candidate = path / "checkpoints" / f"{which}.pt"
        last = candidate.with_name("last.pt")
        if which == "best" and not candidate.exists() and last.is_file():
            log.warning(
                "%s has no best.pt (its val never improved after a resume): using %s",
                path,
                last,
            )
            return last
        if not candidate.exists():
            raise RnnexpError(
                f"no checkpoint at {candidate}: is {path} a finished rnnexp run folder? "
                "Pass a run folder under outputs/ or a .pt file"
            )
        return candidate
    if not path.exists():
        raise RnnexpError(f"checkpoint not found: {path}; pass a run folder or a .pt file")
    return path


def verify(path: Path) -> None:
    """Check that ``path`` is a whole torch archive before it is loaded: a zip file whose
    members all pass their CRC check (torch writes stored members with a CRC32 but does not
    check it when loading) and that holds a ``data.pkl``. One line on what is wrong."""
    other = path.with_name("last.pt" if path.name == "best.pt" else "best.pt")
    remedy = f"use another checkpoint, e.g. {other if other.is_file() else 'checkpoints/last.pt'}"
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if not head:
            raise RnnexpError(f"cannot read checkpoint {path}: the file is empty; {remedy}")
        if not zipfile.is_zipfile(path):
            zipped = head == b"PK\x03\x04"  # a zip's start without its directory at the end
            what = "truncated or corrupt" if zipped else "not a torch checkpoint (not a zip file)"
            raise RnnexpError(f"cannot read checkpoint {path}: it is {what}; {remedy}")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
                raise RnnexpError(
                    f"cannot read checkpoint {path}: it is a zip archive but not a torch "
                    f"checkpoint (no data.pkl); {remedy}"
                )
            bad = archive.testzip()
    except OSError as err:
        raise RnnexpError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as err:
        raise RnnexpError(f"checkpoint {path} is corrupt: {err}; {remedy}") from None
    if bad is not None:
        raise RnnexpError(
            f"checkpoint {path} is corrupt: member {bad} fails its CRC check (the file was "
            f"damaged after it was written); {remedy}"
        )


def load(path_or_run_dir: str | Path, which: str = "last") -> dict[str, Any]:
    """Load and check a checkpoint onto the CPU (a CUDA checkpoint loads on a CPU-only box)."""
    path = resolve(path_or_run_dir, which)
    verify(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
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
    check_saved_config(payload["config"], path)  # before anything is built from it
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
