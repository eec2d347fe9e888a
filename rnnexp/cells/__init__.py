"""Recurrent cells: a registry of named constructors with one calling convention.

Every cell is an ``nn.Module`` built by :func:`create` whose ``forward(x, state=None)``
takes batch-first input ``(B, T, I)`` and returns ``(outputs, final_state)`` with
``outputs`` of shape ``(B, T, H * directions)``. ``final_state`` has the layout of the
matching torch module: ``h_n`` of shape ``(layers * directions, B, H)``, or ``(h_n, c_n)``
for LSTMs. Parameter names follow ``torch.nn.RNN/LSTM/GRU`` (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, suffix ``_reverse`` for the backward
direction), so torch state dicts load into the matching cells.

Adding a cell: write a module in this package that decorates its constructor with
:func:`register`, import it at the bottom of this file, and add ``conf/cell/<name>.yaml``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rnnexp.errors import RnnexpError


@dataclass(frozen=True)
class CellSpec:
    """What the registry knows about a cell: its constructor and how to describe it."""

    name: str
    factory: Callable[..., nn.Module]
    summary: str  # one-line recurrence, shown by `rnnexp ls cells`
    source: str  # the paper (or library) that defines it


_REGISTRY: dict[str, CellSpec] = {}


def register(name: str, *, summary: str, source: str) -> Callable:
    """Class/function decorator that makes a cell constructor available as ``name``."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"cell {name!r} is registered twice")
        _REGISTRY[name] = CellSpec(name, factory, summary, source)
        return factory

    return decorator


def available() -> list[str]:
    """Names of all registered cells, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> CellSpec:
    """The registry entry for ``name``; unknown names raise a one-line error listing the choices."""
    try:
        return _REGISTRY[name]
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
) -> nn.Module:
    """Build the cell ``name`` (see :func:`available`).

    Args:
        name: registered cell name, e.g. ``"gru"``.
        input_size: features per time step ``I``.
        hidden_size: hidden units per layer and direction ``H``.
        num_layers: stacked recurrent layers.
        bidirectional: add a backward direction to every layer (outputs become ``2H`` wide).
        **options: cell-specific options (``dropout``, ``nonlinearity``, ``forget_bias``, ...).
    """
    cell_spec = spec(name)
    arguments = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        **options,
    )
    accepted = inspect.signature(cell_spec.factory).parameters
    unknown = sorted(set(arguments) - set(accepted))
    if unknown:
        takes = sorted(set(accepted) - {"input_size", "hidden_size", "num_layers", "bidirectional"})
        raise RnnexpError(
            f"cell {name!r} has no option {', '.join(unknown)}; it takes: {', '.join(takes)}"
        )
    return cell_spec.factory(**arguments)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# registers elman, lstm, gru; irnn, jordan, clockwork; esn; gru_minimal; the LSTM variants
from rnnexp.cells import (  # noqa: E402,F401
    elman_family,
    esn,
    gru_variants,
    lstm_variants,
    torch_cells,
)
