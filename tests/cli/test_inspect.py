"""``rnnexp inspect`` and what it reads: the cells' gates (checked against each cell's own
forward output), the recurrent blocks, the ``Eigenvalues`` and ``KeepCheckpoints``
callbacks, and the pictures drawn from tiny runs."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from conftest import train_tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp import cells
from rnnexp.cli.inspect import inspect_eigenvalues, inspect_gates
from rnnexp.cli.main import main
from rnnexp.errors import RnnexpError
from rnnexp.train.callbacks import Eigenvalues
from rnnexp.train.checkpoint import Checkpoint

PNG = b"\x89PNG\r\n\x1a\n"


def traced_and_forward(cell: cells.Cell, steps: int = 6) -> tuple[list[dict], torch.Tensor, tuple]:
    torch.manual_seed(0)
    x = torch.randn(3, steps, cell.input_size)
    with torch.no_grad():
        out, final = cell.eval()(x)
    return cell.trace(x), out, final if isinstance(final, tuple) else (final,)


@pytest.mark.parametrize("name", cells.available())
def test_trace_runs_the_per_step_form_to_the_forward_output(name: str) -> None:
    cell = cells.create(name, 3, 5, num_layers=2)
    traced, out, final = traced_and_forward(cell)
    assert len(traced) == 2 and traced[-1]["h"].shape == (3, 6, 5)
    torch.testing.assert_close(traced[-1]["h"], out, atol=1e-6, rtol=1e-5)
    if "c" in traced[-1]:  # LSTMs: the cell state too, at the last step of each layer
        torch.testing.assert_close(torch.stack([t["c"][:, -1] for t in traced]), final[1])
    assert set(traced[0]) - {"h", "c"} <= set(cell.gate_names) | {"forget"}  # CIFG: 1 - i


def test_a_bidirectional_net_is_not_traced() -> None:
    cell = cells.create("lstm", 2, 3, bidirectional=True)
    with pytest.raises(RnnexpError, match="one-direction"):
        cell.trace(torch.zeros(1, 4, 2))


def prev(values: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B, T, H)`` one step later: ``v_{t-1}`` with ``v_{-1} = 0``."""
    return torch.cat([torch.zeros_like(values[:, :1]), values[:, :-1]], dim=1)


LSTMS = ["lstm", "lstm_peephole", "lstm_cifg", "lstm_fgr", "lstm_nig", "lstm_nfg", "lstm_nog",
         "lstm_niaf", "lstm_noaf", "lstm1997"]  # fmt: skip


@pytest.mark.parametrize("name", LSTMS)
def test_lstm_gates_rebuild_the_forward_output(name: str) -> None:
    """c_t = f c_{t-1} + i z, h_t = o act(c_t), from the reported gates alone (an absent
    gate is 1), equals the fused forward's outputs: the gates are the ones the cell ran."""
    cell = cells.create(name, 3, 5)
    (layer,), out, _ = traced_and_forward(cell)
    one = torch.ones_like(layer["h"])
    i, f, o = (layer.get(gate, one) for gate in ("input", "forget", "output"))
    assert {"candidate"} <= set(layer) and {"input", "forget", "output"} & set(layer)
    c = torch.zeros_like(one[:, 0])
    for t in range(one.shape[1]):
        c = f[:, t] * c + i[:, t] * layer["candidate"][:, t]
        torch.testing.assert_close(c, layer["c"][:, t])
    squash = getattr(cell, "layout", (True,) * 6)[5]  # NOAF: h = o c
    torch.testing.assert_close(o * (torch.tanh(layer["c"]) if squash else layer["c"]), out)
    if name == "lstm":
        assert cell.gate_names == ("input", "forget", "candidate", "output")
        sigmoids = torch.stack([layer[k] for k in ("input", "forget", "output")])
        assert sigmoids.min() >= 0 and sigmoids.max() <= 1


@pytest.mark.parametrize("name, options", [("gru", {}), ("gru", {"reset_after": False}),
                                           ("gru_minimal", {})])  # fmt: skip
def test_gru_gates_rebuild_the_forward_output(name: str, options: dict) -> None:
    cell = cells.create(name, 3, 5, **options)
    (layer,), out, _ = traced_and_forward(cell)
    h_prev = prev(layer["h"])
    if name == "gru":  # h_t = u h_{t-1} + (1 - u) n
        u = layer["update"]
        assert set(layer) == {"reset", "update", "candidate", "h"}
        torch.testing.assert_close(u * h_prev + (1 - u) * layer["candidate"], out)
    else:  # MGU: h_t = (1 - f) h_{t-1} + f n
        f = layer["forget"]
        torch.testing.assert_close((1 - f) * h_prev + f * layer["candidate"], out)


def test_recurrent_blocks_split_weight_hh_by_gate() -> None:
    lstm = cells.create("lstm", 2, 4, num_layers=2)
    blocks = lstm.recurrent_blocks(1)
    assert list(blocks) == ["input", "forget", "candidate", "output"]
    torch.testing.assert_close(torch.cat(list(blocks.values())), lstm.weight_hh_l1.detach())
    assert list(cells.create("elman", 2, 4).recurrent_blocks()) == ["W_hh"]
    jordan = cells.create("jordan", 2, 4)
    (w_eff,) = jordan.recurrent_blocks().values()  # Jordan: U_y V, no weight_hh of its own
    torch.testing.assert_close(w_eff, (jordan.weight_yh_l0 @ jordan.weight_ho_l0).detach())
    assert Eigenvalues.matrices(torch.nn.Sequential()) == {}  # not a cell: nothing to draw
    assert list(Eigenvalues.matrices(lstm))[:2] == ["layer 0 input", "layer 0 forget"]


