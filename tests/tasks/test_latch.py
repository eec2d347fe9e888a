"""The latching generator: shapes, targets, determinism, the success criterion."""

from __future__ import annotations

import pytest
import torch

from rnnexp.errors import RnnexpError
from rnnexp.tasks.latch import LatchTask


def draw(task: LatchTask, n: int = 64, seed: int = 0):
    return task.sample(n, torch.Generator().manual_seed(seed))


def test_shapes_and_class_information() -> None:
    task = LatchTask(lag=20, info_steps=3)
    batch = draw(task)
    assert batch.inputs.shape == (64, 23, 1) and batch.targets.shape == (64, 1)
    info = batch.inputs[:, :3, 0]
    sign = 2 * batch.targets - 1  # +1 for class 1, -1 for class 0
    torch.testing.assert_close(info, sign.expand(-1, 3))  # clean information steps (HS97)
    noise = batch.inputs[:, 3:, 0]
    assert 0.15 < noise.std() < 0.25 and abs(noise.mean()) < 0.05


def test_hand_built_example_and_info_noise() -> None:
    batch = draw(LatchTask(lag=0, info_steps=1, noise=0.0), n=2, seed=1)
    for inputs, target in zip(batch.inputs, batch.targets, strict=True):
        assert inputs[0, 0] == (1.0 if target == 1 else -1.0)
    noisy = draw(LatchTask(lag=5, info_steps=3, info_noise=True), n=8)
    assert not torch.all(noisy.inputs[:, :3].abs() == 1.0)


def test_determinism_by_seed() -> None:
    a, b = LatchTask(seed=3), LatchTask(seed=3)
    torch.testing.assert_close(draw(a, seed=5).inputs, draw(b, seed=5).inputs)
    torch.testing.assert_close(a.held_out("test")[0].inputs, b.held_out("test")[0].inputs)


def test_success_criterion_on_perfect_and_constant_predictors() -> None:
    task = LatchTask(lag=10, num_test=400)
    batches = task.held_out("test")
    perfect = task.score([b.targets for b in batches], batches)
    assert perfect["error_rate"] == 0 and perfect["solved"] == 1.0
    constant = task.score([torch.full_like(b.targets, 0.5) for b in batches], batches)
    assert constant["error_rate"] == 1.0 and constant["solved"] == 0.0
    nearly = task.score([b.targets + 0.19 for b in batches], batches)
    assert nearly["error_rate"] == 0  # within the tolerance of 0.2


def test_bad_settings() -> None:
    with pytest.raises(RnnexpError, match="info_steps"):
        LatchTask(info_steps=0)


def test_trains_end_to_end_and_reports_solved(tmp_path) -> None:
    from conftest import compose_config, tiny

    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(*tiny("latch"), "cell=lstm")
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed"
    assert set(metrics["final"]) == {"loss", "error_rate", "accuracy", "solved"}
    assert metrics["best"]["metric"] == "error_rate"
