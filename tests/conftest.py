"""Shared test helpers: compose the real config and shrink it, run the CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from rnnexp.config import choices

# Tiny models gain nothing from threads, and OpenMP threads slow to a crawl when another
# process shares the 2 cores: one thread in this process and in every subprocess.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

# A run of seconds: the `debug=tiny` config (conf/debug/tiny.yaml, with the task's
# sizes from conf/debug_task/tiny_<task>.yaml), which users run too. TINY_TASK adds what the
# tests want beyond sizes: the tiny ner run also exercises the character CNN and the CRF.
TINY_TASK = {task: [] for task in choices("task")} | {
    "ner": ["model.char_encoder=cnn", "model.crf=true"],
}
TINY_TRAIN = ["debug=tiny"]
TINY = TINY_TASK["timer"] + TINY_TRAIN  # the default task, timer


def tiny(task: str) -> list[str]:
    """Overrides for a one-second run of ``task``."""
    return [f"task={task}", *TINY_TASK[task], *TINY_TRAIN]


def train_tiny(run_dir: Path, task: str, cell: str, *overrides: str) -> Path:
    """A one-second run of ``task`` with ``cell`` into ``run_dir``, in this process (no
    Hydra): the trained run folder the CLI tests read."""
    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(*tiny(task), f"cell={cell}", *overrides)
    train(cfg, run_dir, RunRecord(run_dir, task=task, cell=cell))
    return run_dir


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """Each test leaves the root logger's handlers as it found them. A run through Hydra in
    this process (``main()`` of ``rnnexp train``) adds handlers on the streams of the test
    that ran it, which pytest closes afterwards: a later test's log lines would go to a
    closed stream, and logging would print its error to that test's stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.gpu`` tests are skipped where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_config(*overrides: str) -> DictConfig:
    """The real config (``conf/``) with overrides, through Hydra's Compose API."""
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``rnnexp ARGS`` in a subprocess (``python -m rnnexp``), as a user would run it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnexp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"rnnexp {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def run_dirs(root: Path) -> list[Path]:
    """Run folders (those holding a metrics.json) under ``root``."""
    return sorted(p.parent for p in root.rglob("metrics.json"))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# No test downloads anything: a session-wide cache ($RNNEXP_CACHE, inherited by the CLI
# subprocesses) holds a small multilingual text in place of the tinyshakespeare download
# (rnnexp/data/download.py trusts a file in the cache: it was checked when downloaded).
TINY_CORPUS_LINES = [
    "ROMEO: O, she doth teach the torches to burn bright!",
    "Café crème, déjà vu — naïve façade.",
    "東京は雨です。北京也下雨。",
    "JULIET: Good night, good night! Parting is such sweet sorrow.",
]
TINY_CORPUS = "\n".join(TINY_CORPUS_LINES * 120) + "\n"  # about 22k characters


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("rnnexp-cache")
    corpus = cache / "tinyshakespeare" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(TINY_CORPUS, encoding="utf-8")
    os.environ["RNNEXP_CACHE"] = str(cache)
    return cache


# The text tasks' default files live under $RNNEXP_DATA (sst2/, conll2003/). Tests point it
# at tiny files in the same layout, so no test reads the real data sets (nor needs them).
TINY_SST2 = {
    "positive": ["a good fun film", "great acting and a fine story", "good , warm and funny",
                 "a fine , great film", "funny and good"],
    "negative": ["a bad dull film", "awful acting and a boring story", "bad , cold and dull",
                 "a boring , awful film", "dull and bad"],
}  # fmt: skip
TINY_CONLL_SENTENCES = [
    "John/B-PER Smith/I-PER lives/O in/O Paris/B-LOC ./O",
    "Mary/B-PER works/O for/O Acme/B-ORG Corp/I-ORG ./O",
    "The/O UN/B-ORG met/O in/O New/B-LOC York/I-LOC ./O",
    "Paris/B-LOC is/O big/O ./O",
    "Smith/B-PER visited/O Berlin/B-LOC and/O Rome/B-LOC ./O",
    "Acme/B-ORG hired/O John/B-PER ./O",
]


def write_tiny_text_data(root: Path) -> Path:
    """Tiny SST-2-like TSVs (``sst2/``), CoNLL files (``conll2003/``) and a GloVe file
    (``glove/``) under ``root``."""
    sst2 = root / "sst2"
    sst2.mkdir(parents=True, exist_ok=True)
    rows = [f"{t} \t{1 if c == 'positive' else 0}" for c, ts in TINY_SST2.items() for t in ts]
    (sst2 / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 3) + "\n")
    (sst2 / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[::2]) + "\n")
    conll = root / "conll2003"
    conll.mkdir(parents=True, exist_ok=True)
    blocks = []
    for sentence in TINY_CONLL_SENTENCES:
        pairs = [token.rsplit("/", 1) for token in sentence.split()]
        blocks.append("\n".join(f"{w} NN O {t}" for w, t in pairs))
    text = "-DOCSTART- -X- -X- O\n\n" + "\n\n".join(blocks) + "\n\n"
    for name, copies in (("train.txt", 3), ("valid.txt", 1), ("test.txt", 1)):
        (conll / name).write_text(text * copies)
    # glove/glove.6B.50d.txt, as tasks/sentiment/prepare_glove.py writes it: a few words
    glove = root / "glove"
    glove.mkdir(parents=True, exist_ok=True)
    words = ["good", "bad", "film", "paris", "john", "acme", "the"]
    (glove / "glove.6B.50d.txt").write_text(
        "".join(f"{w} " + " ".join(f"{(i + d) % 7 / 10:.1f}" for d in range(50)) + "\n"
                for i, w in enumerate(words))
    )  # fmt: skip
    return root


@pytest.fixture(scope="session", autouse=True)
def text_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_tiny_text_data(tmp_path_factory.mktemp("rnnexp-data"))
    os.environ["RNNEXP_DATA"] = str(root)
    return root
