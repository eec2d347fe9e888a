"""The training loop in-process: resume equality, NaN handling, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp.errors import RnnexpError
from rnnexp.tasks.timer import TimerTask
from rnnexp.train import checkpoint
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import ema_of


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*TINY, *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cfg.cell.name))


def losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_resumed_run_repeats_the_uninterrupted_loss_curve(tmp_path: Path, cell: str) -> None:
    # dropout and a 2-layer net make the RNG state matter too
    common = [f"cell={cell}", "model.num_layers=2", "model.dropout=0.2", "sched=step",
              "sched.step_size=7"]  # fmt: skip
    run(tmp_path / "whole", *common, "train.max_steps=20")
    run(tmp_path / "first", *common, "train.max_steps=10")
    run(tmp_path / "rest", *common, "train.max_steps=20", f"train.resume={tmp_path / 'first'}")
    whole, first, rest = (losses(tmp_path / d) for d in ("whole", "first", "rest"))
    assert sorted(rest) == list(range(11, 21))
    assert {**first, **rest} == whole  # bit-for-bit the same losses


def test_checkpoint_holds_only_plain_data(tmp_path: Path) -> None:
    metrics = run(tmp_path)
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    payload = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert payload["format"] == checkpoint.FORMAT and payload["step"] == 20
    assert payload["config"]["cell"]["name"] == "gru"
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))  # atomic writes leave nothing
    assert (tmp_path / "plots" / "timer.png").stat().st_size > 0
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()
    assert {"train/loss", "train/grad_norm", "train/lr", "val/nrmse", "test/nrmse"} <= set(
        tags["scalars"]
    )
    assert "weights/rnn.weight_hh_l0" in tags["histograms"]
    assert "grads/rnn.weight_hh_l0" in tags["histograms"]
    assert "timer" in tags["images"]


def poison_loss(monkeypatch: pytest.MonkeyPatch, at_calls: set[int]) -> None:
    """Make the timer's loss NaN on the given training calls (1-based)."""
    original, calls = TimerTask.loss, {"n": 0}

    def loss(self, output, batch):
        calls["n"] += 1
        value = original(self, output, batch)
        return value * float("nan") if calls["n"] in at_calls else value

    monkeypatch.setattr(TimerTask, "loss", loss)


def test_nan_loss_stops_with_the_step_and_a_remedy(tmp_path, monkeypatch) -> None:
    poison_loss(monkeypatch, {3})
    with pytest.raises(RnnexpError, match=r"loss is nan at step 3: .*clip=norm"):
        run(tmp_path)


def test_nan_loss_can_be_skipped(tmp_path, monkeypatch) -> None:
    poison_loss(monkeypatch, {3, 4})
    metrics = run(tmp_path, "train.on_nan=skip")
    assert metrics["status"] == "completed" and metrics["skipped_steps"] == 2


def test_exploding_gradient_is_caught(tmp_path) -> None:
    with pytest.raises(RnnexpError, match="at step"):
        run(tmp_path, "cell=elman", "cell.nonlinearity=relu", "optim=sgd", "optim.lr=1e30",
            "clip=none")  # fmt: skip


def test_resume_past_max_steps_and_missing_resume(tmp_path) -> None:
    run(tmp_path / "a")
    with pytest.raises(RnnexpError, match="raise train.max_steps"):
        run(tmp_path / "b", f"train.resume={tmp_path / 'a'}")
    with pytest.raises(RnnexpError, match="checkpoint not found"):
        run(tmp_path / "c", f"train.resume={tmp_path / 'nothing.pt'}")


