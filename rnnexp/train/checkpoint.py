"""Checkpoints: plain tensors and plain Python data, written atomically, loaded safely.

A checkpoint is a :class:`Checkpoint`: the ``step``, the resolved run ``config`` (plain
dicts), the ``model`` weights (those evaluated: the moving average with
``train.ema_decay``; the read-out's calibrated ``temperature`` is one of its buffers), the
``update``'s own state (optimizer, schedule, trained weights under an average, ...), the
``task`` state (e.g. vocabularies), the data ``stream``'s position, RNG states, the
``best`` evaluation so far and the ``carry``-ed hidden state. On disk it is a dict with a
``format`` (:data:`FORMAT`); :meth:`Checkpoint.load` also reads the format before it
(:data:`V1`, see :func:`upgrade_v1`), so old runs still load.

No pickled objects: loading uses ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers, checks the archive's CRCs first (:func:`verify`) and the
saved config after (:func:`rnnexp.config.check_saved_config`: only rnnexp's own classes may
be built from it), so opening a checkpoint cannot run code. :meth:`Checkpoint.restore`
rebuilds the task and the model from it (``rnnexp evaluate``, ``sample``, ``predict``, the
Python API).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnexp.atomic import atomic_write
from rnnexp.config import apply_overrides, build, check_saved_config
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel, build_model
from rnnexp.tasks.base import Task
from rnnexp.train.record import resolve_device

log = logging.getLogger(__name__)

FORMAT = "rnnexp-checkpoint-v2"
V1 = "rnnexp-checkpoint-v1"  # rnnexp before the package layout of rnnexp.nn/.train/.data
REQUIRED_KEYS = ("format", "step", "config", "model")
# v1 configs name these modules, which now live in rnnexp.train
MOVED_MODULES = {
    f"rnnexp.{name}.": f"rnnexp.train.{name}."
    for name in ("clip", "regularizers", "ridge", "callbacks")
}
V1_UPDATE_KEYS = ("ema", "optimizer", "scheduler")


@dataclass
class Checkpoint:
    """Everything a run needs to resume exactly, or a trained model to be rebuilt.

    ``update`` is :meth:`rnnexp.train.updates.Update.state_dict` less its ``model``;
    ``calibration`` records the temperature fit (``{"temperature", "val_loss_before",
    "val_loss"}``) whose ``T`` is the model's ``temperature`` buffer; ``path`` is where it
    was read from (not saved)."""

    step: int
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    update: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] = field(default_factory=dict)
    carry: Any = None
    calibration: dict[str, float] | None = None
    rnnexp_version: str = ""
    path: Path | None = field(default=None, repr=False, compare=False)

    def save(self, path: Path) -> Path:
        """Write it to ``path`` atomically (:func:`rnnexp.atomic.atomic_write`): a crash or
        a signal leaves the old file or the new one, never a part of it."""
        payload = {"format": FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}
        del payload["path"]
        return atomic_write(path, lambda handle: torch.save(payload, handle))

    @classmethod
    def load(cls, path_or_run_dir: str | Path, which: str = "last") -> Checkpoint:
        """Load and check a checkpoint onto the CPU (a CUDA checkpoint loads on a CPU-only
        box): a ``.pt`` file, or a run folder's ``checkpoints/<which>.pt``."""
        path = resolve(path_or_run_dir, which)
        payload = read(path)
        if payload["format"] == V1:
            payload = upgrade_v1(payload)
        check_saved_config(payload["config"], path)  # before anything is built from it
        payload["config"] = with_added_keys(payload["config"])
        known = {f.name for f in fields(cls)} - {"path"}
        return cls(**{k: v for k, v in payload.items() if k in known}, path=path)

    def restore(self, overrides: Sequence[str] = ()) -> Restored:
        """Rebuild the task (from its saved state: no data file is read) and the model
        (in eval mode, on ``train.device``) from the saved config, with ``key=value``
        ``overrides`` (:func:`rnnexp.config.apply_overrides`)."""
        cfg = apply_overrides(OmegaConf.create(self.config), list(overrides))
        device = resolve_device(cfg.train.device)
        task: Task = build(cfg.task, "task")
        spec = task.setup(self.task)
        model = build_model(cfg, spec)
        load_model_state(model, self.model, self.path or "the checkpoint")
        model.to(device).eval()
        return Restored(self, cfg, task, model, device)


@dataclass
class Restored:
    """A trained model rebuilt from its checkpoint (:meth:`Checkpoint.restore`)."""

    checkpoint: Checkpoint
    cfg: DictConfig
    task: Task
    model: SequenceModel
    device: torch.device

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        assert self.checkpoint.path is not None
        return self.checkpoint.path


