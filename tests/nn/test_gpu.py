"""CUDA checks (``@pytest.mark.gpu``: skipped without a GPU; bench/device_check.sh runs them
on a lent machine): a run on the GPU follows the CPU run, and its checkpoint loads on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny

from rnnexp.cells import create
from rnnexp.config import build
from rnnexp.data.vocab import Vocab
from rnnexp.nn.generation import Settings, generate
from rnnexp.nn.model import OneHot, SequenceModel, build_model
from rnnexp.train.checkpoint import restore
from rnnexp.train.fast import FastPath
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import build_update

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("cell", ["gru", "lstm", "elman"])
def test_a_tiny_run_on_cuda_follows_the_cpu_run(tmp_path: Path, cell: str) -> None:
    finals = {}
    for device in ("cpu", "cuda"):
        cfg = compose_config(*tiny("timer"), f"cell={cell}", f"train.device={device}")
        run_dir = tmp_path / device
        metrics = train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cell))
        assert metrics["status"] == "completed" and metrics["device"].startswith(device)
        finals[device] = metrics["final"]["nrmse"]
    # cuDNN's kernels round differently: 20 steps drift like a new seed's last digits
    assert finals["cuda"] == pytest.approx(finals["cpu"], rel=2e-2)
    restored = restore(tmp_path / "cuda", "last", ["train.device=cpu"])
    assert restored.device.type == "cpu"
    assert restored.task.evaluate(restored.model, "test", restored.device)["nrmse"] == (
        pytest.approx(finals["cuda"], rel=1e-4)
    )


@pytest.mark.parametrize("cell", ["gru", "lstm", "elman"])
def test_hessian_free_on_cuda_follows_the_cpu_run(tmp_path: Path, cell: str) -> None:
    """``optim=hf`` on CUDA (cuDNN's nets have no double backward there: HF runs them step
    by step) trains the tiny timer as on a CPU."""
    finals = {}
    for device in ("cpu", "cuda"):
        cfg = compose_config(*tiny("timer"), f"cell={cell}", "optim=hf", f"train.device={device}")
        run_dir = tmp_path / device
        metrics = train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cell))
        assert metrics["status"] == "completed" and metrics["device"].startswith(device)
        finals[device] = metrics["final"]["nrmse"]
    # CG's iterations and the line search amplify rounding: a looser match than SGD's
    assert finals["cuda"] == pytest.approx(finals["cpu"], rel=0.1)


@pytest.mark.parametrize("reg", ["none", "pascanu"])
@pytest.mark.parametrize("clip", ["norm", "hidden"])
def test_fast_path_on_cuda_equals_the_general_path(
    clip: str, reg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The small-net fast path (issue 23) on CUDA: the same loss, gradients and Ω as the
    general path on CUDA, one Pascanu temporal-order batch in float32. It is chosen by
    itself only where the general path goes step by step (Ω, ``clip=hidden``): otherwise
    cuDNN's fused RNN is faster on a GPU."""
    # cuDNN's RNN rounds its matmuls to TF32 by default (relative error about 1e-3)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    device = torch.device("cuda")
    cfg = compose_config("experiment=pascanu2013", "task.length=50", f"clip={clip}",
                         f"regularizer={reg}", "train.device=cuda")  # fmt: skip
    task = build(cfg.task, "task")
    spec = task.setup()
    batch = next(task.train_stream(cfg.train.batch_size, 0)).to(device)
    made = []
    for fast in (True, False):
        torch.manual_seed(0)
        model = build_model(cfg, spec).to(device)
        update = build_update(cfg, model, task, None, device)
        assert (update.fast is None) == (clip == "norm" and reg == "none")
        update.fast = FastPath(model, update.clip, update.regularizer) if fast else None
        loss, _, _ = update.forward_backward(batch, None, 1)
        made.append((loss, [p.grad.clone() for p in model.parameters()], update))
    (loss_f, grads_f, fast), (loss_g, grads_g, general) = made
    assert loss_f.item() == pytest.approx(loss_g.item(), rel=1e-5)
    for got, want in zip(grads_f, grads_g, strict=True):
        assert (got - want).norm() <= 1e-4 * want.norm() + 1e-6
    if reg == "pascanu":
        omega_f, omega_g = fast.regularizer.last_value, general.regularizer.last_value
        assert omega_f == pytest.approx(omega_g, rel=1e-4)


def test_sampling_on_cuda(tmp_path: Path) -> None:
    """``rnnexp sample``'s path on a CUDA model: the prompt is kept and the text has the
    asked length."""
    torch.manual_seed(0)
    vocab = Vocab(["\n"] + [chr(32 + k) for k in range(64)], "char")
    for name in ("lstm", "gru"):
        rnn = create(name, 65, 32, num_layers=2)
        model = SequenceModel(OneHot(65), rnn, torch.nn.Linear(32, 65), "every_step", False, 0.0)
        model = model.to("cuda").eval()
        (text,) = generate(model, vocab, "ROMEO:", 50, Settings(temperature=1.0), seed=0)
        assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 50, (name, text)


@pytest.mark.parametrize("name", ["lstm_peephole", "lstm_niaf", "lstm_noaf", "lstm_fgr", "irnn"])
def test_hand_written_loops_on_cuda_equal_the_cpu(name: str) -> None:
    """The LSTM-type and Elman-type loops (``rnnexp/cells/loop.py``, their hand-written
    backward) give on CUDA the CPU's outputs and gradients."""
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        rnn = create(name, 5, 16).to(device)
        x = torch.randn(3, 12, 5, generator=torch.Generator().manual_seed(1)).to(device)
        out, _ = rnn(x)
        out.square().sum().backward()
        results.append([out.detach().cpu()] + [p.grad.cpu() for p in rnn.parameters()])
    for got, want in zip(results[1], results[0], strict=True):
        assert (got - want).norm() <= 1e-4 * want.norm() + 1e-6