def test_sigterm_marks_the_run_interrupted(tmp_path: Path) -> None:
    """``kill`` (or a SLURM time limit) must not leave metrics.json saying ``running``."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import run_dirs

    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnexp", "train", *TINY, "train.max_steps=1000000"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not run_dirs(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_dirs(tmp_path), "the run never wrote its metrics.json"
    while not list(tmp_path.rglob("last.pt")) and time.monotonic() < deadline:
        time.sleep(0.1)  # into the training loop, past the first checkpoint
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    metrics = json.loads((run_dirs(tmp_path)[0] / "metrics.json").read_text())
    assert metrics["status"] == "interrupted", err[-2000:]
    assert "Traceback" not in err
    # metrics.json describes last.pt, and the run says how to continue from it
    saved = Checkpoint.load(run_dirs(tmp_path)[0] / "checkpoints" / "last.pt")
    assert metrics["steps"] == saved.step and f"holds step {saved.step}" in err
    assert metrics["resume_command"].endswith(f"train.resume={run_dirs(tmp_path)[0]}")
    assert metrics["resume_command"] in " ".join(err.split())


def test_stop_at_ends_the_run_once_val_reaches_the_target(tmp_path: Path) -> None:
    """timer's metric is nrmse (lower is better): a generous target is reached at the
    first evaluation, and the run ends there with its test scores; none runs on."""
    stopped = run(tmp_path / "stopped", "train.max_steps=20", "train.eval_every=4",
                  "train.stop_at=100.0")  # fmt: skip
    assert stopped["status"] == "completed" and stopped["steps"] == 4
    assert stopped["stopped_at_target"] is True and stopped["best"]["step"] == 4
    assert "nrmse" in stopped["final"]
    full = run(tmp_path / "full", "train.max_steps=8", "train.eval_every=4")
    assert full["steps"] == 8 and "stopped_at_target" not in full
    # killed after the evaluation that reached the target, before the test: resuming it
    # only scores it, as the uninterrupted run stopped there
    metrics = tmp_path / "stopped" / "metrics.json"
    killed = {k: v for k, v in json.loads(metrics.read_text()).items() if k != "final"}
    metrics.write_text(json.dumps({**killed, "status": "interrupted"}))
    scored = run(tmp_path / "scored", "train.max_steps=20", "train.eval_every=4",
                 "train.stop_at=100.0", f"train.resume={tmp_path / 'stopped'}")  # fmt: skip
    assert scored["steps"] == 4 and scored["stopped_at_target"] is True
    assert scored["final"] == pytest.approx(stopped["final"], rel=1e-6)


def test_patience_ends_the_run_after_evaluations_without_improvement(tmp_path: Path) -> None:
    """lr 0: val never improves after the first evaluation, so patience 2 stops at the
    third; the checkpoints and metrics.json say where, and the test score is there."""
    stopped = run(tmp_path / "stopped", "train.max_steps=40", "train.eval_every=2",
                  "optim=sgd", "optim.lr=0.0", "train.patience=2")  # fmt: skip
    assert stopped["status"] == "completed" and stopped["steps"] == 6
    assert stopped["stopped_early"] == {"patience": 2, "step": 6}
    assert stopped["best"]["step"] == 2 and "nrmse" in stopped["final"]
    assert Checkpoint.load(tmp_path / "stopped" / "checkpoints" / "last.pt").step == 6


def test_a_resumed_run_keeps_its_best_and_its_patience_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resumed after two evaluations without improvement, patience 3 stops the run where
    the uninterrupted run stops (step 8, not 3 evaluations after the resume), and the log
    lines name the best evaluation before the resume."""
    import logging

    common = ["train.eval_every=2", "optim=sgd", "optim.lr=0.0", "train.patience=3",
              "sched=constant"]  # fmt: skip
    whole = run(tmp_path / "whole", *common, "train.max_steps=40")
    assert whole["stopped_early"] == {"patience": 3, "step": 8}
    run(tmp_path / "first", *common, "train.max_steps=4")
    with caplog.at_level(logging.INFO, logger="rnnexp.train.callbacks"):
        rest = run(tmp_path / "rest", *common, "train.max_steps=40",
                   f"train.resume={tmp_path / 'first'}")  # fmt: skip
    assert rest["stopped_early"] == {"patience": 3, "step": 8}
    assert rest["best"]["step"] == 2
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 6/40")]
    assert "at step 2)" in lines[0]


def test_a_run_killed_between_its_last_checkpoint_and_its_test_is_scored_on_resume(
    tmp_path: Path,
) -> None:
    """``last.pt`` at ``train.max_steps`` of a run that never reached its test score (a
    SLURM time limit, a kill): resuming it scores it, with the uninterrupted run's test
    numbers. A completed run at ``train.max_steps`` still says to raise it."""
    whole = run(tmp_path / "whole", "train.max_steps=4", "train.eval_every=2")
    metrics = tmp_path / "whole" / "metrics.json"
    with pytest.raises(RnnexpError, match="raise train.max_steps"):
        run(tmp_path / "again", "train.max_steps=4", "train.eval_every=2",
            f"train.resume={tmp_path / 'whole'}")  # fmt: skip
    killed = {k: v for k, v in json.loads(metrics.read_text()).items() if k != "final"}
    metrics.write_text(json.dumps({**killed, "status": "interrupted"}))
    scored = run(tmp_path / "scored", "train.max_steps=4", "train.eval_every=2",
                 f"train.resume={tmp_path / 'whole'}")  # fmt: skip
    assert scored["status"] == "completed" and scored["steps"] == 4
    assert scored["final"] == pytest.approx(whole["final"], rel=1e-6)


