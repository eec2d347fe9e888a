"""optim=ridge: the ESN readout fitted in closed form in one pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config

from rnnexp.cells.esn import ridge_readout
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.ridge import RidgeReadout


def test_fit_sets_the_head_to_the_ridge_solution() -> None:
    cfg = compose_config(*TINY, "cell=esn", "optim=ridge")
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    fit = RidgeReadout(alpha=1e-3, batches=3)
    fit.fit(model, task, task.train_stream(4, seed=0), washout=5, device=torch.device("cpu"))
    # the same three batches, by hand
    stream = task.train_stream(4, seed=0)
    states, targets = [], []
    for _ in range(3):
        batch = next(stream)
        features, _ = model.features(batch.inputs)
        states.append(features[:, 5:].reshape(-1, features.shape[-1]))
        targets.append(batch.targets[:, 5:].reshape(-1, 1))
    weight, bias = ridge_readout(torch.cat(states), torch.cat(targets), 1e-3)
    torch.testing.assert_close(model.head.weight, weight)
    torch.testing.assert_close(model.head.bias, bias)


def test_ridge_run_is_one_pass_and_beats_the_untrained_readout(tmp_path: Path) -> None:
    cfg = compose_config(*TINY, "cell=esn", "optim=ridge", "model.hidden_size=50")
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed" and metrics["steps"] == 1
    assert metrics["final"]["nrmse"] < 0.95
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_ridge_refuses_a_washout_longer_than_the_sequences(tmp_path: Path) -> None:
    cfg = compose_config(*TINY, "cell=esn", "optim=ridge", "train.washout=30")
    with pytest.raises(RnnexpError, match="washout"):
        train(cfg, tmp_path, RunRecord(tmp_path))
