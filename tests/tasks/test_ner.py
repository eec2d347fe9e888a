"""Task `ner`: seqeval wiring on hand-made predictions, tag schemes, data errors, and a
tiny tagger (char encoder + CRF) trained on conftest's tiny CoNLL files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny

from rnnexp.cli.evaluate import evaluate_checkpoint
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.tasks.text_task import Evaluation
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
PREDICTED = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-LOC"]]


def ner_task(*overrides: str):
    task = build(compose_config(*tiny("ner"), *overrides).task, "task")
    task.fit()
    return task


@pytest.mark.parametrize("scheme", ["iob2", "iobes"])
def test_seqeval_scores_on_hand_made_predictions(scheme: str) -> None:
    task = ner_task(f"task.data.scheme={scheme}")
    assert task.types == ["LOC", "ORG", "PER"]
    examples = task.encode_texts(["John Smith in Paris", "Acme hired him"])
    for example, tags in zip(examples, GOLD, strict=True):
        example.target = task.encode_target(tags, "test")
    outputs = [task.encode_target(tags, "test").tolist() for tags in PREDICTED]
    metrics = task.score(Evaluation("val", examples, outputs), [1.0], [2])
    # gold PER(0-1) LOC(3) ORG(0); predicted PER(0-1) ok, ORG(3) wrong, ORG(0) ok, LOC(2) wrong
    assert metrics["precision"] == pytest.approx(2 / 4)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert metrics["f1_PER"] == 1.0 and metrics["f1_LOC"] == 0.0
    assert metrics["precision_ORG"] == 0.5 and metrics["recall_ORG"] == 1.0
    assert metrics["accuracy"] == pytest.approx(5 / 7)  # per token


def test_tag_sets_follow_the_scheme() -> None:
    assert ner_task().labels.tokens == [
        "O",
        *(f"{p}-{t}" for t in ("LOC", "ORG", "PER") for p in "BI"),
    ]
    task = ner_task("task.data.scheme=iobes")
    assert "S-LOC" in task.labels.tokens and "E-ORG" in task.labels.tokens
    paris = task.examples("train")[0]  # John Smith lives in Paris .
    tags = [task.labels.tokens[i] for i in paris.target]
    assert tags == ["B-PER", "E-PER", "O", "O", "S-LOC", "O"]
    assert task.tags_of(paris.target)[:2] == ["B-PER", "I-PER"]  # scored as IOB2
    with pytest.raises(RnnexpError, match="task.data.scheme"):
        ner_task("task.data.scheme=bilou")


def test_data_errors_are_one_line(tmp_path: Path) -> None:
    dev = tmp_path / "dev.txt"
    dev.write_text("Paris NN O B-LOC\nEuro NN O B-MISC\n\n")
    task = ner_task(f"task.data.dev_path={dev}")
    with pytest.raises(RnnexpError, match=r"dev.txt:1: entity type 'MISC' is not among"):
        task.examples("val")
    with pytest.raises(RnnexpError, match="tag 'NN' is neither O nor B-"):
        ner_task("task.data.tag_column=1")
    one_column = tmp_path / "one.txt"
    one_column.write_text("Paris\n")
    with pytest.raises(RnnexpError, match="one.txt:1: one column"):
        ner_task(f"task.data.train_path={one_column}")


def test_tiny_tagger_with_char_lstm_and_crf_learns_and_writes_conll(tmp_path: Path) -> None:
    cfg = compose_config(
        *tiny("ner"), "model.char_encoder=lstm", "model.hidden_size=16", "optim.lr=0.02",
        "train.max_steps=80", "train.eval_every=40", "task.data.scheme=iobes",
    )  # fmt: skip
    metrics = train(cfg, tmp_path, RunRecord(tmp_path, task="ner", cell=cfg.cell.name))
    final = metrics["final"]
    assert set(final) >= {"loss", "precision", "recall", "f1", "f1_PER", "f1_LOC", "f1_ORG"}
    assert final["f1"] >= 0.8  # the tiny test sentences are training sentences
    assert (tmp_path / "plots" / "entities.png").stat().st_size > 0
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert "crf.transitions" in saved["model"]
    assert saved["task"]["chars"]["tokens"][:2] == ["<pad>", "<unk>"]

    result, _ = evaluate_checkpoint(tmp_path, overrides=["+write_predictions=true"])
    written = Path(result["predictions"])
    assert written.name == "best.test.conll"
    blocks = written.read_text().strip().split("\n\n")
    assert len(blocks) == 6  # one per test sentence
    first = [line.split(" ") for line in blocks[0].splitlines()]
    assert [w for w, _, _ in first] == ["John", "Smith", "lives", "in", "Paris", "."]
    assert [g for _, g, _ in first] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]  # IOB2
    assert result["metrics"]["f1"] == pytest.approx(
        evaluate_checkpoint(tmp_path)[0]["metrics"]["f1"]
    )


def test_ner_without_seqeval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base install (no `ner` extra, so no scikit-learn) gets one line naming the extra."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "seqeval" else real(name, *a)
    )
    with pytest.raises(RnnexpError, match=r"pip install 'rnnexp\[ner\]'"):
        build(compose_config(*tiny("ner")).task, "task")
