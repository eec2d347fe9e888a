"""`rnnexp predict` end to end: tiny sentiment and ner models trained through the CLI,
then sentences as arguments or on stdin, printed as tables or JSON."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, compose_config, tiny
from typer.testing import CliRunner

from rnnexp.cli.main import app
from rnnexp.cli.predict import predict as rnnexp_predict
from rnnexp.cli.predict import read_sentences
from rnnexp.errors import RnnexpError
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord


def predict(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """``rnnexp predict ARGS`` with ``stdin`` piped in (run_cli's environment)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "rnnexp", "predict", *args],
        cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def trained(run_dir: Path, *overrides: str) -> Path:
    """A tiny run, trained in-process (the CLI's own training is tested in test_cli)."""
    cfg = compose_config(*overrides)
    train(cfg, run_dir, RunRecord(run_dir, task=cfg.task.name, cell=cfg.cell.name))
    return run_dir


def cli(*args: str, stdin: str | None = None) -> str:
    """``rnnexp predict ARGS`` in-process; its stdout."""
    result = CliRunner().invoke(app, ["predict", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(
        tmp_path_factory.mktemp("sentiment"), *tiny("sentiment"), "train.max_steps=60",
        "train.eval_every=30", "optim.lr=0.01", "task.data.label_names={0:negative,1:positive}",
    )  # fmt: skip


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained(
        tmp_path_factory.mktemp("ner"), *tiny("ner"), "model.hidden_size=16", "optim.lr=0.02",
        "train.max_steps=80", "train.eval_every=40",
    )  # fmt: skip


def test_sentiment_label_with_probabilities(sentiment_run: Path) -> None:
    proc = predict(str(sentiment_run), "a good fun film", "a bad dull film", cwd=sentiment_run)
    assert proc.returncode == 0, proc.stderr
    assert "p(positive)" in proc.stdout and "p(negative)" in proc.stdout
    good, bad = json.loads(cli(str(sentiment_run), "--json", "a good fun film", "zzz bad"))
    assert good["label"] == "positive" and bad["label"] == "negative"
    assert sum(good["probabilities"].values()) == pytest.approx(1.0)
    assert good["unknown_words"] == [] and bad["unknown_words"] == ["zzz"]


def test_sentences_from_stdin_one_per_line(sentiment_run: Path) -> None:
    checkpoint = str(sentiment_run / "checkpoints" / "last.pt")
    answers = json.loads(cli(checkpoint, "--json", stdin="good fun\n\n  dull  \n"))
    assert [a["text"] for a in answers] == ["good fun", "dull"]
    with pytest.raises(RnnexpError, match="no sentences to label"):
        read_sentences([], io.StringIO("\n  \n"))


def test_ner_tagged_entities(ner_run: Path) -> None:
    sentence = "John Smith lives in Paris."  # `simple` tokenizer: "Paris" "."
    proc = predict(str(ner_run), "--json", cwd=ner_run, stdin=sentence + "\n")
    assert proc.returncode == 0, proc.stderr
    (answer,) = json.loads(proc.stdout)
    assert answer["tokens"] == ["John", "Smith", "lives", "in", "Paris", "."]
    assert len(answer["tags"]) == 6
    assert {(e["text"], e["type"]) for e in answer["entities"]} == {
        ("John Smith", "PER"),
        ("Paris", "LOC"),
    }
    shown = cli(str(ner_run), sentence)
    assert "John Smith" in shown and "PER" in shown and "LOC" in shown


def test_predict_needs_a_text_model(tmp_path: Path) -> None:
    cfg = compose_config(*TINY, "train.max_steps=2", "train.eval_every=2")
    train(cfg, tmp_path, RunRecord(tmp_path))  # a timer run
    with pytest.raises(RnnexpError, match=r"a 'timer' model; .*text tasks \(sentiment, ner\)"):
        rnnexp_predict(tmp_path, ["a sentence"])
