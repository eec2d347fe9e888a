"""The latching generator: shapes, targets, the noise's variance, HS97's variable length,
determinism, the success criterion."""

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
    assert 0.35 < noise.std() < 0.55 and abs(noise.mean()) < 0.1  # HS97: std sqrt(0.2)


@pytest.mark.parametrize("variance", [0.2, 0.04, 1.0])
def test_noise_variance_measured_on_many_draws(variance: float) -> None:
    """``task.noise_variance`` is the variance (HS97 exp. 3a: 0.2), not the std: measured
    on 1000 x 400 = 400,000 noise values (the estimate's std error is 0.2% of it)."""
    noise = draw(LatchTask(lag=400, noise_variance=variance), n=1000).inputs[:, 3:, 0]
    assert noise.var().item() == pytest.approx(variance, rel=0.01)
    assert abs(noise.mean().item()) < 0.01 * variance**0.5
    assert LatchTask().noise_variance == 0.2  # the default is HS97's


def test_old_noise_std_is_reproduced_exactly() -> None:
    """The old default (std 0.2, the old key `noise`) is `noise_variance=0.04`: the same
    draws, bit for bit (the golden latch run relies on it)."""
    batch = draw(LatchTask(lag=30, noise_variance=0.04), n=16, seed=9)
    generator = torch.Generator().manual_seed(9)
    label = torch.randint(0, 2, (16, 1), generator=generator).float()
    old = 0.2 * torch.randn(16, 33, generator=generator)  # the old generator's draws
    old[:, :3] = 2 * label - 1
    assert torch.equal(batch.inputs[..., 0], old) and torch.equal(batch.targets, label)


def test_variable_length_as_hs97() -> None:
    """HS97: total length uniform over the integers in [T, T + T/10], T = info_steps + lag;
    one length per batch (and per held-out chunk)."""
    task = LatchTask(lag=97, info_steps=3, variable_length=True, num_test=64, eval_batch_size=4)
    stream = task.train_stream(2, seed=0)
    lengths = [next(stream).inputs.shape[1] for _ in range(400)]
    assert set(lengths) == set(range(100, 111))  # T = 100: 100 ... 110, both ends
    assert {c.inputs.shape[1] for c in task.held_out("test")} <= set(range(100, 111))
    batch = draw(task, n=32)
    sign = 2 * batch.targets - 1
    torch.testing.assert_close(batch.inputs[:, :3, 0], sign.expand(-1, 3))
    fixed = LatchTask(lag=97, info_steps=3).train_stream(2, seed=0)
    assert {next(fixed).inputs.shape[1] for _ in range(20)} == {100}  # off by default
    short = LatchTask(lag=5, info_steps=3, variable_length=True).train_stream(2, seed=0)
    assert {next(short).inputs.shape[1] for _ in range(20)} == {8}  # 8 // 10 = 0


def test_hand_built_example_and_info_noise() -> None:
    batch = draw(LatchTask(lag=0, info_steps=1, noise_variance=0.0), n=2, seed=1)
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
    with pytest.raises(RnnexpError, match="task.noise_variance"):
        LatchTask(noise_variance=-0.1)


@pytest.mark.parametrize("extra", [[], ["task.variable_length=true"]], ids=["fixed", "hs97"])
def test_trains_end_to_end_and_reports_solved(tmp_path, extra: list[str]) -> None:
    from conftest import compose_config, tiny

    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(*tiny("latch"), "cell=lstm", *extra)
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed"
    assert set(metrics["final"]) == {"loss", "error_rate", "accuracy", "solved"}
    assert metrics["best"]["metric"] == "error_rate"
