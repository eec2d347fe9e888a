"""Recurrent cells: one calling convention, one per-step form, and a registry that is the
config folder.

Every cell is an ``nn.Module`` and a :class:`~rnnexp.cells.base.Cell`, built by
:func:`create`, whose ``forward(x, state=None)`` takes batch-first input ``(B, T, I)`` and
returns ``(outputs, final_state)`` with ``outputs`` of shape ``(B, T, H * directions)``.
``final_state`` has the layout of the matching torch module: ``h_n`` of shape
``(layers * directions, B, H)``, or ``(h_n, c_n)`` for LSTMs. Parameter names follow
``torch.nn.RNN/LSTM/GRU`` (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``, suffix ``_reverse`` for the backward direction), so torch state dicts load
into the matching cells. :meth:`~rnnexp.cells.base.Cell.unroll` gives the per-step form
that the model's step-by-step path, the diagnostics and the sampler run.

The registry is ``conf/cell/*.yaml``: each file is a cell, named by its stem. Its header
comments say what it is (the first line, shown by ``rnnexp ls``), which class builds it
(``# class: rnnexp.cells.<module>.<Class>``), its recurrence and its source (``# recurrence:``,
``# source:``, shown by ``rnnexp ls cells``); its keys are the cell's options with their
defaults, under ``_target_: rnnexp.cells.create`` and ``name: <stem>``.

Adding a cell: write its module in this package (a subclass of
:class:`rnnexp.cells.loop.LoopRNN` says how one step goes), add ``conf/cell/<name>.yaml``,
and test it against independently written equations (``tests/cells/test_cell_zoo.py``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from rnnexp.cells.base import Cell, Layer, Unrolled, unroll
from rnnexp.errors import RnnexpError

__all__ = [
    "Cell", "CellSpec", "Layer", "Unrolled", "available", "count_parameters", "create", "spec",
    "unroll",
]  # fmt: skip

# the shipped configs (the package rnnexp.conf, see rnnexp.schema.config_dir); read here
# without importing rnnexp.schema, which pulls in Hydra
CONFIG_MODULE = "rnnexp.conf"
SIZES = ("input_size", "hidden_size", "num_layers", "bidirectional")


@dataclass(frozen=True)
class CellSpec:
    """What ``conf/cell/<name>.yaml`` says about a cell."""

    name: str
    target: str  # the class (or function) that builds it, e.g. rnnexp.cells.torch_cells.Lstm
    summary: str  # one-line recurrence, shown by `rnnexp ls cells`
    source: str  # the paper (or library) that defines it
    options: dict[str, Any]  # the cell's options and their defaults

    def factory(self) -> Any:
        """The class (or function) named by ``target``; only ``rnnexp.cells.*`` ones."""
        module, _, attribute = self.target.rpartition(".")
        if not module.startswith("rnnexp.cells."):
            raise RnnexpError(
                f"conf/cell/{self.name}.yaml's '# class:' line names {self.target!r}; "
                "name a cell class in rnnexp.cells, e.g. rnnexp.cells.torch_cells.Lstm"
            )
        return getattr(importlib.import_module(module), attribute)


def _cell_dir() -> Path:
    return Path(str(files(CONFIG_MODULE))) / "cell"


@functools.cache
def _registry() -> dict[str, CellSpec]:
    found = {}
    for path in sorted(_cell_dir().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        header = {}
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            key, colon, value = line.lstrip("# ").partition(":")
            if colon and key in ("class", "recurrence", "source"):
                header[key] = value.strip()
        options = {k: v for k, v in yaml.safe_load(text).items() if k not in ("_target_", "name")}
        found[path.stem] = CellSpec(
            path.stem, header.get("class", ""), header.get("recurrence", ""),
            header.get("source", ""), options,
        )  # fmt: skip
    return found


def available() -> list[str]:
    """Names of all cells (the stems of ``conf/cell/*.yaml``), sorted."""
    return sorted(_registry())


def spec(name: str) -> CellSpec:
    """The registry entry for ``name``; unknown names raise a one-line error listing the choices."""
    try:
        return _registry()[name]
    except KeyError:
        raise RnnexpError(
            f"unknown cell {name!r}; choose one of: {', '.join(available())}"
        ) from None


def create(
    name: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    **options,
) -> Cell:
    """Build the cell ``name`` (see :func:`available`) with its config's defaults.

    Args:
        name: cell name, e.g. ``"gru"``: ``conf/cell/<name>.yaml``.
        input_size: features per time step ``I``.
        hidden_size: hidden units per layer and direction ``H``.
        num_layers: stacked recurrent layers.
        bidirectional: add a backward direction to every layer (outputs become ``2H`` wide).
        **options: cell-specific options (``dropout``, ``nonlinearity``, ``forget_bias``, ...);
            those not given take the yaml's values.
    """
    cell_spec = spec(name)
    factory = cell_spec.factory()
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = sorted(set(accepted) - set(SIZES))
        raise RnnexpError(
            f"cell {name!r} has no option {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
    sizes = dict(zip(SIZES, (input_size, hidden_size, num_layers, bidirectional), strict=True))
    return factory(**sizes, **{**cell_spec.options, **options})


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
