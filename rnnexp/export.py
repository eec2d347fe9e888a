"""A trained model for other programs: its weights as safetensors, its forward as ONNX.

**safetensors** (``model.safetensors``): the model's ``state_dict`` under torch's names
(``rnn.weight_ih_l0``, ``head.weight``, ...), each tensor as it is in the checkpoint (the
evaluated weights: the moving average with ``train.ema_decay``; the read-out's calibrated
``temperature``), in a file that holds only a JSON header and raw tensor bytes: no pickle,
so reading it cannot run code. The header's ``__metadata__`` (strings) says how to rebuild
the model: :data:`FORMAT`, the ``rnnexp_version`` that wrote it, the run's resolved
``config`` and the ``task_state`` (e.g. a vocabulary) as JSON, the ``step`` and the
``checkpoint`` it came from, the ``calibration`` record. :func:`load_safetensors` rebuilds
the model from it the way a checkpoint is restored (:meth:`rnnexp.train.checkpoint.Checkpoint
.restore`), after :func:`rnnexp.config.check_saved_config` has refused any config that
names something rnnexp's own configs do not build.

**ONNX** (``model.onnx``): the forward ``inputs -> scores`` of a model whose recurrence is
one of torch's fused modules (:data:`ONNX_CELLS`: ``nn.RNN``, ``nn.LSTM``, ``nn.GRU``),
which ONNX has as the ops ``RNN``, ``LSTM``, ``GRU``, so the graph runs any batch size and
sequence length. The hand-written cells run a Python loop over the steps, which a trace
would fix at one length; they are refused. The graph comes from torch's TorchScript-based
exporter (``torch.onnx.export(dynamo=False)``): the ``torch.export``-based one specializes
the time axis of ``nn.LSTM``/``GRU``/``RNN`` to the example's length (pytorch#115092).
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnexp import __version__
from rnnexp.atomic import atomic_write
from rnnexp.cells.torch_cells import FusedCell
from rnnexp.config import check_saved_config
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRFScores
from rnnexp.nn.encoders import WordEncoder
from rnnexp.nn.model import OneHot, SequenceModel
from rnnexp.train.checkpoint import Checkpoint, Restored

FORMAT = "rnnexp-safetensors-v1"
METADATA_KEYS = ("format", "rnnexp_version", "config", "task_state", "step")
# The cells built on torch's fused nn.RNN/LSTM/GRU (rnnexp.cells.torch_cells.FusedCell);
# cell=gru with reset_after=false is hand-written (rnnexp.cells.gru_variants).
ONNX_CELLS = ("elman", "gru", "lstm")
ONNX_INSTALL = "pip install 'rnnexp[onnx]' (or pip install onnx onnxruntime)"
INPUT_NAME, OUTPUT_NAME = "inputs", "scores"
TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}  # ONNX Runtime's kernels against torch's


def save_safetensors(restored: Restored, path: str | Path) -> Path:
    """Write the restored model's ``state_dict`` and the metadata that rebuilds it (see the
    module docstring) to ``path`` atomically (:func:`rnnexp.atomic.atomic_write`)."""
    from safetensors.torch import save  # a base dependency, imported when first used

    checkpoint = restored.checkpoint
    # clone: safetensors refuses tensors that share memory or are not contiguous
    tensors = {name: t.detach().cpu().contiguous().clone()
               for name, t in restored.model.state_dict().items()}  # fmt: skip
    metadata = {
        "format": FORMAT,
        "rnnexp_version": __version__,
        "config": _json(checkpoint.config, "config"),
        "task_state": _json(checkpoint.task, "task state"),
        "step": str(int(checkpoint.step)),
        "checkpoint": _relative(restored.path),
        "calibration": _json(checkpoint.calibration, "calibration"),
    }
    data = save(tensors, metadata=metadata)
    return atomic_write(path, lambda handle: handle.write(data))


def _relative(checkpoint: Path) -> str:
    """A checkpoint as its run folder names it (``checkpoints/best.pt``), else its name."""
    parent = checkpoint.parent.name
    return f"{parent}/{checkpoint.name}" if parent == "checkpoints" else checkpoint.name


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise RnnexpError(
            f"the checkpoint's {what} is not plain data ({err}); it cannot go into safetensors "
            "metadata"
        ) from None


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the ``__metadata__`` of a safetensors file, on the CPU. One line when
    the file is missing, not a safetensors file, or one that rnnexp did not write."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not found"
        raise RnnexpError(
            f"cannot read {path}: {what}; pass a .safetensors file from rnnexp export"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise RnnexpError(
            f"cannot read {path}: not a safetensors file or a damaged one ({err}); "
            "export it again with rnnexp export RUN"
        ) from None
    if metadata.get("format") != FORMAT or any(key not in metadata for key in METADATA_KEYS):
        raise RnnexpError(
            f"{path} is a safetensors file that rnnexp export did not write (its metadata has "
            f"no format={FORMAT!r} with {', '.join(METADATA_KEYS[1:])}); load it with "
            "safetensors.torch.load_file"
        )
    return tensors, metadata


def load_safetensors(path: str | Path, overrides: Sequence[str] = ()) -> Restored:
    """Rebuild the model (and its task, from the saved task state) from a file written by
    :func:`save_safetensors`, without pickle: the config is checked
    (:func:`rnnexp.config.check_saved_config`) before anything is built from it, then
    restored as a checkpoint is (:meth:`rnnexp.train.checkpoint.Checkpoint.restore`, with
    ``key=value`` ``overrides`` such as ``train.device=cuda``)."""
    path = Path(path).expanduser()
    tensors, metadata = read_safetensors(path)
    try:
        config = json.loads(metadata["config"])
        task_state = json.loads(metadata["task_state"])
        calibration = json.loads(metadata.get("calibration", "null"))
        step = int(metadata["step"])
    except (json.JSONDecodeError, ValueError) as err:
        raise RnnexpError(
            f"cannot read {path}: its metadata is damaged ({err}); export it again"
        ) from None
    check_saved_config(config, path)  # before the config reaches OmegaConf or Hydra
    if not isinstance(task_state, dict):
        raise RnnexpError(f"cannot read {path}: its task_state is not a mapping; export it again")
    checkpoint = Checkpoint(
        step=step,
        config=config,
        model=tensors,
        task=task_state,
        calibration=calibration,
        rnnexp_version=metadata["rnnexp_version"],
        path=path,
    )
    return checkpoint.restore(overrides)


def example_inputs(model: SequenceModel, batch: int = 3, steps: int = 11, seed: int = 0) -> Tensor:
    """A random batch the model reads, ``batch`` sequences of ``steps`` steps: float features
    ``(B, T, I)`` for a linear input, token ids ``(B, T)`` below the vocabulary size, or
    word and character ids ``(B, T, 1 + C)`` for a character encoder."""
    generator = torch.Generator().manual_seed(seed)
    encoder = model.encoder
    if isinstance(encoder, OneHot):
        return torch.randint(encoder.vocab_size, (batch, steps), generator=generator)
    if isinstance(encoder, nn.Embedding):
        return torch.randint(encoder.num_embeddings, (batch, steps), generator=generator)
    if isinstance(encoder, WordEncoder):
        words = torch.randint(encoder.words.num_embeddings, (batch, steps, 1), generator=generator)
        if encoder.chars is None:
            return words[..., 0]
        num_chars = encoder.chars.embedding.num_embeddings  # id 0 pads: every word has >= 1
        chars = torch.randint(1, num_chars, (batch, steps, 5), generator=generator)
        return torch.cat([words, chars], dim=-1)
    return torch.randn(batch, steps, model.rnn.input_size, generator=generator)


def scores(model: SequenceModel, inputs: Tensor) -> Tensor:
    """``model(inputs)``'s read-out, without gradients: ``(B, T, O)`` or ``(B, O)`` (a
    tagger with a CRF: the emission scores)."""
    with torch.no_grad():
        output, _ = model(inputs)
    return output.emissions if isinstance(output, CRFScores) else output


class Scores(nn.Module):
    """``model``'s forward as the ONNX graph computes it: ``inputs -> scores``.

    The same read-out as ``model(inputs)`` (:func:`scores`), with each sequence's length
    given as the whole ``T``, so that a ``last_step`` head reads the last step through a
    gather on a length the graph computes from the input's shape, rather than a constant
    fixed at the example's length.

    Shapes: ``inputs`` ``(B, T, I)`` float features or ``(B, T)`` token ids (``(B, T, 1 + C)``
    with character ids); returns ``(B, T, O)`` (``every_step``) or ``(B, O)`` (``last_step``).
    """

    def __init__(self, model: SequenceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        hidden, _ = self.model.recur(inputs)  # (B, T, D * H)
        lengths = torch.full(hidden.shape[:1], hidden.shape[1], dtype=torch.long)
        output = self.model.readout(hidden, lengths.to(hidden.device))
        return output.emissions if isinstance(output, CRFScores) else output


def check_onnx_cell(restored: Restored) -> None:
    """One line when the run's cell is not one that ONNX can run at every length."""
    if not isinstance(restored.model.rnn, FusedCell):
        cell = restored.cfg.cell
        options = " with reset_after=false" if cell.get("reset_after") is False else ""
        raise RnnexpError(
            f"--format onnx exports the fused cells ({', '.join(ONNX_CELLS)}: torch's "
            f"nn.RNN/LSTM/GRU, which ONNX runs at any length); cell={cell.name}{options} runs "
            "a Python loop over the steps; export its weights with --format safetensors"
        )


