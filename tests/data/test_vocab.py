"""The one vocabulary (rnnexp.data.vocab.Vocab): each task's token order and specials, lookup,
the saved state, and checkpoints written before it (charlm's dict and stream counters, the
text tasks' lists) that still evaluate, sample, predict and resume exactly as in the new
format."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny

from rnnexp.cli.evaluate import evaluate_checkpoint
from rnnexp.cli.predict import predict
from rnnexp.cli.sample import sample_run
from rnnexp.data.vocab import EOS, PAD, PAD_ID, UNK, UNK_CHAR, UNK_ID, Vocab, split_tokens
from rnnexp.errors import RnnexpError
from rnnexp.train.checkpoint import Checkpoint, restore
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

# ---------------------------------------------------------------------------- orders


def test_each_construction_keeps_its_order_and_specials() -> None:
    chars = Vocab.of_characters("banana\nb")  # charlm, level=char: code points, no specials
    assert chars.tokens == ["\n", "a", "b", "n"] and chars.unk is None and chars.pad is None
    words = ["b", "a", EOS, "c", "a", "b", EOS, "d"]  # charlm, level=word: ties first seen
    assert Vocab.of_words(words, size=4).tokens == [UNK, EOS, "b", "a"]
    assert Vocab.of_words(words, size=4).unk_id == 0
    # a text that holds <unk> itself (Penn Treebank): listed twice, the last id counts,
    # as charlm's vocabulary always had it (the ids its models were trained with)
    ptb = Vocab.of_words(["a", UNK, UNK, "b", "a", UNK], size=5)
    assert ptb.tokens == [UNK, EOS, UNK, "a", "b"] and ptb.unk_id == 2 and ptb["zebra"] == 2
    assert Vocab.from_state({"level": "word", "tokens": ptb.tokens, "unk": UNK}) == ptb
    counts = Counter({"b": 2, "a": 2, "c": 1})  # text tasks: ties alphabetical, pad/unk first
    vocab = Vocab.by_frequency(counts)
    assert vocab.tokens == [PAD, UNK, "a", "b", "c"] and vocab.counts is counts
    assert (vocab.pad_id, vocab.unk_id) == (PAD_ID, UNK_ID)
    assert Vocab.by_frequency(counts, min_freq=2).tokens == [PAD, UNK, "a", "b"]
    with pytest.raises(RnnexpError, match="task.vocab_size=2"):
        Vocab.by_frequency(counts, max_size=2)
    labels = Vocab.labels(["O", "B-PER", "I-PER"])  # a label set: as given, no specials
    assert labels.tokens == ["O", "B-PER", "I-PER"] and labels["B-PER"] == 1
    with pytest.raises(KeyError):
        labels["B-LOC"]


def test_lookup_encode_decode() -> None:
    words = Vocab.of_words(split_tokens("to be or\nnot to be", "word"), size=10)
    assert words.encode(["to", "zebra"]) == [words["to"], words.unk_id]
    assert words.lookup(["to", "zebra", UNK]) == ([words["to"], 0, 0], ["zebra"])
    assert words.decode(words.encode(split_tokens("to be\nor not", "word"))) == "to be\nor not"
    assert words.start_id == words.index[EOS]
    chars = Vocab.of_characters("abc\n")
    assert chars.lookup("abz") == ([1, 2, -1], ["z"]) and chars.decode([1, 0, 2]) == "a\nb"
    with pytest.raises(KeyError):
        chars.encode("z")
    extended = chars.extended([UNK_CHAR, "a"], unk=UNK_CHAR)  # charlm's held-out characters
    assert extended.tokens == [*chars.tokens, UNK_CHAR] and extended["z"] == 4
    text = Vocab.by_frequency(Counter("aab"), level="char")
    assert text.extended(["c"]).tokens == [PAD, UNK, "a", "b", "c"]
    assert text.extended(["c"]).counts == Counter("aab")


# ---------------------------------------------------------------------------- saved state


def test_state_round_trips_and_the_formats_before_it_load() -> None:
    for vocab in (
        Vocab.of_characters("héllo\n"),
        Vocab.of_words(["a", "b"], 5),
        Vocab.by_frequency(Counter("hello"), level="char"),
        Vocab.labels(["neg", "pos"]),
    ):
        assert Vocab.from_state(vocab.state_dict()) == vocab
    # charlm before the one Vocab: {"level", "tokens", "unk"}
    old = {"level": "word", "tokens": ["<unk>", "<eos>", "the", "cat"], "unk": "<unk>"}
    assert Vocab.from_state(old) == Vocab.of_words(["the", "the", "cat"], 4)
    old = {"level": "char", "tokens": ["\n", "a", "b", "\ufffd"], "unk": "\ufffd"}
    loaded = Vocab.from_state(old)
    assert loaded.unk_id == 3 and loaded.level == "char" and loaded.pad is None
    # the text tasks before it: bare lists ("words", "chars" with <pad>, <unk>; "labels")
    words = Vocab.from_state(["<pad>", "<unk>", "film", "good"], list_level="word")
    assert words == Vocab.by_frequency(Counter(["film", "film", "good"]))
    assert words["bad"] == UNK_ID
    assert Vocab.from_state(["neg", "pos"], list_level="label") == Vocab.labels(["neg", "pos"])
    with pytest.raises(ValueError, match="list_level"):
        Vocab.from_state(["a"])


# ---------------------------------------------------------------------------- old runs


def to_old_format(run_dir: Path) -> None:
    """Rewrite every checkpoint of ``run_dir`` with the task state as rnnexp wrote it
    before :class:`Vocab` (commit 507689e): charlm ``{"vocab": {"level", "tokens",
    "unk"}}`` (and its stream's ``{"generator", "epoch", "index", "offset"}``), the text
    tasks ``{"words": [...], "labels": [...], "chars": [...]}``."""
    for path in sorted((run_dir / "checkpoints").glob("*.pt")):
        payload = torch.load(path, weights_only=True)
        state = payload["task"]
        if "vocab" in state:
            vocab = state["vocab"]
            old = {"vocab": {key: vocab[key] for key in ("level", "tokens", "unk")}}
            stream = dict(payload["stream"])
            stream["index"] = stream.pop("position")  # the old TextStream's name for it
            payload["stream"] = stream
        else:
            old = {key: list(vocab["tokens"]) for key, vocab in state.items()}
            assert old["words"][:2] == ["<pad>", "<unk>"]
        payload["task"] = old
        torch.save(payload, path)


def tiny_run(run_dir: Path, task: str, *overrides: str) -> dict:
    cfg = compose_config(*tiny(task), *overrides)
    metrics = train(cfg, run_dir, RunRecord(run_dir, task=task, cell=cfg.cell.name))
    assert metrics["status"] == "completed"
    return metrics


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_a_charlm_run_from_before_evaluates_samples_and_resumes(tmp_path: Path) -> None:
    common = ["cell=lstm", "sched=constant"]
    whole = tiny_run(tmp_path / "whole", "charlm", *common, "train.max_steps=6")
    tiny_run(tmp_path / "first", "charlm", *common, "train.max_steps=3")
    old = copy_run(tmp_path / "first", tmp_path / "old")
    to_old_format(old)
    assert "pad" not in Checkpoint.load(old).task["vocab"]
    assert "index" in Checkpoint.load(old).stream
    assert restore(old, "last").task.vocab == restore(tmp_path / "first", "last").task.vocab
    new_result, _ = evaluate_checkpoint(tmp_path / "first", "last")
    old_result, _ = evaluate_checkpoint(old, "last")
    assert old_result["metrics"] == new_result["metrics"]

    def text(run: Path) -> list[str]:
        out = io.StringIO()
        args = dict(prime="\n", length=40, seed=2, num_samples=2, out=out, err=io.StringIO())
        return sample_run(run, "last", **args)

    assert text(old) == text(tmp_path / "first")
    # train.resume from the old checkpoint: the vocabulary of the text equals the saved one
    resumed = tiny_run(tmp_path / "rest", "charlm", *common, "train.max_steps=6",
                       f"train.resume={old}")  # fmt: skip
    assert resumed["final"] == pytest.approx(whole["final"], rel=1e-6)


@pytest.mark.parametrize(
    ("task", "sentences"),
    [("sentiment", ["a great film", "dull and zxqv"]), ("ner", ["John lives in Paris ."])],
)
def test_a_text_run_from_before_evaluates_and_predicts(
    tmp_path: Path, task: str, sentences: list[str]
) -> None:
    tiny_run(tmp_path / "new", task)  # ner: character inputs (chars saved) and a CRF
    old = copy_run(tmp_path / "new", tmp_path / "old")
    to_old_format(old)
    saved = Checkpoint.load(old).task
    assert isinstance(saved["words"], list) and isinstance(saved["labels"], list)
    assert ("chars" in saved) == (task == "ner")
    new_result, _ = evaluate_checkpoint(tmp_path / "new", "last")
    old_result, _ = evaluate_checkpoint(old, "last")
    assert old_result["metrics"] == new_result["metrics"]
    assert predict(old, sentences, "last")[1] == predict(tmp_path / "new", sentences, "last")[1]
    restored = restore(old, "last")
    assert restored.task.words == restore(tmp_path / "new", "last").task.words
    assert restored.task.labels.unk is None and restored.task.words.unk == UNK