@pytest.fixture(scope="module")
def latch_lstm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny latch LSTM that kept its last two step checkpoints (evaluations at 10, 20, 30)."""
    run_dir = tmp_path_factory.mktemp("latch_lstm")
    return train_tiny(run_dir, "latch", "lstm", "train.max_steps=30", "train.keep_checkpoints=2",
                   "train.eigenvalues=true")  # fmt: skip


def test_the_callbacks_draw_eigenvalues_and_keep_step_checkpoints(latch_lstm: Path) -> None:
    png = latch_lstm / "plots" / "eigenvalues.png"
    assert png.read_bytes()[:8] == PNG
    assert "eigenvalues" in EventAccumulator(str(latch_lstm)).Reload().Tags()["images"]
    kept = sorted(p.name for p in (latch_lstm / "checkpoints").glob("step_*.pt"))
    assert kept == ["step_20.pt", "step_30.pt"]
    for name, step in (("step_20.pt", 20), ("step_30.pt", 30)):
        assert Checkpoint.load(latch_lstm / "checkpoints" / name).step == step


def test_the_new_callbacks_change_nothing(tmp_path: Path, latch_lstm: Path) -> None:
    """Without the eigenvalue and checkpoint callbacks the run ends on the same weights."""
    off = ("~callbacks.eigenvalues", "~callbacks.keep_checkpoints", "train.max_steps=30")
    train_tiny(tmp_path, "latch", "lstm", *off)
    ours = Checkpoint.load(latch_lstm / "checkpoints" / "last.pt").model
    theirs = Checkpoint.load(tmp_path / "checkpoints" / "last.pt").model
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not list((tmp_path / "checkpoints").glob("step_*.pt"))


def test_gates_picture_of_a_latch_lstm(latch_lstm: Path, tmp_path: Path) -> None:
    result = inspect_gates(latch_lstm, tmp_path / "gates.png", sequences=2, units=3)
    rows = ["x", "input", "forget", "candidate", "output", "c", "h", "h_all"]
    assert result.rows == rows and result.panels == len(rows) * 2
    assert len(result.sequences) == 2 and len(result.units) == 3
    image = matplotlib.image.imread(result.output)
    assert result.output.read_bytes()[:8] == PNG and image.shape[0] > image.shape[1]  # tall
    svg = inspect_gates(latch_lstm, tmp_path / "gates.svg", which="last").output
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(RnnexpError, match=r"\.png, \.svg or \.pdf"):
        inspect_gates(latch_lstm, tmp_path / "gates.jpg")


def test_eigenvalues_over_training(latch_lstm: Path, tmp_path: Path) -> None:
    result = inspect_eigenvalues(latch_lstm, tmp_path / "eig.pdf")
    assert result.steps == [20, 30] and result.rows == ["input", "forget", "candidate", "output"]
    assert result.output.read_bytes()[:5] == b"%PDF-"
    bare = tmp_path / "bare"  # no kept checkpoints: last.pt alone
    bare.mkdir()
    (bare / "checkpoints").mkdir()
    last = (latch_lstm / "checkpoints" / "last.pt").read_bytes()
    (bare / "checkpoints" / "last.pt").write_bytes(last)
    assert inspect_eigenvalues(bare).steps == [30]
    assert (bare / "plots" / "eigenvalues_over_training.png").read_bytes()[:8] == PNG
    with pytest.raises(RnnexpError, match="no last.pt"):
        inspect_eigenvalues(tmp_path / "nothing")


@pytest.mark.parametrize("task, cell, rows", [
    ("adding", "gru", ["x", "reset", "update", "candidate", "h", "h_all"]),
    ("latch", "elman", ["x", "h", "h_all"]),  # no gates: the hidden activations
])  # fmt: skip
def test_gates_picture_of_other_cells(tmp_path: Path, task: str, cell: str, rows: list) -> None:
    run_dir = train_tiny(tmp_path / "run", task, cell, "train.max_steps=10")
    result = inspect_gates(run_dir, sequences=3)
    assert result.rows == rows and result.panels == 3 * len(rows)
    assert result.output == run_dir / "plots" / "gates.png" and result.output.stat().st_size


def test_cli(monkeypatch: pytest.MonkeyPatch, capsys, latch_lstm: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    for args in ([str(latch_lstm), "-o", str(out), "-n", "1"],
                 [str(latch_lstm), "--eigenvalues", "-o", str(tmp_path / "e.png")]):  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["rnnexp", "inspect", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        assert (exited.value.code or 0) == 0 and "written to" in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG and (tmp_path / "e.png").read_bytes()[:8] == PNG
    monkeypatch.setattr(sys, "argv", ["rnnexp", "inspect", str(latch_lstm), "--layer", "3"])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--layer 3" in err and len(err.strip().splitlines()) == 1
