"""``rnnexp export``: safetensors that hold only a JSON header and the raw tensors and
rebuild the model bit for bit (with its task state: a char LM samples the same text), a
loader that refuses foreign files and configs, ONNX graphs of the fused cells that
ONNX Runtime runs at other batch sizes and lengths than traced, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_tiny
from omegaconf import OmegaConf

import rnnexp
from rnnexp import cells
from rnnexp import export as exporting
from rnnexp.api import load_run, load_safetensors
from rnnexp.cells.torch_cells import FusedCell
from rnnexp.cli.export import export_run
from rnnexp.cli.main import main
from rnnexp.errors import RnnexpError
from rnnexp.train.checkpoint import Checkpoint

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}


@pytest.fixture(scope="module")
def timer_lstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timer LSTM: float inputs (B, T, 2), a score at every step."""
    return train_tiny(tmp_path_factory.mktemp("timer_lstm"), "timer", "lstm")


@pytest.fixture(scope="module")
def latch_gru(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-layer latch GRU with a learned h_0: one score per sequence (last step)."""
    run_dir = tmp_path_factory.mktemp("latch_gru")
    return train_tiny(run_dir, "latch", "gru", "model.num_layers=2", "cell.learn_h0=true")


@pytest.fixture(scope="module")
def charlm_elman(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character LM: token inputs, a vocabulary in the task state."""
    return train_tiny(tmp_path_factory.mktemp("charlm_elman"), "charlm", "elman")


def test_safetensors_rebuild_the_model_bit_for_bit(timer_lstm: Path) -> None:
    result = export_run(timer_lstm)
    assert result.output == timer_lstm / "model.safetensors" and result.output.is_file()
    assert result.max_abs_diff == 0.0 and result.tensors == 7
    original, loaded = load_run(timer_lstm), load_safetensors(result.output)
    expected, got = original.model.state_dict(), loaded.model.state_dict()
    assert list(got) == list(expected)  # torch's names, in the model's order
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    inputs = exporting.example_inputs(original.model, batch=4, steps=9, seed=5)
    assert torch.equal(loaded.model(inputs)[0], original.model(inputs)[0])
    assert loaded.step == original.step and loaded.checkpoint == result.output
    assert OmegaConf.to_container(loaded.config) == OmegaConf.to_container(original.config)
    assert loaded.metrics == original.metrics and loaded.metrics is not None  # the run's
    assert loaded.evaluate("test") == original.evaluate("test")


def test_the_file_is_a_json_header_and_the_raw_tensors(timer_lstm: Path, tmp_path: Path) -> None:
    """Every byte is accounted for by the header and the tensors' data: no pickle."""
    path = export_run(timer_lstm, output=tmp_path / "m.safetensors").output
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    metadata = header.pop("__metadata__")
    checkpoint = Checkpoint.load(timer_lstm, "best")
    assert set(header) == set(checkpoint.model)
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(body)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # no gaps
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        raw = bytearray(body[start:end])
        tensor = torch.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"])
        assert torch.equal(tensor, checkpoint.model[name]), name
    assert metadata["format"] == exporting.FORMAT
    assert metadata["rnnexp_version"] == rnnexp.__version__
    assert json.loads(metadata["config"]) == checkpoint.config
    assert json.loads(metadata["task_state"]) == checkpoint.task
    assert int(metadata["step"]) == checkpoint.step
    assert metadata["checkpoint"] == "checkpoints/best.pt"


def test_a_char_lm_samples_the_same_text_from_its_safetensors(charlm_elman: Path) -> None:
    path = export_run(charlm_elman, which="last").output
    assert path.name == "model_last.safetensors"
    loaded, original = load_safetensors(path), load_run(charlm_elman, "last")
    assert loaded.task.token_vocab() == original.task.token_vocab()  # from the metadata
    assert loaded.sample("ROMEO:", 30, seed=3) == original.sample("ROMEO:", 30, seed=3)


def write_safetensors(path: Path, metadata: dict[str, str] | None) -> Path:
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(2, 2)}, str(path), metadata=metadata)
    return path


