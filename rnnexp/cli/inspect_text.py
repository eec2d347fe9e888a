"""``rnnexp inspect RUN --text FILE_OR_STRING``: Karpathy et al. 2015's views of a char LM.

Karpathy, Johnson and Fei-Fei 2015, "Visualizing and understanding recurrent networks"
(arXiv:1506.02078), read a trained character model on a text and found single units that
track something a reader can name: a cell that is on inside quotes, one that counts the
position in the line, one that follows the depth of brackets. This module does the same
for a trained ``task=charlm`` run:

* **the units found**: the model reads the text one character at a time through its cell's
  own per-step form (:meth:`rnnexp.cells.Cell.trace`), which records each layer's hidden
  state ``h_t`` (and an LSTM's cell state ``c_t``) after every character. Each unit's values
  over the text are correlated (Pearson's ``r``) with simple features of the text read so
  far (:data:`FEATURES`: inside double quotes, position in the line, bracket depth, inside
  a word, just after a newline); the units with the largest ``|r|`` per feature are listed,
  and a feature is *found* when one reaches ``|r| >= 0.3`` (:data:`THRESHOLD`).
* **the coloured text**: an HTML page (self-contained, every character a ``<span>`` whose
  background is the unit's value after reading it, its value as a tooltip) and a PNG of
  its first lines, for the chosen unit (``--unit``; by default the most correlated one)
  and the best unit of each feature found. The colours are the paper's, red for negative
  through white at 0 to blue for positive, each side reaching the unit's own extreme over
  the text: not ``tanh(c)`` with the paper's fixed -1 and +1, under which a cell that
  counts (its ``c`` running far from 0) would look one colour.
* **gate saturation** (the paper's saturation plot): for every sigmoid gate of every layer, the
  fraction of characters at which each unit's gate is left-saturated (``< 0.1``) against
  the fraction at which it is right-saturated (``> 0.9``), one point per unit.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from torch import Tensor

from rnnexp import plots
from rnnexp.atomic import atomic_write
from rnnexp.cells import Cell
from rnnexp.cli.inspect import SIGMOID_GATES, default_output
from rnnexp.data.download import read_text
from rnnexp.data.vocab import Vocab
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel
from rnnexp.tasks.base import Generates
from rnnexp.train.checkpoint import Restored, restore

THRESHOLD = 0.3  # |r| at which a feature counts as found
TOP = 3  # units listed per feature
SATURATION = (0.1, 0.9)  # a gate below / above these is left- / right-saturated
OPENING, CLOSING = "([{", ")]}"
COLORMAP = "RdBu"  # -1 red, 0 white, +1 blue (the paper's colours)
LEVELS = 64  # colours the page's spans are drawn in (one CSS class each)
PNG_COLUMNS, PNG_ROWS = 80, 12  # the PNG shows this much of the text for each unit


# ------------------------------------------------------------------ features of the text
def inside_quotes(text: str) -> list[float]:
    """1 after an opening ``"`` up to (not including the state after) its closing one: the
    quote characters toggle it, so the opening quote reads 1 and the closing one 0."""
    inside, out = False, []
    for char in text:
        inside ^= char == '"'
        out.append(float(inside))
    return out


def position_in_line(text: str) -> list[float]:
    """The characters read on the current line, this one included: 1 for a line's first
    character, 0 for the newline that ends it."""
    position, out = 0, []
    for char in text:
        position = 0 if char == "\n" else position + 1
        out.append(float(position))
    return out


def bracket_depth(text: str) -> list[float]:
    """How many ``( [ {`` are open after this character (an opening bracket counts itself,
    a closing one does not); a closing bracket without an opening one stays at 0."""
    depth, out = 0, []
    for char in text:
        depth = depth + 1 if char in OPENING else max(depth - 1, 0) if char in CLOSING else depth
        out.append(float(depth))
    return out


def inside_word(text: str) -> list[float]:
    """1 for a letter or digit, 0 for spaces, punctuation and newlines."""
    return [float(char.isalnum()) for char in text]


def after_newline(text: str) -> list[float]:
    """1 where the character just read is a newline (the model is about to start a line)."""
    return [float(char == "\n") for char in text]


FEATURES: dict[str, Callable[[str], list[float]]] = {
    "inside quotes": inside_quotes,
    "position in line": position_in_line,
    "bracket depth": bracket_depth,
    "inside a word": inside_word,
    "after a newline": after_newline,
}


# ------------------------------------------------------------------ units and correlations
@dataclass(frozen=True, order=True)
class Unit:
    """One unit of one state tensor of one layer: ``layer 0 c[17]``."""

    layer: int
    state: str  # "h" or "c"
    index: int

    def __str__(self) -> str:
        return f"layer {self.layer} {self.state}[{self.index}]"


@dataclass(frozen=True)
class Correlated:
    """A unit and its Pearson correlation with a feature."""

    unit: Unit
    r: float


@dataclass(frozen=True)
class FeatureUnits:
    """The units most correlated with one feature (by ``|r|``); none if it is constant."""

    feature: str
    top: list[Correlated]
    threshold: float = THRESHOLD

    @property
    def constant(self) -> bool:
        """The feature does not vary over the text (e.g. no quote in it): no ``r``."""
        return not self.top

    @property
    def found(self) -> bool:
        return bool(self.top) and abs(self.top[0].r) >= self.threshold


def pearson(values: Tensor, feature: Tensor) -> Tensor:
    """Pearson's ``r`` of each column of ``values`` ``(N, U)`` with ``feature`` ``(N,)``:
    ``(U,)``; 0 for a constant column, and for all if the feature is constant."""
    values, feature = values.double(), feature.double()
    dv = values - values.mean(0)
    df = feature - feature.mean()
    cov = df @ dv
    scale = dv.norm(dim=0) * df.norm()
    return torch.where(scale > 0, cov / scale.clamp_min(1e-300), torch.zeros_like(cov))


def flatten_states(states: dict[tuple[int, str], Tensor]) -> tuple[Tensor, list[Unit]]:
    """``{(layer, "h"|"c"): (N, H)}`` -> all units side by side ``(N, U)`` and their names."""
    names = [
        Unit(layer, state, k) for (layer, state), v in states.items() for k in range(v.shape[1])
    ]
    return torch.cat(list(states.values()), dim=1), names


def top_units(
    states: dict[tuple[int, str], Tensor], feature: Sequence[float], count: int = TOP
) -> list[Correlated]:
    """The ``count`` units of ``states`` with the largest ``|r|`` with ``feature`` (one value
    a character), best first; ``[]`` if the feature is constant over the text."""
    target = torch.as_tensor(feature, dtype=torch.float64)
    if len(target) < 2 or bool((target == target[0]).all()):
        return []
    values, names = flatten_states(states)
    r = pearson(values, target)
    order = torch.argsort(r.abs(), descending=True, stable=True)[:count]
    return [Correlated(names[k], float(r[k])) for k in order.tolist()]


def find_units(
    states: dict[tuple[int, str], Tensor], text: str, count: int = TOP
) -> list[FeatureUnits]:
    """:func:`top_units` for every feature of :data:`FEATURES` over ``text``."""
    return [
        FeatureUnits(name, top_units(states, feature(text), count))
        for name, feature in FEATURES.items()
    ]


# ------------------------------------------------------------------ gate saturation
@dataclass(frozen=True)
class Saturation:
    """One gate of one layer: per unit, the fraction of steps below 0.1 and above 0.9."""

    layer: int
    gate: str
    left: Tensor  # (H,)
    right: Tensor  # (H,)


def gate_saturation(traced: list[dict[str, Tensor]]) -> list[Saturation]:
    """Every sigmoid gate's saturation fractions over the steps of ``traced`` (each layer's
    ``name -> (1, N, H)``, as :meth:`rnnexp.cells.Cell.trace` gives it)."""
    low, high = SATURATION
    out = []
    for layer, values in enumerate(traced):
        for gate in (name for name in values if name in SIGMOID_GATES):
            g = values[gate].reshape(-1, values[gate].shape[-1]).float()
            out.append(
                Saturation(layer, gate, (g < low).float().mean(0), (g > high).float().mean(0))
            )
    return out


def saturation_figure(saturation: list[Saturation], heading: str) -> Figure:
    """The paper's saturation plot: one panel per gate, a point per unit at (fraction of steps
    left-saturated, fraction right-saturated), a colour per layer."""
    gates = list(dict.fromkeys(s.gate for s in saturation))
    fig, axes = plots.plt.subplots(1, len(gates), figsize=(3.2 * len(gates), 3.4), squeeze=False)
    layers = sorted({s.layer for s in saturation})
    for ax, gate in zip(axes[0], gates, strict=True):
        ax.plot([0, 1], [1, 0], color="0.8", linewidth=0.8, zorder=0)  # left + right <= 1
        for s in (s for s in saturation if s.gate == gate):
            color = f"C{layers.index(s.layer) % 10}"
            ax.scatter(
                s.left.numpy(),
                s.right.numpy(),
                s=9,
                alpha=0.6,
                color=color,
                label=f"layer {s.layer}",
                linewidths=0,
            )
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=f"{gate} gate", aspect="equal")
        ax.set_xlabel(f"fraction left-saturated (< {SATURATION[0]})", fontsize=8)
        ax.tick_params(labelsize=8)
    axes[0, 0].set_ylabel(f"fraction right-saturated (> {SATURATION[1]})", fontsize=8)
    if len(layers) > 1:
        axes[0, -1].legend(fontsize=8, loc="upper right")
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the coloured text
@dataclass(frozen=True)
class Section:
    """One unit's values over the text, as drawn: ``values`` ``(N,)`` between ``low <= 0``
    (full red) and ``high >= 0`` (full blue), 0 white."""

    title: str
    unit: Unit
    values: Tensor
    low: float
    high: float

    @classmethod
    def of(cls, title: str, states: dict[tuple[int, str], Tensor], unit: Unit) -> Section:
        """The section of ``unit``, its colour scale reaching the extremes over the text."""
        values = states[(unit.layer, unit.state)][:, unit.index].float()
        return cls(
            title, unit, values, min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        )

    def scaled(self) -> Tensor:
        """The values in ``[-1, 1]``: negative ones divided by ``|low|``, positive ones by
        ``high`` (each side of 0 reaches its own extreme, so a counter that stays negative
        still shows its slope)."""
        negative = self.values / max(-self.low, 1e-12)
        positive = self.values / max(self.high, 1e-12)
        return torch.where(self.values < 0, negative, positive).clamp(-1, 1)


def colors(scaled: Tensor) -> np.ndarray:
    """RGBA ``(N, 4)`` of :data:`COLORMAP` for ``scaled`` values in ``[-1, 1]``."""
    return colormaps[COLORMAP](((scaled.float() + 1) / 2).clamp(0, 1).numpy())


def level(scaled: Tensor) -> list[int]:
    """Each of the ``scaled`` values' colour class ``0 .. LEVELS-1`` (-1 .. +1)."""
    return (((scaled.float() + 1) / 2).clamp(0, 1) * (LEVELS - 1)).round().long().tolist()


def ink(rgba: Sequence[float]) -> str:
    """Black or white text, whichever reads better on the background ``rgba``."""
    luminance = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
    return "#000" if luminance > 0.5 else "#fff"


def hex_color(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgba[:3])


def spans(text: str, section: Section) -> str:
    """The text as one ``<span>`` a character (escaped), its class the colour level and its
    tooltip the state's value (``c=...``, ``h=...``): what the page's ``<pre>`` holds."""
    state = section.unit.state
    return "".join(
        f'<span class="v{k}" title="{state}={value:.3f}">{html.escape(char)}</span>'
        for char, k, value in zip(
            text, level(section.scaled()), section.values.tolist(), strict=True
        )
    )


def feature_rows(found: list[FeatureUnits]) -> str:
    """The page's table: one row per feature, its best units and their ``r``."""
    rows = []
    for f in found:
        if f.constant:
            cells = '<td colspan="2">constant over this text</td>'
        else:
            units = ", ".join(f"{html.escape(str(c.unit))} ({c.r:+.2f})" for c in f.top)
            verdict = "found" if f.found else f"none with |r| &ge; {f.threshold:g}"
            cells = f"<td>{units}</td><td>{verdict}</td>"
        rows.append(f"<tr><td>{html.escape(f.feature)}</td>{cells}</tr>")
    return "\n".join(rows)


def render_html(
    text: str, sections: list[Section], found: list[FeatureUnits], heading: str, about: str
) -> str:
    """The self-contained page: the heading, the feature table, and the text coloured by
    each section's unit (one ``<pre class="text">`` a section, one span a character)."""
    palette = colormaps[COLORMAP]
    style = "\n".join(
        f".v{k}{{background:{hex_color(rgba)};color:{ink(rgba)}}}"
        for k, rgba in ((k, palette(k / (LEVELS - 1))) for k in range(LEVELS))
    )
    legend = "".join(
        f'<span class="v{k}">&nbsp;&nbsp;</span>' for k in range(0, LEVELS, max(LEVELS // 16, 1))
    )
    blocks = []
    for n, s in enumerate(sections):
        blocks.append(
            f'<h2 id="unit{n}">{html.escape(s.title)}</h2>\n'
            f'<p class="legend">{s.low:.3g} {legend} {s.high:+.3g}</p>\n'
            f'<pre class="text">{spans(text, s)}</pre>'
        )
    body = "\n".join(blocks)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(heading)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em}}
pre.text{{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;line-height:1.5;
white-space:pre-wrap;word-break:break-all;border:1px solid #ddd;padding:0.6em}}
table{{border-collapse:collapse}}
td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}}
p.legend span{{display:inline-block}}
{style}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<p>{html.escape(about)}</p>
<h2>units most correlated with features of the text (Pearson r)</h2>
<table><tr><th>feature</th><th>units (r)</th><th></th></tr>
{feature_rows(found)}
</table>
{body}
</body></html>
"""


def display_rows(text: str, columns: int, rows: int) -> list[list[int]]:
    """The character indices of the text laid out as the PNG shows it: a row per line,
    long lines wrapped at ``columns``, a newline the last cell of its row; the first
    ``rows`` rows."""
    out: list[list[int]] = [[]]
    for index, char in enumerate(text):
        if len(out[-1]) == columns:
            out.append([])
        out[-1].append(index)
        if char == "\n":
            out.append([])
        if len(out) > rows:
            break
    return [row for row in out[:rows] if row]


def text_figure(text: str, sections: list[Section], heading: str) -> Figure:
    """The PNG: the first lines of the text for each section, every character on a cell
    coloured by its unit (a newline drawn as ``↵``)."""
    layout = display_rows(text, PNG_COLUMNS, PNG_ROWS)
    width = max(len(row) for row in layout)
    fig, axes = plots.plt.subplots(
        len(sections),
        1,
        figsize=(0.085 * width + 0.3, (0.2 * len(layout) + 0.45) * len(sections) + 0.4),
        squeeze=False,
    )
    for ax, s in zip(axes[:, 0], sections, strict=True):
        rgba = colors(s.scaled())
        image = np.ones((len(layout), width, 4))
        for y, row in enumerate(layout):
            for x, index in enumerate(row):
                image[y, x] = rgba[index]
                char = "↵" if text[index] == "\n" else text[index]
                if not char.isspace():
                    color = "0.55" if text[index] == "\n" else ink(rgba[index])
                    ax.text(
                        x,
                        y,
                        char,
                        ha="center",
                        va="center",
                        family="monospace",
                        fontsize=8.5,
                        color=color,
                    )
        ax.imshow(image, aspect="auto", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(s.title, fontsize=9, loc="left")
    fig.suptitle(heading, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(h_pad=0.6)
    return fig


# ------------------------------------------------------------------ reading the text
def text_argument(value: str) -> tuple[str, str]:
    """``--text``: the contents of the file it names (UTF-8), or the string itself; and a
    label for it. A name that looks like a path but is none is an error, not text."""
    path = Path(value).expanduser()
    try:
        exists = "\n" not in value and path.exists()
    except OSError:  # a name too long for the file system, e.g.: text
        exists = False
    if exists:
        return read_text(path, "--text"), str(path)
    if " " not in value and "\n" not in value and ("/" in value or path.suffix in (".txt", ".md")):
        raise RnnexpError(
            f"--text {value}: no such file; pass an existing UTF-8 text file, or the text "
            "itself (a string with a space in it)"
        )
    return value, "the given string"


def encode_text(vocab: Vocab, text: str) -> list[int]:
    """The characters' ids; those outside the vocabulary become its ``unk`` (a corpus
    with held-out characters) or, without one, a one-line error naming them."""
    ids, missing = vocab.lookup(text)
    if missing and vocab.unk_id is None:
        shown = ", ".join(repr(c) for c in missing[:20])
        raise RnnexpError(
            f"--text has {len(missing)} character(s) outside the model's vocabulary: {shown}; "
            "use text written in the training text's characters"
        )
    return ids


# ------------------------------------------------------------------ the command
@dataclass(frozen=True)
class TextInspection:
    """What ``inspect --text`` wrote and found."""

    html: Path
    png: Path
    saturation_png: Path | None  # None for a cell without sigmoid gates
    cell: str
    task: str
    step: int
    source: str
    characters: int  # read by the model (after --max-chars)
    total: int  # in the text
    unit: Unit  # the one chosen (--unit) or the most correlated
    sections: list[Unit]  # drawn: the chosen unit, then the best of each feature found
    features: list[FeatureUnits]
    saturation: list[Saturation] = field(default_factory=list)

    @property
    def found(self) -> list[FeatureUnits]:
        return [f for f in self.features if f.found]


def trace_text(
    model: SequenceModel, cell: Cell, ids: list[int], device: torch.device
) -> list[dict[str, Tensor]]:
    """The model reads ``ids`` (one text, from its initial state): each layer's gates and
    states after every character, ``name -> (1, N, H)`` on the CPU."""
    with torch.no_grad():
        x = model.encoder(torch.tensor([ids], dtype=torch.long, device=device))
        return [{k: v.float().cpu() for k, v in layer.items()} for layer in cell.trace(x)]


def most_correlated(states: dict[tuple[int, str], Tensor], text: str) -> Unit:
    """The unit of ``states`` with the largest ``|r|`` with any feature of ``text``; the one
    that varies most if every feature is constant."""
    best = [c for feature in FEATURES.values() for c in top_units(states, feature(text), 1)]
    if best:
        return max(best, key=lambda c: abs(c.r)).unit
    values, names = flatten_states(states)
    return names[int(values.std(0).argmax())]


def pick_unit(
    states: dict[tuple[int, str], Tensor],
    text: str,
    unit: int | None,
    state: str | None,
    layer: int | None,
    layers: int,
) -> Unit:
    """``--unit``/``--state``/``--layer``, checked; without ``--unit`` the unit of ``--layer``
    and ``--state`` (default: all) most correlated with a feature (:func:`most_correlated`)."""
    if layer is not None and not -layers <= layer < layers:
        raise RnnexpError(f"--layer {layer}: the net has {layers} layer(s)")
    kinds = sorted({s for _, s in states})
    if state is not None and state not in kinds:
        raise RnnexpError(f"--state {state}: this cell has {' and '.join(kinds)}; choose one")
    if unit is None:
        allowed = {
            key: values
            for key, values in states.items()
            if (layer is None or key[0] == layer % layers) and state in (None, key[1])
        }
        return most_correlated(allowed, text)
    chosen_layer = layers - 1 if layer is None else layer % layers
    chosen_state = state or ("c" if "c" in kinds else "h")
    hidden = states[(chosen_layer, chosen_state)].shape[1]
    if not 0 <= unit < hidden:
        raise RnnexpError(f"--unit {unit}: the layer has {hidden} units (0 to {hidden - 1})")
    return Unit(chosen_layer, chosen_state, unit)


def _page(run: Path, output: Path | None, max_chars: int, state: str | None) -> Path:
    """The HTML page's path, after checking the options that need no model."""
    if max_chars < 2:
        raise RnnexpError("--max-chars must be at least 2")
    if state is not None and state not in ("c", "h"):
        raise RnnexpError(f"--state {state}: choose c (an LSTM's cell state) or h")
    page = default_output(run, "text").with_suffix(".html") if output is None else Path(output)
    if page.suffix.lower() not in (".html", ".htm"):
        raise RnnexpError(f"-o {page}: with --text it names the HTML page; end it in .html")
    return page


