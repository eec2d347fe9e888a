"""The timer generator: shapes, targets on hand-checked cases, determinism, metrics."""

from __future__ import annotations

import pytest
import torch

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.timer import ON_VALUE, TimerTask


def draw(task: TimerTask, n: int = 8, seed: int = 0) -> Batch:
    return task.sample(n, torch.Generator().manual_seed(seed))


def test_shapes_and_ranges() -> None:
    task = TimerTask(max_duration=10, seq_len=100)
    batch = draw(task)
    assert batch.inputs.shape == (8, 100, 2) and batch.targets.shape == (8, 100, 1)
    u1, u2 = batch.inputs[..., 0], batch.inputs[..., 1]
    assert set(u1.unique().tolist()) <= {0.0, 1.0}
    assert u2.min() >= 0.1 and u2.max() <= 1.0
    assert set(batch.targets.unique().tolist()) <= {0.0, ON_VALUE}


@pytest.mark.parametrize("max_duration", [3, 10, 40])
def test_every_pulse_has_the_duration_set_at_its_start(max_duration: int) -> None:
    task = TimerTask(max_duration=max_duration)
    batch = draw(task, n=16, seed=max_duration)
    for inputs, target in zip(batch.inputs, batch.targets[..., 0], strict=True):
        starts = inputs[:, 0].nonzero().flatten().tolist()
        assert starts, "every sequence has at least one start"
        assert all(b - a > max_duration for a, b in zip(starts, starts[1:], strict=False))
        expected = torch.zeros(task.seq_len)
        for start in starts:
            duration = max(1, round(max_duration * inputs[start, 1].item()))
            expected[start : start + duration] = ON_VALUE
        torch.testing.assert_close(target, expected)


def test_hand_built_case() -> None:
    task = TimerTask(max_duration=5, seq_len=30)
    batch = draw(task, n=1, seed=0)
    u1, u2, target = batch.inputs[0, :, 0], batch.inputs[0, :, 1], batch.targets[0, :, 0]
    start = int(u1.nonzero()[0])
    duration = round(5 * float(u2[start]))
    assert target[start : start + duration].eq(ON_VALUE).all()
    assert target[start + duration] == 0 and (start == 0 or target[start - 1] == 0)


def test_determinism_and_fixed_held_out_sets() -> None:
    a, b = TimerTask(seed=7), TimerTask(seed=7)
    torch.testing.assert_close(draw(a, seed=3).inputs, draw(b, seed=3).inputs)
    torch.testing.assert_close(a.held_out("test")[0].inputs, b.held_out("test")[0].inputs)
    assert not torch.equal(a.held_out("val")[0].inputs, a.held_out("test")[0].inputs)
    assert not torch.equal(
        a.held_out("test")[0].inputs, TimerTask(seed=8).held_out("test")[0].inputs
    )


def test_metrics_of_perfect_and_constant_predictors() -> None:
    task = TimerTask(num_test=64)
    batches = task.held_out("test")
    perfect = task.score([b.targets for b in batches], batches)
    assert perfect["mse"] == 0 and perfect["nrmse"] == 0
    target = torch.cat([b.targets for b in batches])
    mean = [torch.full_like(b.targets, target.mean().item()) for b in batches]
    assert task.score(mean, batches)["nrmse"] == pytest.approx(1.0, abs=1e-3)


def test_seed_length_works_by_override() -> None:
    task = TimerTask(max_duration=1000)
    assert task.seq_len == 5_000
    assert draw(task, n=1).targets.sum() > 0


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(RnnexpError, match="seq_len"):
        TimerTask(max_duration=20, seq_len=10)
    with pytest.raises(RnnexpError, match="max_duration"):
        TimerTask(max_duration=0)


def test_u2_can_hold_between_starts() -> None:
    task = TimerTask(max_duration=10, u2_changes="at_starts")
    batch = draw(task, n=4)
    for inputs in batch.inputs:
        u1, u2 = inputs[:, 0], inputs[:, 1]
        segment = u1.cumsum(0)  # which start each step belongs to
        for k in segment.unique():
            assert u2[segment == k].unique().numel() == 1
    with pytest.raises(RnnexpError, match="u2_changes"):
        TimerTask(u2_changes="sometimes")