def test_the_loader_refuses_foreign_files_and_configs(timer_lstm: Path, tmp_path: Path) -> None:
    good = export_run(timer_lstm, output=tmp_path / "good.safetensors").output
    _, metadata = exporting.read_safetensors(good)
    config = json.loads(metadata["config"])
    config["task"]["_target_"] = "os.system"
    evil = tmp_path / "evil.safetensors"
    write_safetensors(evil, metadata | {"config": json.dumps(config)})
    foreign = write_safetensors(tmp_path / "foreign.safetensors", None)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x80\x04not a safetensors file")
    cases = {
        evil: "refusing to load .*task._target_='os.system'",
        foreign: "rnnexp export did not write",
        garbage: "not a safetensors file",
        tmp_path: "a folder",
        tmp_path / "missing.safetensors": "not found",
    }
    for path, message in cases.items():
        with pytest.raises(RnnexpError, match=message):
            load_safetensors(path)


def test_onnx_exports_exactly_the_fused_cells(latch_gru: Path, tmp_path: Path) -> None:
    fused = {name for name in cells.available()
             if isinstance(cells.create(name, 2, 16), FusedCell)}  # fmt: skip
    assert fused == set(exporting.ONNX_CELLS)
    pytest.importorskip("onnx")
    peephole = train_tiny(tmp_path / "peephole", "timer", "lstm_peephole")
    with pytest.raises(RnnexpError, match="cell=lstm_peephole runs a Python loop"):
        export_run(peephole, "onnx")
    assert not (peephole / "model.onnx").exists()


@pytest.mark.parametrize("run", ["timer_lstm", "latch_gru", "charlm_elman"])
def test_onnx_runs_at_other_batch_sizes_and_lengths(run: str, request: pytest.FixtureRequest):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    run_dir = request.getfixturevalue(run)
    result = export_run(run_dir, "onnx")
    assert result.output == run_dir / "model.onnx" and result.max_abs_diff is not None
    (declared,) = onnx.load(str(result.output)).graph.input  # the axes the graph declares
    assert [d.dim_param for d in declared.type.tensor_type.shape.dim][:2] == ["batch", "time"]
    assert result.max_abs_diff < 1e-5 and "onnxruntime" in result.checked_with
    model = load_run(run_dir).model
    session = onnxruntime.InferenceSession(str(result.output))
    for batch, steps in ((1, 23), (6, 2)):  # traced at 2 x 7
        inputs = exporting.example_inputs(model, batch, steps, seed=batch)
        (got,) = session.run(None, {"inputs": inputs.numpy()})
        expected = exporting.scores(model, inputs)
        torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-5, rtol=1e-4)


def hide(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """``package`` looks not installed to ``importlib.util.find_spec``."""
    find_spec = importlib.util.find_spec

    def hidden(name: str, *rest: object) -> object:
        return None if name == package else find_spec(name, *rest)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)


def test_onnx_without_onnxruntime_is_written_unchecked(
    timer_lstm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    hide(monkeypatch, "onnxruntime")
    result = export_run(timer_lstm, "onnx", output=tmp_path / "m.onnx")
    assert result.max_abs_diff is None and result.output.stat().st_size > 0
    assert "onnxruntime, which is not installed" in result.lines()[1]
    assert "rnnexp[onnx]" in result.lines()[1]


def test_onnx_without_onnx_names_the_extra(timer_lstm: Path, monkeypatch) -> None:
    hide(monkeypatch, "onnx")
    with pytest.raises(RnnexpError, match=r"needs the onnx package.*rnnexp\[onnx\]"):
        export_run(timer_lstm, "onnx")


def test_an_onnx_graph_that_disagrees_is_not_written(
    timer_lstm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnx")
    run_onnx = exporting.run_onnx
    monkeypatch.setattr(exporting, "run_onnx", lambda graph, x: run_onnx(graph, x) + 0.01)
    with pytest.raises(RnnexpError, match="differ from the PyTorch model's by up to 0.01"):
        export_run(timer_lstm, "onnx", output=tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def run_main(monkeypatch: pytest.MonkeyPatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["rnnexp", "export", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def test_cli(monkeypatch: pytest.MonkeyPatch, capsys, timer_lstm: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported.safetensors"
    code, stdout, _ = run_main(monkeypatch, capsys, str(timer_lstm), "--out", str(out))
    assert code == 0 and out.is_file() and "max abs difference 0 " in stdout
    (tmp_path / "not_a_run").mkdir()
    bad = {
        (str(tmp_path / "not_a_run"),): "is .* a finished rnnexp run folder",
        (str(timer_lstm), "--format", "pickle"): "unknown --format 'pickle'",
        (str(timer_lstm), "-o", str(tmp_path / "m.onnx")): "does not end in .safetensors",
    }
    for args, message in bad.items():
        code, _, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error:") and re.search(message, err), err