def restore(
    path_or_run_dir: str | Path, which: str = "best", overrides: Sequence[str] = ()
) -> Restored:
    """:meth:`Checkpoint.load` then :meth:`Checkpoint.restore`: a run folder's ``best.pt``
    by default, as ``rnnexp evaluate``, ``sample`` and ``predict`` read it."""
    return Checkpoint.load(path_or_run_dir, which).restore(overrides)


def upgrade_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """A :data:`V1` checkpoint's dict as :data:`FORMAT` holds it. v1 differed in four ways:
    its config names ``rnnexp.clip``/``regularizers``/``ridge``/``callbacks`` targets
    (now under ``rnnexp.train``); ``task=latch`` had ``noise``, the standard deviation
    (now ``noise_variance``); the optimizer, schedule and averaging state were
    top-level keys (now ``update``); and a calibrated run's temperature was only in
    ``calibration`` (now also the model's ``temperature`` buffer, which v1 weights lack)."""
    payload = dict(payload)
    payload["config"] = _renamed(payload["config"])
    task = payload["config"].get("task")
    if isinstance(task, dict) and task.get("name") == "latch" and "noise" in task:
        # v1's latch `noise` was the noise's standard deviation; it is now its variance
        noise = task.pop("noise")
        task["noise_variance"] = noise * noise if isinstance(noise, int | float) else noise
    payload["update"] = {key: payload.pop(key) for key in V1_UPDATE_KEYS if key in payload}
    calibration = payload.get("calibration")
    temperature = 1.0 if calibration is None else float(calibration["temperature"])
    if isinstance(payload["model"], dict):
        payload["model"] = {**payload["model"], "temperature": torch.tensor(temperature)}
    trained = (payload["update"].get("ema") or {}).get("trained_model")
    if isinstance(trained, dict):  # the trained weights under an average: never calibrated
        payload["update"]["ema"] = {
            **payload["update"]["ema"],
            "trained_model": {**trained, "temperature": torch.tensor(1.0)},
        }
    return payload


# Keys added to a config group after runs were saved, each with the value that does what
# those runs did: ``(group, _target_, key, value)``. A saved config that lacks one gets it,
# so ``evaluate``/``sample`` rebuild the run as it ran and ``train.resume`` compares like
# with like (and refuses a resume whose command would change it). Issue 19 made the Pascanu
# tasks' exact lengths the default; runs saved before ran ``[T, 1.1 T)``.
ADDED_KEYS: tuple[tuple[str, str, str, Any], ...] = (
    *(
        ("task", f"rnnexp.tasks.{name}.{cls}", key, value)
        for name, cls in (
            ("temporal_order", "TemporalOrderTask"),
            ("permutation", "PermutationTask"),
            ("memorization", "MemorizationTask"),
        )
        for key, value in (("variable_length", True), ("val_lengths", "test"))
    ),
    *(
        ("task", f"rnnexp.tasks.{name}.{cls}", key, value)
        for name, cls in (("adding", "AddingTask"), ("multiplication", "MultiplicationTask"))
        for key, value in (("variable_length", True), ("val_lengths", "test"))
    ),
    ("clip", "rnnexp.train.clip.NormClip", "fallback", None),
    ("clip", "rnnexp.train.clip.NormClip", "fallback_above", 1.0e10),
)


def with_added_keys(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every key of :data:`ADDED_KEYS` it lacks, at its old behaviour."""
    config = dict(config)
    for group, target, key, value in ADDED_KEYS:
        node = config.get(group)
        if isinstance(node, dict) and node.get("_target_") == target and key not in node:
            config[group] = {**node, key: value}
    return config


def _renamed(node: Any) -> Any:
    """A saved config whose strings naming v1's modules (``_target_`` values) name the
    modules' places today (:data:`MOVED_MODULES`)."""
    if isinstance(node, dict):
        return {key: _renamed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_renamed(value) for value in node]
    if isinstance(node, str):
        for old, new in MOVED_MODULES.items():
            if node.startswith(old):
                return new + node[len(old) :]
    return node


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


def read(path: Path) -> dict[str, Any]:
    """The dict stored in a checkpoint file, after :func:`verify`, with ``weights_only``
    loading, its keys and format checked (:data:`FORMAT` or :data:`V1`). The saved config
    is not checked here: :meth:`Checkpoint.load` does that."""
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
    if payload["format"] not in (FORMAT, V1):
        raise RnnexpError(
            f"{path} has checkpoint format {payload['format']!r}; this rnnexp reads "
            f"{FORMAT!r} and {V1!r}"
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
