"""``rnnexp inspect``: look inside a trained run.

Two pictures, each a PNG, SVG or PDF by the output file's suffix, and a page:

* **gates** (the default): for a few test sequences of the run's task, the input, every
  gate of one layer (the top one by default) over time, the cell state ``c`` (LSTMs) and
  the hidden state ``h``, for the units whose final state differs most between the test
  sequences (on ``task=latch``: the units that hold the class), and ``h`` of all units as
  a heat map. This is seed 002's unrolled LSTM unit, whose keep (forget), write (input)
  and read (output) gates hold a value for many steps, drawn from the trained net. The
  gates come from the cell's own per-step form (:meth:`rnnexp.cells.Cell.trace`); an
  Elman-type cell has no gates and shows its hidden activations.
* **eigenvalues** (``--eigenvalues``): the eigenvalues of every recurrent matrix (each gate's
  block of ``weight_hh``) in the complex plane with the unit circle, over training: one
  colour per checkpoint the run kept (``train.keep_checkpoints=N`` keeps
  ``checkpoints/step_<k>.pt``; ``last.pt`` is always drawn), as the
  :class:`rnnexp.train.callbacks.Eigenvalues` callback draws one evaluation.
* **text** (``--text FILE_OR_STRING``, a character language model): Karpathy et al. 2015's
  views, in :mod:`rnnexp.cli.inspect_text`: the text coloured by a unit's activation (an
  HTML page and a PNG), the units most correlated with quotes, the position in the line
  and brackets, and the gates' saturation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from rnnexp import plots
from rnnexp.cells import Cell
from rnnexp.data.streams import Batch
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import SyntheticTask, Task
from rnnexp.train.checkpoint import Checkpoint, Restored, load_model_state, restore

# seed 002's names for the gates that keep, write and read the memory cell
ROLES = {"forget": "keep", "input": "write", "output": "read", "update": "keep"}
SIGMOID_GATES = ("input", "forget", "output", "reset", "update")
INPUT_COLORS = ("0.25", "tab:brown", "tab:pink", "tab:olive")


@dataclass(frozen=True)
class Inspection:
    """What a picture shows: where it went, which checkpoint(s), and its panels."""

    output: Path
    cell: str
    task: str
    steps: list[int]  # the checkpoint's step (gates), or every drawn checkpoint's
    rows: list[str]  # gates: the row names; eigenvalues: the matrices
    sequences: list[int]  # gates: the test sequences drawn (indices into the batch)
    units: list[int]  # gates: the units drawn as lines
    panels: int  # axes with data


def default_output(run: Path, name: str) -> Path:
    """``RUN/plots/<name>.png`` for a run folder; ``<checkpoint>.<name>.png`` for a file."""
    run = Path(run)
    return run / "plots" / f"{name}.png" if run.is_dir() else run.with_suffix(f".{name}.png")


def held_out_batch(task: Task) -> Batch:
    """The first chunk of a synthetic task's fixed test set (the one ``rnnexp evaluate``
    scores); for other tasks their diagnostics batch (charlm: 4 streams of val text)."""
    batch = task.held_out("test")[0] if isinstance(task, SyntheticTask) else None
    batch = task.diagnostics_batch() if batch is None else batch
    if batch is None:
        raise RnnexpError(f"task {task.name!r} has no test sequences to draw")
    return batch


def pick_sequences(targets: Tensor, count: int) -> list[int]:
    """``count`` sequences, those with targets not seen before first (on ``latch``: both
    classes), then in order."""
    seen, first, rest = set(), [], []
    for index, target in enumerate(targets.reshape(len(targets), -1).tolist()):
        key = tuple(round(v, 3) for v in target)
        (rest if key in seen else first).append(index)
        seen.add(key)
    return sorted((first + rest)[:count])


def last_steps(values: Tensor, lengths: Tensor | None) -> Tensor:
    """``values`` ``(B, T, H)`` at each sequence's last real step: ``(B, H)``."""
    if lengths is None:
        return values[:, -1]
    return values[torch.arange(values.shape[0]), lengths.to(values.device) - 1]


