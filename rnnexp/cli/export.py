"""``rnnexp export``: a trained run's model for other programs, checked against itself.

``--format safetensors`` (the default) writes the weights and what rebuilds them
(:func:`rnnexp.export.save_safetensors`), reads the file back
(:func:`rnnexp.export.load_safetensors`) and compares: every tensor bit for bit, and the
rebuilt model's scores on a random batch with the checkpoint's. ``--format onnx`` writes
the forward of a fused-cell model as an ONNX graph with dynamic batch and time axes
(:func:`rnnexp.export.onnx_graph`, traced on a batch of 2 x 7 steps) and, with
``onnxruntime`` installed, runs it on a batch of another shape (3 x 11) against the PyTorch
model. The checkpoint comes back through :func:`rnnexp.train.checkpoint.restore`, as for
``rnnexp evaluate``.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnexp import export as exporting
from rnnexp.atomic import atomic_write
from rnnexp.cells import count_parameters
from rnnexp.errors import RnnexpError
from rnnexp.train.checkpoint import Restored, restore

SUFFIXES = {"safetensors": ".safetensors", "onnx": ".onnx"}
TRACE_SHAPE = (2, 7)  # (batch, steps) the ONNX graph is traced on
CHECK_SHAPE = (3, 11)  # (batch, steps) the export is checked on: another shape than traced


@dataclass(frozen=True)
class Exported:
    """What ``rnnexp export`` wrote and how it was checked.

    ``max_abs_diff`` is ``max |exported - PyTorch|`` over the scores of a batch of shape
    ``inputs``, ``None`` when the check did not run (``--format onnx`` without
    ``onnxruntime``); ``checked_with`` says what ran the exported model."""

    output: Path
    format: str
    checkpoint: Path
    step: int
    cell: str
    task: str
    tensors: int
    parameters: int
    inputs: tuple[int, ...]
    max_abs_diff: float | None
    checked_with: str

    def lines(self) -> list[str]:
        """The command's report: what was written, then the check (or why it did not run)."""
        what = (f"{self.tensors} tensors" if self.format == "safetensors"
                else "inputs -> scores, dynamic batch and time")  # fmt: skip
        lines = [
            f"{self.task} / {self.cell}: {self.checkpoint} (step {self.step}, "
            f"{self.parameters:,} parameters) -> {self.output} ({self.format}: {what})"
        ]
        shape = " x ".join(map(str, self.inputs))
        if self.max_abs_diff is None:
            lines.append(
                "not checked: the check runs the graph with onnxruntime, which is not installed; "
                f"{exporting.ONNX_INSTALL}"
            )
        else:
            lines.append(
                f"checked with {self.checked_with} on a {shape} batch: max abs difference "
                f"{self.max_abs_diff:.3g} from the PyTorch model"
            )
        return lines


def default_output(run: str | Path, which: str, fmt: str, checkpoint: Path) -> Path:
    """``RUN/model.<suffix>`` (``model_last.<suffix>`` for ``--checkpoint last``) for a run
    folder; ``<checkpoint>.<suffix>`` beside a checkpoint file."""
    suffix = SUFFIXES[fmt]
    if Path(run).expanduser().is_dir():
        stem = "model" if which == "best" else f"model_{which}"
        return Path(run).expanduser() / f"{stem}{suffix}"
    return checkpoint.with_suffix(suffix)


def export_run(
    run: str | Path,
    fmt: str = "safetensors",
    which: str = "best",
    output: str | Path | None = None,
) -> Exported:
    """``rnnexp export``: restore ``run``'s checkpoint ``which`` (a run folder's
    ``best``/``last``, or a ``.pt`` file) on the CPU, write it as ``fmt`` to ``output``
    (default: :func:`default_output`) atomically, and check the file against the model."""
    if fmt not in SUFFIXES:
        raise RnnexpError(f"unknown --format {fmt!r}; choose one of: {', '.join(SUFFIXES)}")
    if output is not None and Path(output).suffix != SUFFIXES[fmt]:
        raise RnnexpError(
            f"--output {output} does not end in {SUFFIXES[fmt]}; give a {SUFFIXES[fmt]} file "
            f"for --format {fmt}"
        )
    if fmt == "onnx":
        exporting.require_onnx()  # before the checkpoint is read
    restored = restore(run, which, overrides=["train.device=cpu"])
    path = Path(output) if output is not None else default_output(run, which, fmt, restored.path)
    if fmt == "onnx":
        return _onnx(restored, path)
    return _safetensors(restored, path)


def _record(
    restored: Restored, path: Path, fmt: str, inputs: torch.Tensor, diff: float | None, by: str
) -> Exported:
    return Exported(
        output=path,
        format=fmt,
        checkpoint=restored.path,
        step=int(restored.checkpoint.step),
        cell=str(restored.cfg.cell.name),
        task=str(restored.cfg.task.name),
        tensors=len(restored.model.state_dict()),
        parameters=count_parameters(restored.model),
        inputs=tuple(inputs.shape),
        max_abs_diff=diff,
        checked_with=by,
    )


def _safetensors(restored: Restored, path: Path) -> Exported:
    exporting.save_safetensors(restored, path)
    reloaded = exporting.load_safetensors(path, overrides=["train.device=cpu"])
    expected, got = restored.model.state_dict(), reloaded.model.state_dict()
    differ = [name for name, tensor in expected.items()
              if name not in got or got[name].dtype != tensor.dtype
              or not torch.equal(got[name], tensor)]  # fmt: skip
    if differ or set(got) != set(expected):
        raise RnnexpError(
            f"{path} does not give back the checkpoint's tensors ({', '.join(differ[:3])}); "
            "this is a bug in rnnexp export"
        )
    inputs = exporting.example_inputs(restored.model, *CHECK_SHAPE)
    diff = exporting.max_abs_diff(
        exporting.scores(reloaded.model, inputs), exporting.scores(restored.model, inputs)
    )
    by = f"rnnexp.export.load_safetensors ({len(got)} tensors bit-identical)"
    return _record(restored, path, "safetensors", inputs, diff, by)


def _onnx(restored: Restored, path: Path) -> Exported:
    exporting.check_onnx_cell(restored)
    model = restored.model
    graph = exporting.onnx_graph(model, exporting.example_inputs(model, *TRACE_SHAPE))
    inputs = exporting.example_inputs(model, *CHECK_SHAPE, seed=1)
    got = exporting.run_onnx(graph, inputs)
    diff, by = None, ""
    if got is not None:
        expected = exporting.scores(model, inputs)
        diff = exporting.max_abs_diff(got, expected)
        by = f"onnxruntime {importlib.metadata.version('onnxruntime')}"
        if not exporting.close(got, expected):
            raise RnnexpError(
                f"the ONNX graph's scores differ from the PyTorch model's by up to {diff:.3g} "
                f"(more than rtol={exporting.TOLERANCE['rtol']}, atol="
                f"{exporting.TOLERANCE['atol']}); {path} was not written"
            )
    atomic_write(path, lambda handle: handle.write(graph))
    return _record(restored, path, "onnx", inputs, diff, by)
