"""The Callback seam (:mod:`rnnexp.train.callbacks`, ``conf/callbacks/``): each callback can be
switched off, a new one plugs in from the config alone, and the saved config with its
``callbacks`` node loads again (evaluate) and may change on resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp.cli.evaluate import evaluate_checkpoint
from rnnexp.errors import RnnexpError
from rnnexp.train.callbacks import Callback, Run
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import StepResult

SEEN: list[tuple[str, int]] = []


class Recorder(Callback):
    """A callback that only the tests know: it records the hooks it sees (like the tiny
    CSV logger a later issue adds)."""

    def on_train_start(self, run: Run) -> None:
        super().on_train_start(run)
        SEEN.append(("start", run.start_step))

    def on_step_end(self, step: int, result: StepResult) -> None:
        SEEN.append(("step", step))

    def on_evaluate(self, step: int, split: str, metrics: dict[str, float]) -> None:
        SEEN.append((split, step))

    def on_test_start(self, step: int) -> None:
        SEEN.append(("test_start", step))

    def on_train_end(self) -> None:
        SEEN.append(("end", 0))


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*TINY, *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cfg.cell.name))


def tags(run_dir: Path) -> dict[str, list[str]]:
    return EventAccumulator(str(run_dir)).Reload().Tags()


def test_default_callbacks_log_and_each_can_be_switched_off(tmp_path: Path) -> None:
    run(tmp_path / "all", "train.ema_decay=0.9", "train.diagnostics=true")
    logged = tags(tmp_path / "all")
    assert {"train/loss", "train/lr", "val/nrmse", "val_raw/nrmse",
            "diagnostics/spectral_norm"} <= set(logged["scalars"])  # fmt: skip
    assert logged["histograms"] and {"timer", "gradient_flow"} <= set(logged["images"])
    run(tmp_path / "less", "train.ema_decay=0.9", "train.diagnostics=true",
        "~callbacks.histograms", "~callbacks.raw_scores", "~callbacks.figures")  # fmt: skip
    logged = tags(tmp_path / "less")
    assert not logged["histograms"] and "val_raw/nrmse" not in logged["scalars"]
    assert "timer" not in logged["images"] and "val/nrmse" in logged["scalars"]
    run(tmp_path / "off", "train.histograms=false")  # the train key still works
    assert not tags(tmp_path / "off")["histograms"]


def test_a_new_callback_needs_only_a_config_entry(tmp_path: Path) -> None:
    SEEN.clear()
    run(tmp_path, "train.max_steps=4", "train.eval_every=2",
        "+callbacks.recorder._target_=test_callbacks.Recorder")  # fmt: skip
    assert SEEN == [("start", 0), ("step", 1), ("step", 2), ("val", 2), ("step", 3), ("step", 4),
                    ("val", 4), ("test_start", 4), ("test", 4), ("end", 0)]  # fmt: skip


def test_a_run_with_callbacks_evaluates_and_resumes_with_other_callbacks(tmp_path: Path) -> None:
    run(tmp_path / "first", "sched=constant", "train.max_steps=10")
    saved = Checkpoint.load(tmp_path / "first" / "checkpoints" / "last.pt")
    assert saved.config["callbacks"]["histograms"]["enabled"] is True
    scores, _ = evaluate_checkpoint(tmp_path / "first", "last", "test")
    assert "nrmse" in scores["metrics"]
    resumed = run(tmp_path / "rest", "sched=constant", "train.max_steps=20",
                  "~callbacks.histograms", "train.histograms=false",
                  f"train.resume={tmp_path / 'first'}")  # fmt: skip
    assert resumed["steps"] == 20
    # a checkpoint from before the callbacks group (no callbacks node) resumes too
    del saved.config["callbacks"]
    saved.save(tmp_path / "old.pt")
    old = run(tmp_path / "old", "sched=constant", "train.max_steps=20",
              f"train.resume={tmp_path / 'old.pt'}")  # fmt: skip
    assert old["steps"] == 20


def test_a_saved_callback_target_must_be_one_of_rnnexps(tmp_path: Path) -> None:
    run(tmp_path / "run", "train.max_steps=2", "train.eval_every=2")
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    saved = Checkpoint.load(path)
    saved.config["callbacks"]["progress"]["_target_"] = "os.system"
    saved.save(tmp_path / "evil.pt")
    with pytest.raises(RnnexpError, match="callbacks.progress._target_"):
        Checkpoint.load(tmp_path / "evil.pt")
    assert torch.load(path, weights_only=True)["step"] == 2


def test_history_csv_and_log_lines_follow_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two callbacks added from the config alone (issue 22's readable logs): every logged
    scalar in history.csv, and a log line per evaluation with the run folder and the best."""
    import csv
    import logging

    with caplog.at_level(logging.INFO, logger="rnnexp.train.callbacks"):
        metrics = run(tmp_path, "train.log_every=5")
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    losses = {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "train/loss"}
    assert sorted(losses) == [5, 10, 15, 20]
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload()
    for event in events.Scalars("train/loss"):  # the same numbers as TensorBoard's
        assert losses[event.step] == pytest.approx(event.value, rel=1e-6)
    test = [r for r in rows if r["name"] == "test/nrmse"]
    assert float(test[0]["value"]) == pytest.approx(metrics["final"]["nrmse"], rel=1e-6)
    lines = [r.getMessage() for r in caplog.records if r.name == "rnnexp.train.callbacks"]
    assert lines[0] == f"run folder: {tmp_path}"
    assert [line.split(":")[0] for line in lines[1:3]] == ["step 10/20", "step 20/20"]
    best = metrics["best"]
    assert f"(best nrmse={best['value']:.4g} at step {best['step']})" in lines[2]
    assert lines[-1].startswith(f"results in {tmp_path}")
    run(tmp_path / "quiet", "~callbacks.history", "~callbacks.log_lines")
    assert not (tmp_path / "quiet" / "history.csv").exists()


def test_hparams_tab_holds_the_overrides_against_the_metrics(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    overrides = ["optim.lr=0.01", "model.hidden_size=8", "sched=constant"]
    cfg = compose_config(*TINY, *overrides)
    record = RunRecord(
        tmp_path,
        task="timer",
        cell=cfg.cell.name,
        overrides=overrides,
        choices={"cell": "gru", "task": "timer", "sched": "constant"},
        seed=0,
    )
    metrics = train(cfg, tmp_path, record)
    events = EventAccumulator(str(tmp_path)).Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(0.01)
    assert hparams["model.hidden_size"].number_value == 8
    assert hparams["cell"].string_value == "gru" and hparams["sched"].string_value == "constant"
    (test,) = events.Scalars("hparams/test_nrmse")
    assert test.value == pytest.approx(metrics["final"]["nrmse"])
    (best,) = events.Scalars("hparams/best_val_nrmse")
    assert best.value == pytest.approx(metrics["best"]["value"])