def pick_units(traced: dict[str, Tensor], lengths: Tensor | None, count: int) -> list[int]:
    """The ``count`` units whose final cell state (``h`` without one) varies most over
    the batch: those that carry what tells the sequences apart."""
    final = last_steps(traced.get("c", traced["h"]), lengths)
    spread = final.float().std(dim=0) if final.shape[0] > 1 else final.float().abs()[0]
    order = torch.argsort(spread, descending=True, stable=True)
    return sorted(order[:count].tolist())


def row_label(name: str) -> str:
    """A row's y label: seed 002's role beside the gate's own name."""
    labels = {"x": "input x", "h": "hidden h", "c": "cell state c", "h_all": "h, all units"}
    role = ROLES.get(name)
    return labels.get(name, f"{name}\n({role})" if role else name)


def draw_row(ax: Axes, name: str, values: Tensor, inputs: Tensor, units: list[int]) -> None:
    """One panel: the input features, one line per drawn unit, or the heat map of ``h``."""
    steps, data = range(values.shape[0]), values.float().numpy()
    if name == "x":
        features = inputs.float().numpy()
        if features.ndim == 1:  # token ids
            ax.step(steps, features, where="mid", color="0.3", linewidth=0.9)
        else:  # colours apart from the units' lines
            for k in range(features.shape[1]):
                color = INPUT_COLORS[k % len(INPUT_COLORS)]
                ax.plot(steps, features[:, k], linewidth=0.9, color=color, label=f"x[{k}]")
            if features.shape[1] > 1:
                ax.legend(fontsize=7, loc="upper right", ncol=min(features.shape[1], 4))
        return
    if name == "h_all":
        reach = max(float(abs(data).max()), 1e-6)
        extent = (-0.5, len(steps) - 0.5, data.shape[1], 0)
        ax.imshow(data.T, aspect="auto", cmap="RdBu_r", vmin=-reach, vmax=reach, extent=extent)
        return
    for unit in units:
        ax.plot(steps, data[:, unit], linewidth=1.2, label=f"unit {unit}")
    if name in SIGMOID_GATES:
        ax.set_ylim(-0.05, 1.05)
    ax.axhline(0.0, color="0.85", linewidth=0.6, zorder=0)


