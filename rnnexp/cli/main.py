"""The ``rnnexp`` command line (Typer). ``train`` hands its arguments to Hydra unchanged."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import CompletionItem, TyperCommand

from rnnexp import __version__
from rnnexp.errors import RnnexpError, print_error

app = typer.Typer(
    name="rnnexp",
    help="Experiment runner for recurrent networks on sequence tasks. "
    "Start with: rnnexp train cell=gru task=timer",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for the shell
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console()

# `train` forwards everything to Hydra: no options of its own, unknown options allowed,
# and Typer's --help off so that `rnnexp train --help` is Hydra's help.
HYDRA_PASSTHROUGH = {
    "allow_extra_args": True,
    "ignore_unknown_options": True,
    "help_option_names": [],
}


class HydraCommand(TyperCommand):
    """``rnnexp train``: Hydra parses its arguments; shell completion offers the config
    groups and their options (``cell=gru``) and the ``train.*``/``model.*`` keys."""

    def shell_complete(self, ctx: Any, incomplete: str) -> list[CompletionItem]:
        from rnnexp.config import override_completions

        words = list(ctx.args)
        if len(words) >= 2 and words[-1] == "=":  # bash splits `cell=gr` at the `=`
            group = words[-2]
            return [CompletionItem(item.partition("=")[2])
                    for item in override_completions(f"{group}={incomplete}")]  # fmt: skip
        return [CompletionItem(item) for item in override_completions(incomplete)]


def _version(value: bool) -> None:
    if value:
        console.print(f"rnnexp {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Experiment runner for recurrent networks on sequence tasks."""


@app.command(context_settings=HYDRA_PASSTHROUGH, add_help_option=False, cls=HydraCommand)
def train(ctx: typer.Context) -> None:
    """Train a model. Every argument is a Hydra override, e.g. [bold]cell=lstm task=timer
    train.max_steps=500[/]; [bold]-m[/] sweeps (cell=elman,lstm,gru), [bold]--cfg job[/] prints
    the config, [bold]--help[/] lists groups and keys."""
    from rnnexp.cli.train import main as hydra_main
    from rnnexp.train import sweep

    sys.argv = ["rnnexp train", *ctx.args]
    try:  # SIGTERM/Ctrl-C stop every job, also in a launcher's worker processes
        with sweep.stop_jobs_on_signals() as jobs:
            hydra_main()
            code = sweep.sweep_exit_code(jobs, Console(stderr=True))  # 1: a job did not complete
    except KeyboardInterrupt as interrupt:  # each job that was running recorded `interrupted`
        sys.exit(sweep.exit_code(interrupt))
    except ValueError as err:  # Hydra's own check of its flags, e.g. `-m` with `--cfg`
        if "can be specified" not in str(err):
            raise
        raise RnnexpError(f"{err} (e.g. drop -m to print the config with --cfg)") from None
    if code:
        sys.exit(code)