def _char_model_cell(restored: Restored) -> Cell:
    """The cell of a restored character-level language model (else one clear line)."""
    cfg, task = restored.cfg, restored.task
    if not isinstance(task, Generates) or task.token_vocab().level != "char":
        raise RnnexpError(
            f"{restored.path} is a {cfg.task.name} model; --text needs a character-level "
            "language model (task=charlm, task.level=char)"
        )
    cell = restored.model.rnn
    if not isinstance(cell, Cell):
        raise RnnexpError(f"cell {cfg.cell.name!r} is not an rnnexp cell: nothing to trace")
    return cell


def inspect_text(
    run: Path,
    text: str,
    output: Path | None = None,
    which: str = "best",
    unit: int | None = None,
    state: str | None = None,
    layer: int | None = None,
    max_chars: int = 5000,
    overrides: Sequence[str] = (),
) -> TextInspection:
    """Read ``text`` (a file's name or the text) with ``run``'s char LM and write the page,
    its PNG and the gate saturation plot (see the module docstring). ``output``: the page
    (``.html``; default ``RUN/plots/text.html``); the PNGs go beside it as ``<stem>.png``
    and ``<stem>_gate_saturation.png``."""
    page = _page(run, output, max_chars, state)
    whole, source = text_argument(text)
    restored = restore(run, which, list(overrides))
    cfg, task = restored.cfg, restored.task
    cell = _char_model_cell(restored)
    shown = whole[:max_chars]
    if len(shown) < 2:
        raise RnnexpError("--text is empty (or one character); give some text to read")
    traced = trace_text(
        restored.model, cell, encode_text(task.token_vocab(), shown), restored.device
    )
    states = {
        (k, s): layer_values[s][0]
        for k, layer_values in enumerate(traced)
        for s in ("c", "h")
        if s in layer_values
    }
    features = find_units(states, shown)
    chosen = pick_unit(states, shown, unit, state, layer, cell.num_layers)
    drawn = [chosen] + [f.top[0].unit for f in features if f.found]
    drawn = list(dict.fromkeys(drawn))  # in order, once each
    r_of = {(f.feature, c.unit): c.r for f in features for c in f.top}

    def title(u: Unit) -> str:
        tracks = [
            f"{f.feature} r = {r_of[(f.feature, u)]:+.2f}"
            for f in features
            if f.found and f.top[0].unit == u
        ]
        why = "; ".join(tracks) if tracks else ("chosen" if unit is not None else "most correlated")
        return f"{u}: {why}"

    sections = [Section.of(title(u), states, u) for u in drawn]
    where = f"{cfg.cell.name} on {cfg.task.name}, step {restored.checkpoint.step}"
    heading = f"{where}: units over the text"
    cut = (
        f"the first {len(shown):,} of {len(whole):,}"
        if len(shown) < len(whole)
        else f"{len(shown):,}"
    )
    about = (
        f"{restored.path}; {source}: {cut} characters; colour: the unit's value after reading "
        "the character, red below 0, white at 0, blue above (to the extremes over the text; "
        "hover a character for its value)"
    )
    png = page.with_suffix(".png")
    document = render_html(shown, sections, features, heading, about)
    atomic_write(page, lambda handle: handle.write(document.encode("utf-8")))
    plots.save_figure(text_figure(shown, sections, heading), png)
    saturation = gate_saturation(traced)
    saturation_png = None
    if saturation:
        saturation_png = page.with_name(f"{page.stem}_gate_saturation.png")
        fig = saturation_figure(
            saturation, f"{where}: gate saturation over {len(shown):,} characters"
        )
        plots.save_figure(fig, saturation_png)
    return TextInspection(
        html=page,
        png=png,
        saturation_png=saturation_png,
        cell=cfg.cell.name,
        task=cfg.task.name,
        step=restored.checkpoint.step,
        source=source,
        characters=len(shown),
        total=len(whole),
        unit=chosen,
        sections=drawn,
        features=features,
        saturation=saturation,
    )