def gates_figure(
    rows: dict[str, Tensor],
    inputs: Tensor,
    lengths: list[int],
    units: list[int],
    titles: list[str],
    heading: str,
) -> Figure:
    """The gates picture: ``rows`` name -> ``(S, T, H)`` (the drawn sequences), one column
    per sequence, the rows in order after the input ``x``; ``lengths`` the real steps."""
    names = ["x", *rows]
    columns = len(titles)
    size = (4.2 * columns, 1.45 * len(names) + 0.8)
    fig, axes = plots.plt.subplots(
        len(names), columns, figsize=size, sharex="col", sharey="row", squeeze=False
    )
    for col, title in enumerate(titles):
        length = lengths[col]
        for row, name in enumerate(names):
            ax = axes[row, col]
            values = inputs[col, :length] if name == "x" else rows[name][col, :length]
            draw_row(ax, name, values, inputs[col, :length], units)
            if col == 0:
                ax.set_ylabel(row_label(name), fontsize=9)
            ax.tick_params(labelsize=8)
        axes[0, col].set_title(title, fontsize=10)
        axes[-1, col].set_xlabel("step t")
    handles, labels = axes[1, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", ncol=len(handles), fontsize=8)
    fig.suptitle(heading, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def column_titles(restored: Restored, batch: Batch, picked: list[int]) -> list[str]:
    """``sequence i: target y, output ŷ`` for a many-to-one head with a few outputs; else
    ``sequence i``."""
    with torch.no_grad():
        device_batch = batch.to(restored.device)
        output, _ = restored.model(device_batch.inputs, lengths=device_batch.lengths)
    titles = []
    for index in picked:
        title = f"test sequence {index}"
        target = batch.targets[index]
        if isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] <= 2:
            shown = ", ".join(f"{v:.3g}" for v in target.reshape(-1).tolist())
            guess = ", ".join(f"{v:.3g}" for v in output[index].float().cpu().tolist())
            title += f": target {shown}, output {guess}"
        titles.append(title)
    return titles


def inspect_gates(
    run: Path,
    output: Path | None = None,
    which: str = "best",
    sequences: int = 3,
    units: int = 4,
    layer: int = -1,
    overrides: Sequence[str] = (),
) -> Inspection:
    """Draw the gates picture (see the module docstring) of ``run``'s ``which`` checkpoint."""
    if sequences < 1 or units < 1:
        raise RnnexpError("--sequences and --units must be at least 1")
    output = default_output(run, "gates") if output is None else output
    plots.figure_format(output)  # a bad suffix fails before any work
    restored = restore(run, which, list(overrides))
    cell, cfg = restored.model.rnn, restored.cfg
    if not isinstance(cell, Cell):
        raise RnnexpError(f"cell {cfg.cell.name!r} is not an rnnexp cell: nothing to trace")
    if not -cell.num_layers <= layer < cell.num_layers:
        raise RnnexpError(f"--layer {layer}: the net has {cell.num_layers} layer(s)")
    batch = held_out_batch(restored.task)
    with torch.no_grad():
        x = restored.model.encoder(batch.inputs.to(restored.device))
        traced = {k: v.float().cpu() for k, v in cell.trace(x)[layer].items()}
    picked = pick_sequences(batch.targets, min(sequences, len(batch.targets)))
    drawn = pick_units(traced, batch.lengths, min(units, cell.hidden_size))
    states = [name for name in ("c", "h") if name in traced]
    rows = {name: traced[name] for name in traced if name not in states}
    rows |= {name: traced[name] for name in states} | {"h_all": traced["h"]}
    steps = batch.inputs.shape[1]
    lengths = batch.lengths.tolist() if batch.lengths is not None else [steps] * len(batch.inputs)
    layer_name = f"layer {layer % cell.num_layers}" if cell.num_layers > 1 else "the layer"
    where = f"{cfg.cell.name} on {cfg.task.name}, step {restored.checkpoint.step}"
    heading = f"{where}: {layer_name}'s gates and states over time"
    fig = gates_figure(
        {name: values[picked] for name, values in rows.items()},
        batch.inputs[picked].cpu(),
        [lengths[i] for i in picked],
        drawn,
        column_titles(restored, batch, picked),
        heading,
    )
    plots.save_figure(fig, output)
    names = ["x", *rows]
    step = restored.checkpoint.step
    panels = len(names) * len(picked)
    return Inspection(output, cfg.cell.name, cfg.task.name, [step], names, picked, drawn, panels)


def kept_checkpoints(run: Path) -> list[Path]:
    """A run folder's ``checkpoints/step_<k>.pt`` by step, then ``last.pt``."""
    folder = Path(run) / "checkpoints"
    if not Path(run).is_dir() or not (folder / "last.pt").is_file():
        raise RnnexpError(f"--eigenvalues reads a run folder's checkpoints/; {run} has no last.pt")
    kept = [p for p in folder.glob("step_*.pt") if p.stem[5:].isdigit()]
    return sorted(kept, key=lambda p: int(p.stem[5:])) + [folder / "last.pt"]


def inspect_eigenvalues(
    run: Path, output: Path | None = None, overrides: Sequence[str] = ()
) -> Inspection:
    """Draw the eigenvalues of every recurrent matrix at each kept checkpoint of ``run``."""
    from rnnexp.train.callbacks import Eigenvalues

    output = default_output(run, "eigenvalues_over_training") if output is None else output
    plots.figure_format(output)
    paths = kept_checkpoints(run)
    restored = restore(paths[-1], "last", list(overrides))
    model, snapshots = restored.model, {}
    for path in paths:
        saved = restored.checkpoint if path == paths[-1] else Checkpoint.load(path)
        load_model_state(model, saved.model, path)
        matrices = Eigenvalues.matrices(model)
        snapshots[saved.step] = {name: m.clone() for name, m in matrices.items()}
    if not matrices:
        raise RnnexpError(f"cell {restored.cfg.cell.name!r} has no square recurrent matrix")
    steps = sorted(snapshots)
    cfg = restored.cfg
    span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    title = f"{cfg.cell.name} on {cfg.task.name}: recurrent eigenvalues, {span}"
    fig = Eigenvalues.figure([(step, snapshots[step]) for step in steps], title)
    plots.save_figure(fig, output)
    names = list(matrices)
    return Inspection(output, cfg.cell.name, cfg.task.name, steps, names, [], [], len(names))