@app.command()
def evaluate(
    run: Path = typer.Argument(
        ..., help="A run folder (outputs/...) or a checkpoint .pt file.", readable=False
    ),
    overrides: list[str] = typer.Argument(
        None,
        help="split=test|val|train, and config overrides such as train.device=cpu "
        "or task.num_test=5000.",
        show_default=False,
    ),
    which: str = typer.Option("best", "--checkpoint", "-c", help="best or last (for a folder)."),
) -> None:
    """Score a trained model on a split (default: the held-out test set) with the config
    saved in its checkpoint; writes checkpoints/<name>.<split>.json."""
    from rnnexp.cli.evaluate import NotWritten, evaluate_checkpoint
    from rnnexp.config import Override, parse_override

    def is_split(override: Override) -> bool:
        return override.key == "split" and not override.prefix and override.value is not None

    parsed = [(o, parse_override(o)) for o in overrides or []]
    splits = [str(p.value) for _, p in parsed if is_split(p)]
    split = splits[-1] if splits else "test"
    rest = [o for o, p in parsed if not is_split(p)]
    unwritten = None
    try:
        result, out = evaluate_checkpoint(run, which=which, split=split, overrides=rest)
    except NotWritten as err:  # a read-only run folder: the table, then the error
        result, out, unwritten = err.result, None, err
    table = Table(title=f"{result['task']} / {result['cell']} — {split} (step {result['step']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    if "calibration" in result:  # task.calibrate: the logits were divided by this
        table.add_row("softmax temperature", f"{result['calibration']['temperature']:.6g}")
    console.print(table)
    if unwritten is not None:
        raise unwritten
    console.print(f"written to {out}", highlight=False, soft_wrap=True)
    if "predictions" in result:
        console.print(f"predictions in {result['predictions']}", highlight=False, soft_wrap=True)


@app.command()
def sample(
    run: Path = typer.Argument(
        ..., help="A charlm run folder or a checkpoint .pt file.", readable=False
    ),
    prime: str = typer.Option("", "--prime", "-p", help="Text to start from (default: none)."),
    length: int = typer.Option(500, "--length", "-n", help="Tokens (characters) to generate."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="< 1: safer, > 1: wilder."),
    top_k: int = typer.Option(None, "--top-k", help="Draw only from the k most likely tokens."),
    top_p: float = typer.Option(None, "--top-p", help="Draw from the smallest set with this mass."),
    argmax: bool = typer.Option(False, "--argmax", help="Always the most likely token (greedy)."),
    seed: int = typer.Option(None, "--seed", "-s", help="Same seed, same text (default: random)."),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples from the same prime."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the text to this file."),
    stream: bool = typer.Option(
        None, "--stream/--no-stream", help="Print as it generates (default: on a terminal)."
    ),
    which: str = typer.Option("best", "--checkpoint", "-c", help="best or last (for a folder)."),
) -> None:
    """Generate text from a language model (task=charlm), e.g. [bold]rnnexp sample
    outputs/charlm/lstm/<run> --prime "ROMEO:" --seed 1[/]."""
    from rnnexp.cli.sample import Settings, sample_run

    settings = Settings(temperature, top_k, top_p, argmax)
    sample_run(run, which, prime, length, settings, seed, num_samples, device, output, stream)


