"""Runs written before checkpoint format v2 still load, score, sample and resume.

The fixtures are real run folders from rnnexp at commit 67c605b (``tests/fixtures/v1``,
whose README says how they were made): format v1 named ``rnnexp.clip``/``callbacks``/...
targets, kept the optimizer state at the top level and a calibrated temperature only in
``calibration`` (:func:`rnnexp.train.checkpoint.upgrade_v1`).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from rnnexp.cli.evaluate import evaluate_checkpoint
from rnnexp.cli.sample import sample_run
from rnnexp.train.checkpoint import FORMAT, V1, Checkpoint, restore
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
CORPUS = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(120))


def copy_run(name: str, tmp_path: Path) -> tuple[Path, dict]:
    run = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    return run, json.loads((run / "metrics.json").read_text())


def test_a_v1_checkpoint_reads_as_the_current_format(tmp_path: Path) -> None:
    run, _ = copy_run("timer_gru_ema", tmp_path)
    raw = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert raw["format"] == V1 and raw["config"]["clip"]["_target_"] == "rnnexp.clip.NormClip"
    assert "optimizer" in raw and "temperature" not in raw["model"]
    saved = Checkpoint.load(run, "last")
    assert saved.step == 10 and set(saved.update) == {"ema", "optimizer", "scheduler"}
    assert saved.config["clip"]["_target_"] == "rnnexp.train.clip.NormClip"
    assert saved.config["callbacks"]["progress"]["_target_"].startswith("rnnexp.train.callbacks.")
    assert saved.model["temperature"].item() == 1.0  # never calibrated
    assert saved.update["ema"]["trained_model"]["temperature"].item() == 1.0
    saved.save(tmp_path / "again.pt")  # written back: the current format
    assert torch.load(tmp_path / "again.pt", weights_only=True)["format"] == FORMAT
    again = Checkpoint.load(tmp_path / "again.pt")
    assert again.step == saved.step and again.config == saved.config
    assert all(torch.equal(again.model[k], saved.model[k]) for k in saved.model)


def test_a_v1_run_scores_as_it_did_and_resumes_exactly(tmp_path: Path) -> None:
    run, recorded = copy_run("timer_gru_ema", tmp_path)
    result, _ = evaluate_checkpoint(run, "last", "test")
    assert result["metrics"]["nrmse"] == pytest.approx(recorded["final"]["nrmse"], rel=1e-5)
    # train.resume to step 20 with the run's own settings: the uninterrupted run's score
    overrides = [o for o in recorded["overrides"] if not o.startswith("train.max_steps=")]
    cfg = compose_config(*overrides, "train.max_steps=20", f"train.resume={run}")
    rest = tmp_path / "rest"
    metrics = train(cfg, rest, RunRecord(rest, task="timer", cell="gru"))
    whole = json.loads((run / "whole_metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["resumed_from"]["step"] == 10
    assert metrics["final"]["nrmse"] == pytest.approx(whole["final"]["nrmse"], rel=1e-4)


def test_a_v1_calibrated_language_model_keeps_its_temperature(tmp_path: Path) -> None:
    run, recorded = copy_run("charlm_calibrated", tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    data = [f"task.data.path={corpus}"]
    restored = restore(run, "last", data)
    temperature = recorded["calibration"]["temperature"]
    assert restored.model.temperature.item() == pytest.approx(temperature)
    result, _ = evaluate_checkpoint(run, "last", "test", data)
    assert result["calibration"] == recorded["calibration"]
    assert result["metrics"]["loss"] == pytest.approx(recorded["final"]["loss"], rel=1e-5)
    (text,) = sample_run(run, "last", prime="line", length=20, seed=1, out=io.StringIO(),
                         err=io.StringIO())  # fmt: skip
    assert text.startswith("line") and len(text) == 24


def test_a_v1_latch_run_keeps_its_noise(tmp_path: Path) -> None:
    # v1's task.noise was the standard deviation (0.2); it reads as noise_variance 0.04
    run, recorded = copy_run("latch_lstm", tmp_path)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["config"]["task"][
        "noise"
    ] == pytest.approx(0.2)
    saved = Checkpoint.load(run, "last")
    assert "noise" not in saved.config["task"]
    assert saved.config["task"]["noise_variance"] == pytest.approx(0.04)
    result, _ = evaluate_checkpoint(run, "last", "test")
    assert result["metrics"]["loss"] == pytest.approx(recorded["final"]["loss"], rel=1e-5)