def test_ema_of_follows_the_warmed_up_average() -> None:
    layer = torch.nn.Linear(1, 1, bias=False)
    ema, expected = ema_of(layer, decay=0.9), None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0]):
        layer.weight.data.fill_(value)
        ema.update_parameters(layer)
        decay = min(0.9, (1 + n) / (10 + n))  # n steps averaged before; the first copies
        expected = value if expected is None else decay * expected + (1 - decay) * value
        assert ema.module.weight.item() == pytest.approx(expected)
    with pytest.raises(RnnexpError, match="ema_decay"):
        ema_of(layer, decay=1.0)


def test_ema_is_evaluated_checkpointed_and_resumed_exactly(tmp_path: Path) -> None:
    common = ["cell=lstm", "model.dropout=0.2", "sched=constant", "train.ema_decay=0.8"]
    whole = run(tmp_path / "whole", *common, "train.max_steps=20")
    run(tmp_path / "first", *common, "train.max_steps=10")
    run(tmp_path / "rest", *common, "train.max_steps=20", f"train.resume={tmp_path / 'first'}")
    assert {**losses(tmp_path / "first"), **losses(tmp_path / "rest")} == losses(tmp_path / "whole")
    saved = [Checkpoint.load(tmp_path / d) for d in ("whole", "rest")]
    for name, weight in saved[0].model.items():  # the averaged weights, bit for bit
        assert torch.equal(weight, saved[1].model[name])
        if name != "temperature":  # a buffer (1), not averaged
            assert not torch.equal(weight, saved[0].update["ema"]["trained_model"][name])
    assert saved[0].update["ema"]["n_averaged"] == 20
    # metrics.json: the average's test score, and the trained weights' beside it
    assert whole["final"]["nrmse"] != whole["final_raw"]["nrmse"]
    tags = EventAccumulator(str(tmp_path / "whole")).Reload().Tags()["scalars"]
    assert {"val/nrmse", "val_raw/nrmse"} <= set(tags)
    with pytest.raises(RnnexpError, match="ema_decay"):  # resuming without it
        run(tmp_path / "plain", "cell=lstm", "model.dropout=0.2", "train.max_steps=20",
            f"train.resume={tmp_path / 'first'}")  # fmt: skip


def test_sigterm_inside_a_checkpoint_write_waits_for_the_write_and_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preemption that lands inside ``torch.save`` (of best.pt, after last.pt): the run
    stops only once both checkpoints and ``metrics.json`` describe that step."""
    import signal

    from rnnexp.train.sweep import JobSignals

    original, calls = torch.save, {"n": 0}

    def save(payload, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the writes: last.pt at step 10, then best.pt at step 10
            signal.raise_signal(signal.SIGTERM)
        return original(payload, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    signals = JobSignals.start(tmp_path)
    try:
        cfg = compose_config(*TINY, "train.max_steps=40")
        record = RunRecord(tmp_path, task="timer", cell=cfg.cell.name)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path, record)
    finally:
        signals.restore()
    last = Checkpoint.load(tmp_path / "checkpoints" / "last.pt")  # whole: it loads
    best = Checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert last.step == best.step == record.data["steps"] == 10
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_a_full_disk_in_the_middle_of_a_run_is_one_line(tmp_path: Path) -> None:
    """Files that stop growing (here a file-size limit: EFBIG, as ENOSPC on a full disk)
    while TensorBoard, the checkpoints and metrics.json are written: one line, exit 1."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def limit_file_size() -> None:  # in the child: EFBIG instead of the SIGXFSZ kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run(
        [sys.executable, "-m", "rnnexp", "train", *TINY, "model.hidden_size=64",
         "train.log_every=1", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "300"},
        capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write" in errors[0], proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) <= 3


def test_metrics_record_the_threads_the_run_used(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        run(tmp_path, "train.num_threads=1", "train.max_steps=2")
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "metrics.json").read_text())["torch_threads"] == 1
