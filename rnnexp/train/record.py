"""What a run records about itself: ``metrics.json``, the git commit, the device."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

from rnnexp.atomic import write_json
from rnnexp.errors import RnnexpError
from rnnexp.report.load import METRICS_FILE


def git_commit() -> dict[str, Any]:
    """The commit of the rnnexp source tree and whether it had uncommitted changes."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}  # installed from a wheel
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RnnexpError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RnnexpError(f"device {name!r} asked for but CUDA is not available; use auto or cpu")
    return device


class RunRecord:
    """The run's ``metrics.json``: created when the run starts, rewritten as it goes.

    ``status`` is ``running``, ``completed``, ``failed`` (with ``error``) or
    ``interrupted``, so sweeps and reports can tell unfinished jobs from finished ones.
    """

    def __init__(self, folder: Path, write: bool = True, **fields: Any) -> None:
        self.path = Path(folder) / METRICS_FILE
        self.data: dict[str, Any] = {"status": "running", **fields}
        if write:  # False: a record that only its final update writes (a run that fails early)
            write_json(self.path, self.data)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json(self.path, self.data)

    def finish(self, **fields: Any) -> str:
        """:meth:`update` for the last word of a run that ends anyway (failed, interrupted):
        when ``metrics.json`` cannot be written (a full disk), a note for the message that
        reports the end, rather than a second error that would hide the first."""
        try:
            self.update(**fields)
        except RnnexpError as err:
            return f" ({METRICS_FILE} not written either: {err})"
        return ""