@app.command()
def predict(
    run: Path = typer.Argument(
        ..., help="A sentiment or ner run folder or a checkpoint .pt.", readable=False
    ),
    sentences: list[str] = typer.Argument(
        None, help="Sentences to label; none: read stdin, one per line.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: one object per sentence."),
    which: str = typer.Option("best", "--checkpoint", "-c", help="best or last (for a folder)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
) -> None:
    """Label sentences with a trained text model: the class and its probabilities
    (sentiment) or the entities (ner), e.g. [bold]rnnexp predict outputs/ner/lstm/<run>
    "Angela Merkel visited Paris ."[/]; [bold]--json[/] for programs."""
    from rnnexp.cli.predict import dump_json, predict, read_sentences, render

    restored, answers = predict(run, read_sentences(sentences or [], sys.stdin), which, device)
    if as_json:
        print(dump_json(answers))
    else:
        render(restored, answers, console)


@app.command("ls")
def ls(
    group: str = typer.Argument(
        None, help="cells, tasks, optim, sched, clip, experiments or debug; all when omitted."
    ),
    input_size: int = typer.Option(2, help="Input features for the cells' parameter counts."),
    hidden_size: int = typer.Option(64, help="Hidden units for the cells' parameter counts."),
) -> None:
    """List the configurable choices with one-line descriptions."""
    from rnnexp.config import GROUPS, choices

    aliases = {"cells": "cell", "tasks": "task", "experiments": "experiment"}
    groups = GROUPS if group is None else (aliases.get(group, group),)
    for name in groups:
        if name == "cell":
            console.print(_cells_table(input_size, hidden_size))
            continue
        table = Table(title=f"{name} (select with {name}=<name>)", title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("description")
        for option, description in choices(name).items():
            table.add_row(option, description)
        console.print(table)


@app.command()
def report(
    sweep: Path = typer.Argument(..., help="A sweep folder: outputs/multirun/<timestamp>."),
    rows: list[str] = typer.Option(
        None, "--rows", help="Pivot: a swept key down the rows, e.g. cell (repeatable)."
    ),
    cols: list[str] = typer.Option(
        None, "--cols", help="Pivot: a swept key across the columns, e.g. task.lag (repeatable)."
    ),
    value: str = typer.Option(
        None,
        "--value",
        help="Pivot value: a metric of `final` (e.g. nrmse) or solved; "
        "default solved, else the task's metric.",
    ),
    plot: bool = typer.Option(
        False, "--plot", help="Also draw the pivot to report_pivot.png: one line per row."
    ),
) -> None:
    """Summarize a sweep: mean ± std over seeds per combination of the swept keys, the
    solved count, failed/unfinished/missing jobs; writes report.csv and report.md there."""
    from rnnexp.cli.report import run

    run(sweep, rows or [], cols or [], value, console, plot)


@app.command()
def surface(
    output: Path = typer.Option(
        Path("error_surface.png"), "--output", "-o", help="The figure: .png, .svg or .pdf."
    ),
    setup: str = typer.Option(
        "seed002", "--setup", help="seed002 (tanh unit) or pascanu2013 (their eq. 8, Fig. 6)."
    ),
    target: float = typer.Option(0.7, "--target", help="Target output at the last step."),
    steps: int = typer.Option(50, "--steps", help="Steps the unit runs (T)."),
    start: tuple[float, float] | None = typer.Option(
        None, "--start", help="Start point W B (default: the setup's).", show_default=False
    ),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default: the setup's)."),
    clip: float = typer.Option(1.0, "--clip", help="Norm-clipping threshold."),
    iters: int = typer.Option(100, "--iters", help="Gradient-descent iterations."),
    w_range: tuple[float, float] | None = typer.Option(
        None, "--w-range", help="Grid range of w: LOW HIGH.", show_default=False
    ),
    b_range: tuple[float, float] | None = typer.Option(
        None, "--b-range", help="Grid range of b: LOW HIGH.", show_default=False
    ),
    resolution: int = typer.Option(301, "--resolution", help="Grid points per axis."),
    kind: str = typer.Option("contour", "--kind", help="contour (2-D) or surface (3-D)."),
) -> None:
    """Seed 002's error surface of one recurrent unit (target 0.7 after 50 steps) over
    (w, b), with gradient descent from one start with and without norm clipping: the cliff
    and the bounce, e.g. [bold]rnnexp surface -o surface.svg[/]."""
    from rnnexp.cli.surface import run

    def given(pair: tuple) -> tuple[float, float] | None:
        return None if pair is None or pair[0] is None else (float(pair[0]), float(pair[1]))

    result = run(output, setup, target, steps, given(start), lr, clip, iters, given(w_range),
                 given(b_range), resolution, kind)  # fmt: skip
    table = Table(title=result.heading)
    for column in ("path", "start", "end", "end loss", "max ‖g‖", "clipped steps"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, path in result.paths.items():
        first, last = path.points[0].tolist(), path.points[-1].tolist()
        table.add_row(
            "plain" if name == "plain" else f"clipped at {clip:g}",
            f"({first[0]:.4g}, {first[1]:.4g})",
            f"({last[0]:.4g}, {last[1]:.4g})",
            f"{path.losses[-1]:.3g}",
            f"{path.max_grad_norm:.4g}",
            f"{path.num_clipped}/{len(path.grad_norms)}",
        )
    console.print(table)
    console.print(f"written to {result.output}", highlight=False, soft_wrap=True)


@app.command()
def inspect(
    run: Path = typer.Argument(
        ..., help="A run folder (outputs/...) or a checkpoint .pt file.", readable=False
    ),
    overrides: list[str] = typer.Argument(
        None, help="Config overrides, e.g. train.device=cpu.", show_default=False
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="The figure: .png, .svg or .pdf (default: RUN/plots/gates.png, with "
        "--eigenvalues RUN/plots/eigenvalues_over_training.png; with --text the .html "
        "page, RUN/plots/text.html).",
        show_default=False,
    ),
    eigenvalues: bool = typer.Option(
        False,
        "--eigenvalues",
        help="The recurrent matrices' eigenvalues over training, from the checkpoints the "
        "run kept (train.keep_checkpoints=N) and last.pt.",
    ),
    sequences: int = typer.Option(3, "--sequences", "-n", help="Test sequences (columns)."),
    units: int = typer.Option(4, "--units", help="Units drawn as lines (those that vary most)."),
    layer: int = typer.Option(
        None,
        "--layer",
        help="The layer to draw (default: the top one; -1 counts back; --text: all).",
        show_default=False,
    ),
    which: str = typer.Option("best", "--checkpoint", "-c", help="best or last (for a folder)."),
    text: str = typer.Option(
        None,
        "--text",
        show_default=False,
        help="A char LM's units over a text (a file, or the text itself): an HTML page and "
        "PNGs (default: RUN/plots/text.html), the units most correlated with quotes, line "
        "position, brackets, and the gate saturation (Karpathy et al. 2015).",
    ),
    unit: int = typer.Option(
        None,
        "--unit",
        show_default=False,
        help="With --text: the unit to colour by (default: the most correlated one).",
    ),
    state: str = typer.Option(
        None,
        "--state",
        show_default=False,
        help="With --text: c (an LSTM's cell state; the default with --unit) or h.",
    ),
    max_chars: int = typer.Option(5000, "--max-chars", help="With --text: characters read."),
) -> None:
    """Look inside a trained net: for a few test sequences, its gates (keep/write/read),
    cell state and hidden state over time (an Elman net: its hidden activations), e.g.
    [bold]rnnexp inspect outputs/latch/lstm/<run>[/]; [bold]--eigenvalues[/]: the recurrent
    eigenvalues with the unit circle over training; [bold]--text FILE[/]: a char LM's units
    coloured over a text, those that track quotes, line position or brackets."""
    from rnnexp.cli.inspect import inspect_eigenvalues, inspect_gates

    if text is not None:
        from rnnexp.cli.inspect_text import inspect_text, report

        if eigenvalues:
            raise RnnexpError("--text and --eigenvalues draw different things; give one")
        report(inspect_text(run, text, output, which, unit, state, layer, max_chars,
                            overrides or []), console)  # fmt: skip
        return
    if unit is not None or state is not None:
        raise RnnexpError("--unit and --state choose the unit of --text; add --text FILE")
    layer = -1 if layer is None else layer
    if eigenvalues:
        result = inspect_eigenvalues(run, output, overrides or [])
        drawn = f"steps {', '.join(map(str, result.steps))}; matrices {', '.join(result.rows)}"
    else:
        result = inspect_gates(run, output, which, sequences, units, layer, overrides or [])
        drawn = (f"step {result.steps[0]}; test sequences {result.sequences}; units "
                 f"{result.units}; rows {', '.join(result.rows)}")  # fmt: skip
    console.print(f"{result.cell} on {result.task}: {drawn}", highlight=False, soft_wrap=True)
    console.print(f"written to {result.output}", highlight=False, soft_wrap=True)


@app.command()
def export(
    run: Path = typer.Argument(
        ..., help="A run folder (outputs/...) or a checkpoint .pt file.", readable=False
    ),
    fmt: str = typer.Option(
        "safetensors",
        "--format",
        "-f",
        help="safetensors (the weights, with the config that rebuilds them; no pickle) or "
        "onnx (the forward of an elman, lstm or gru net; dynamic batch and time).",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "--out",
        "-o",
        help="The file (default: RUN/model.safetensors or RUN/model.onnx; with "
        "--checkpoint last RUN/model_last.*).",
        show_default=False,
    ),
    which: str = typer.Option("best", "--checkpoint", "-c", help="best or last (for a folder)."),
) -> None:
    """Export a trained model for other programs, checked against the PyTorch model: its
    weights as [bold]safetensors[/] (torch's state_dict names; config, task state and
    rnnexp version as metadata) or its forward as [bold]onnx[/], e.g. [bold]rnnexp export
    outputs/charlm/lstm/<run> --format onnx[/]."""
    from rnnexp.cli.export import export_run

    for line in export_run(run, fmt, which, output).lines():
        console.print(line, highlight=False, soft_wrap=True)


def _cells_table(input_size: int, hidden_size: int) -> Table:
    from rnnexp import cells
    from rnnexp.config import choices

    table = Table(
        title=f"cells (select with cell=<name>); parameters at I={input_size}, H={hidden_size}",
        title_justify="left",
    )
    for column in ("name", "recurrence", "params", "source"):
        table.add_column(column, justify="right" if column == "params" else "left")
    for name, description in choices("cell").items():
        try:
            cell_spec = cells.spec(name)
            count = cells.count_parameters(cells.create(name, input_size, hidden_size))
            table.add_row(name, cell_spec.summary, f"{count:,}", cell_spec.source)
        except RnnexpError:
            table.add_row(name, description, "?", "")
    return table


def main() -> None:
    """Console-script entry point: user errors become one line and exit code 2."""
    try:
        app()
    except RnnexpError as err:
        print_error(err)
        sys.exit(2)
