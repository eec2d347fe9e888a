"""rnnexp: a command-line experiment runner for recurrent-network research.

From Python (README, "Python API"): :func:`load_run` loads a trained run (its model, task,
config and metrics); :mod:`rnnexp.cells` builds the recurrent cells (``cells.create``,
``cells.available``). ``import rnnexp`` itself does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnexp import cells
    from rnnexp.api import Run

try:
    __version__ = version("rnnexp")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "cells", "load_run"]


def load_run(path: str | Path, which: str = "best", device: str = "cpu") -> Run:
    """Load a trained run: a run folder (its ``checkpoints/<which>.pt``, ``best`` or
    ``last``) or a ``.pt`` file, with the model on ``device``. Returns an
    :class:`rnnexp.api.Run` (``model``, ``task``, ``config``, ``metrics``, ``checkpoint``,
    ``step``; ``evaluate(split)``, ``sample(...)``). See :func:`rnnexp.api.load_run`."""
    from rnnexp.api import load_run as _load_run  # torch is imported here, not before

    return _load_run(path, which, device)


def __getattr__(name: str) -> Any:
    """``rnnexp.cells`` after a bare ``import rnnexp``, imported when first used."""
    if name == "cells":
        return importlib.import_module("rnnexp.cells")
    raise AttributeError(f"module 'rnnexp' has no attribute {name!r}")