def require_onnx() -> None:
    """One line naming the extra when the ``onnx`` package (the exporter's) is missing."""
    if importlib.util.find_spec("onnx") is None:
        raise RnnexpError(
            f"--format onnx needs the onnx package, which is not installed; {ONNX_INSTALL}"
        )


def onnx_graph(model: SequenceModel, example: Tensor) -> bytes:
    """The ONNX model of :class:`Scores` traced on ``example``, with the batch, time (and
    characters-per-word) axes dynamic, as bytes. One line when torch cannot export it."""
    axes = {0: "batch", 1: "time"}
    input_axes = (
        {**axes, 2: "chars"} if example.dim() == 3 and not example.is_floating_point() else axes
    )
    output_axes = axes if model.head_mode == "every_step" else {0: "batch"}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Scores(model).eval(),
                (example,),
                buffer,
                dynamo=False,  # see the module docstring
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: input_axes, OUTPUT_NAME: output_axes},
            )
    except (RuntimeError, torch.onnx.OnnxExporterError, ValueError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RnnexpError(
            f"torch.onnx could not export this model ({first[:200]}); "
            "--format safetensors exports every model"
        ) from None
    return buffer.getvalue()


def run_onnx(graph: bytes, inputs: Tensor) -> Tensor | None:
    """The ONNX graph's scores for ``inputs`` by ONNX Runtime on the CPU; ``None`` when
    ``onnxruntime`` is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs.numpy()})
    return torch.from_numpy(output)


def max_abs_diff(got: Tensor, expected: Tensor) -> float:
    """``max |got - expected|`` (0 for empty tensors); one line if the shapes differ."""
    if got.shape != expected.shape:
        raise RnnexpError(
            f"the exported model gives scores of shape {tuple(got.shape)}, the PyTorch model "
            f"{tuple(expected.shape)}; this is a bug in rnnexp export"
        )
    return float((got.double() - expected.double()).abs().max()) if got.numel() else 0.0


def close(got: Tensor, expected: Tensor) -> bool:
    """Whether ONNX Runtime's scores match torch's within :data:`TOLERANCE`."""
    return torch.allclose(got.double(), expected.double(), **TOLERANCE)
