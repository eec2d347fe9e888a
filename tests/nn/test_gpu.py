"""CUDA checks (``@pytest.mark.gpu``: skipped without a GPU; bench/device_check.sh runs them
on a lent machine): a run on the GPU follows the CPU run, and its checkpoint loads on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config, tiny

from rnnexp.train.checkpoint import restore
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

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