def report(result: TextInspection, console: Console) -> None:
    """Print what ``inspect --text`` found: the feature table, the saturation table, a
    plain sentence on whether any unit tracks a feature, and the files written."""
    table = Table(
        title=f"units most correlated with features of the text (|r| >= {THRESHOLD:g}: found)",
        title_justify="left",
    )
    for column in ("feature", *(f"unit {k + 1}" for k in range(TOP)), "found"):
        table.add_column(column, justify="left")
    for f in result.features:
        if f.constant:
            table.add_row(f.feature, "constant over this text", *[""] * (TOP - 1), "-")
            continue
        cells = [f"{c.unit} {c.r:+.2f}" for c in f.top] + [""] * (TOP - len(f.top))
        table.add_row(f.feature, *cells, "yes" if f.found else "no")
    console.print(table)
    if result.saturation:
        sat = Table(
            title="gate saturation: mean fraction of characters per unit", title_justify="left"
        )
        for column in (
            "layer",
            "gate",
            "left (< 0.1)",
            "right (> 0.9)",
            "units mostly left",
            "units mostly right",
        ):
            sat.add_column(column, justify="left" if column == "gate" else "right")
        for s in result.saturation:
            sat.add_row(
                str(s.layer),
                s.gate,
                f"{s.left.mean():.3f}",
                f"{s.right.mean():.3f}",
                str(int((s.left > 0.5).sum())),
                str(int((s.right > 0.5).sum())),
            )
        console.print(sat)
    if result.found:
        names = "; ".join(
            f"{f.feature}: {f.top[0].unit} (r = {f.top[0].r:+.2f})" for f in result.found
        )
        console.print(f"found: {names}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"found no unit with |r| >= {THRESHOLD:g} for any feature of this text",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{result.cell} on {result.task}, step {result.step}: read {result.characters:,} "
        f"characters of {result.source}; coloured by {', '.join(map(str, result.sections))}",
        highlight=False,
        soft_wrap=True,
    )
    written = [result.html, result.png] + ([result.saturation_png] if result.saturation_png else [])
    console.print(f"written to {', '.join(map(str, written))}", highlight=False, soft_wrap=True)
