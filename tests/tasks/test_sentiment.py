"""Task `sentiment`: tiny runs on the tiny SST-2-like files of conftest, metric wiring on
hand-made predictions, written predictions, exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp.cli.evaluate import evaluate_checkpoint
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.tasks.text_task import Evaluation
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*tiny("sentiment"), *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="sentiment", cell=cfg.cell.name))


def test_tiny_run_learns_and_draws_the_confusion_matrix(tmp_path: Path) -> None:
    metrics = run(tmp_path, "train.max_steps=60", "train.eval_every=30", "optim.lr=0.01")
    assert metrics["status"] == "completed"
    final = metrics["final"]  # no test file: the dev file
    assert set(final) >= {"loss", "accuracy", "macro_f1", "f1_0", "f1_1"}
    assert final["accuracy"] >= 0.8  # the tiny dev sentences are training sentences
    assert metrics["best"]["metric"] == "accuracy"
    assert (tmp_path / "plots" / "confusion.png").stat().st_size > 0
    assert "confusion" in EventAccumulator(str(tmp_path)).Reload().Tags()["images"]
    saved = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    labels, words = saved["task"]["labels"], saved["task"]["words"]
    assert labels["tokens"] == ["0", "1"] and labels["unk"] is None
    assert words["tokens"][:2] == ["<pad>", "<unk>"] and words["unk"] == "<unk>"


def test_metrics_on_hand_made_predictions() -> None:
    task = build(compose_config(*tiny("sentiment")).task, "task")
    examples = task.encode_texts(["a", "b", "c", "d", "e"])
    for example, label in zip(examples, [0, 0, 1, 1, 1], strict=True):
        example.target = torch.tensor(label)
    predicted = [0, 1, 1, 1, 0]  # class 0: P 1/2 R 1/2; class 1: P 2/3 R 2/3
    logits = [torch.eye(2)[p] for p in predicted]
    metrics = task.score(Evaluation("val", examples, logits), [0.5, 0.7], [2, 3])
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["f1_0"] == pytest.approx(1 / 2) and metrics["f1_1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["loss"] == pytest.approx((0.5 * 2 + 0.7 * 3) / 5)  # weighted by batch size
    task.label_names = {"0": "negative", "1": "positive"}
    assert "f1_negative" in task.score(Evaluation("val", examples, logits), [0.5], [5])


def test_evaluate_writes_predictions_beside_the_checkpoint(tmp_path: Path) -> None:
    run(tmp_path, "train.max_steps=10")
    result, _ = evaluate_checkpoint(tmp_path, split="val", overrides=["+write_predictions=true"])
    written = Path(result["predictions"])
    assert written.name == "best.val.tsv"
    header, *rows = written.read_text().splitlines()
    assert header.split("\t") == ["text", "label", "predicted", "p_0", "p_1"]
    assert len(rows) == 5 and all(len(r.split("\t")) == 5 for r in rows)
    # The timer cannot: a one-line error.
    from conftest import TINY

    timer = tmp_path / "timer"
    cfg = compose_config(*TINY, "train.max_steps=2", "train.eval_every=2")
    train(cfg, timer, RunRecord(timer))
    with pytest.raises(RnnexpError, match="cannot write predictions"):
        evaluate_checkpoint(timer, overrides=["+write_predictions=true"])


def test_resume_repeats_the_loss_curve_with_word_dropout(tmp_path: Path) -> None:
    common = ["task.word_dropout=0.5", "model.input_dropout=0.3", "train.batch_size=7",
              "sched=constant"]  # fmt: skip
    run(tmp_path / "whole", *common, "train.max_steps=16", "train.eval_every=8")
    run(tmp_path / "first", *common, "train.max_steps=8", "train.eval_every=8")
    run(tmp_path / "rest", *common, "train.max_steps=16", f"train.resume={tmp_path / 'first'}")

    def losses(run_dir: Path) -> dict[int, float]:
        events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
        return {e.step: e.value for e in events.Scalars("train/loss")}

    assert {**losses(tmp_path / "first"), **losses(tmp_path / "rest")} == losses(tmp_path / "whole")


def test_model_options_that_need_another_task_are_one_line_errors() -> None:
    cfg = compose_config(*tiny("sentiment"), "model.crf=true")
    with pytest.raises(RnnexpError, match="model.crf=true needs a tagging task"):
        build_model(cfg, build(cfg.task, "task").setup())
    cfg = compose_config(*tiny("sentiment"), "model.char_encoder=cnn")
    with pytest.raises(RnnexpError, match="needs a task with character inputs"):
        build_model(cfg, build(cfg.task, "task").setup())
    cfg = compose_config(*tiny("sentiment"), "model.pooling=attention")
    with pytest.raises(RnnexpError, match="model.pooling"):
        build_model(cfg, build(cfg.task, "task").setup())
