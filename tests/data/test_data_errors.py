"""Bad data files give one RnnexpError line naming the file and line (or the config key),
never a silently changed label set: CoNLL, TSV/CSV, GloVe vectors and the charlm text."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli, tiny

from rnnexp.data.text import read_vectors
from rnnexp.data.vocab import Vocab
from rnnexp.errors import RnnexpError
from rnnexp.tasks.charlm import CharLMTask
from rnnexp.tasks.ner import NerTask
from rnnexp.tasks.sentiment import SentimentTask

CONLL = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n\n"
TSV = "sentence\tlabel\ngood film\t1\nbad film\t0\n"
LATIN1 = "caf\xe9".encode("latin-1")


def ner(bad: Path, split: str = "train") -> None:
    good = bad.with_name("good.txt")
    good.write_text(CONLL)
    paths = {"train": good, "val": good, "test": good, split: bad}
    task = NerTask({"train_path": paths["train"], "dev_path": paths["val"],
                    "test_path": paths["test"]})  # fmt: skip
    task.examples(split)


def sentiment(bad: Path, split: str = "train", **data: object) -> None:
    good = bad.with_name("good.tsv")
    good.write_text(TSV)
    paths = {"train": good, "val": good, split: bad}
    SentimentTask({"train_path": paths["train"], "dev_path": paths["val"], **data}).examples(split)


def vectors(bad: Path) -> None:
    read_vectors(bad, Vocab.with_specials(["good", "film"]), 3, "task.embeddings.path")


def charlm(bad: Path) -> None:
    CharLMTask({"path": str(bad)}).split("train")


# (id, file name, content, loader, line the message names, what else it says)
LINE_CASES: list[tuple[str, str, str | bytes, Callable[[Path], None], int, str]] = [
    ("conll-missing-column", "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n\n", ner, 2,
     r"3 columns \('rejects VBZ O'\), the file's other lines have 4 \(line 1: .*fix that line"),
    ("conll-extra-column", "train.txt", "EU NNP B-NP B-ORG\n\nPeter NNP B-NP B-PER x\n", ner, 3,
     r"5 columns .* other lines have 4"),
    ("conll-first-line-short", "train.txt", "EU NNP B-ORG\nrejects VBZ B-VP O\n", ner, 2,
     r"4 columns .* other lines have 3"),
    ("conll-bad-tag", "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP Q\n", ner, 2,
     r"tag 'Q' is neither O nor"),
    ("conll-unknown-type-in-dev", "dev.txt", "EU NNP B-NP B-ORG\nBerlin NNP B-NP B-LOC\n",
     lambda p: ner(p, "val"), 1, r"entity type 'LOC' is not among the training types .*word 2"),
    ("conll-not-utf8", "train.txt", b"EU NNP B-NP B-ORG\n" * 900 + LATIN1 + b" NN B-NP O\n",
     ner, 901, r"is not UTF-8 text: line 901 has byte 0xe9"),
    ("tsv-short-row", "train.tsv", "sentence\tlabel\ngood film\t1\nbad film\n", sentiment, 3,
     r"1 field\(s\) where the header has 2 \(sentence, label\)"),
    ("tsv-long-row", "train.tsv", "sentence\tlabel\ngood\tfilm\t1\nbad film\t0\n", sentiment, 2,
     r"3 field\(s\) where the header has 2"),
    ("tsv-label-not-integer", "train.tsv", TSV + "ok film\tpos\n", sentiment, 4,
     r"label 'pos' is not an integer, unlike the file's other labels \(0, 1\)"),
    ("tsv-integer-among-names", "train.csv", "sentence,label\na,neg\nb,pos\nc,1\n", sentiment, 4,
     r"label '1' is an integer, unlike the file's other labels \(neg, pos\)"),
    ("tsv-empty-label", "train.tsv", TSV + "ok film\t \n", sentiment, 4,
     r"no label in column 'label'"),
    ("tsv-label-outside-label-names", "train.tsv", TSV + "ok film\t2\n",
     lambda p: sentiment(p, label_names={"0": "neg", "1": "pos"}), 4,
     r"label '2' is not in task.data.label_names \(0, 1\)"),
    ("tsv-unknown-label-in-dev", "dev.tsv", "sentence\tlabel\ngood\t1\nmeh\t2\n",
     lambda p: sentiment(p, "val"), 3, r"label '2' is not among the training labels \(0, 1\)"),
    ("tsv-empty-text", "train.tsv", "sentence\tlabel\n \t1\n", sentiment, 2, r"empty text"),
    ("tsv-not-utf8", "train.tsv", b"sentence\tlabel\n" + LATIN1 + b"\t1\n", sentiment, 2,
     r"line 2 has byte 0xe9"),
    ("vectors-ragged", "glove.txt", "film 1 2 3\nthe 1 2\ngood 1 2 3\n", vectors, 2,
     r"2 values after the word, the file's other lines have 3 \(line 1\)"),
    ("vectors-not-a-number", "glove.txt", "film 1 2 3\ngood 1 x 3\n", vectors, 2,
     r"could not convert string to float: 'x'.*GloVe"),
    ("vectors-wrong-dim", "glove.txt", "film 1 2 3 4\n", vectors, 1,
     r"4-d vectors, but model.embedding_size=3; set model.embedding_size=4"),
    ("charlm-not-utf8", "input.txt", b"hello world\n" * 50 + LATIN1 + b"\n", charlm, 51,
     r"line 51 has byte 0xe9"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "load", "line", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in LINE_CASES],
)
def test_bad_line_is_one_error_naming_file_and_line(
    tmp_path: Path,
    name: str,
    content: str | bytes,
    load: Callable[[Path], None],
    line: int,
    message: str,
) -> None:
    bad = tmp_path / name
    bad.write_bytes(content) if isinstance(content, bytes) else bad.write_text(content)
    with pytest.raises(RnnexpError) as err:
        load(bad)
    text = str(err.value)
    assert "\n" not in text
    assert re.search(rf"{re.escape(str(bad))}:{line}\b|{re.escape(str(bad))}.* line {line} ", text)
    assert re.search(message, text), text


# (id, file name, content or None for no file, loader, config key the message names, what it says)
FILE_CASES: list[tuple[str, str, str | None, Callable[[Path], None], str, str]] = [
    ("conll-empty", "train.txt", "", ner, "task.data.train_path", "holds no examples"),
    ("conll-only-docstart", "train.txt", "-DOCSTART- -X- -X- O\n\n", ner,
     "task.data.train_path", "holds no examples"),
    ("conll-missing", "train.txt", None, ner, "task.data.train_path", "no such file"),
    ("conll-missing-test", "test.txt", None, lambda p: ner(p, "test"), "task.data.test_path",
     "no such file"),
    ("tsv-empty", "train.tsv", "", sentiment, "task.data.train_path", "is empty"),
    ("tsv-header-only", "train.tsv", "sentence\tlabel\n", sentiment, "task.data.train_path",
     "holds no examples"),
    ("tsv-no-label-column", "train.tsv", "sentence\nok\n", sentiment, "task.data.train_path",
     "no column 'label'.*task.data.label_column"),
    ("tsv-missing-dev", "dev.tsv", None, lambda p: sentiment(p, "val"), "task.data.dev_path",
     "no such file"),
    ("vectors-empty", "glove.txt", "\n", vectors, "task.embeddings.path", "holds no vectors"),
    ("charlm-empty", "input.txt", "", charlm, "task.data.path", "is empty"),
    ("charlm-too-short", "input.txt", "hello", charlm, "task.data.path", "too short to split"),
    ("charlm-missing", "input.txt", None, charlm, "task.data.path", "no such file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "load", "key", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in FILE_CASES],
)
def test_bad_file_is_one_error_naming_the_key(
    tmp_path: Path,
    name: str,
    content: str | None,
    load: Callable[[Path], None],
    key: str,
    message: str,
) -> None:
    bad = tmp_path / name
    if content is not None:
        bad.write_text(content)
    with pytest.raises(RnnexpError) as err:
        load(bad)
    text = str(err.value)
    assert "\n" not in text and f"{key}={bad}" in text
    assert re.search(message, text), text


def test_folder_given_for_a_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RnnexpError, match=r"task.data.train_path=.* is a folder"):
        ner(tmp_path)


def test_words_with_spaces_in_glove_840b_keep_their_vector(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text("2 3\nfilm 1 2 3\n. . . 4 5 6\n\ngood 7 8 9\n")  # header, a spaced word
    vocab = Vocab.with_specials(["good", ". . ."])
    vectors, found = read_vectors(path, vocab, 3, "task.embeddings.path")
    assert found[vocab["good"]] and found[vocab[". . ."]]
    assert vectors[vocab[". . ."]].tolist() == [4.0, 5.0, 6.0]


def test_cli_train_on_a_conll_file_with_a_missing_column(tmp_path: Path) -> None:
    bad = tmp_path / "train.txt"
    bad.write_text(CONLL + "German JJ B-MISC\n\n")  # line 8 lost its chunk column
    proc = run_cli("train", *tiny("ner"), f"task.data.train_path={bad}", cwd=tmp_path,
                   check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 3, proc.stderr
    assert f"{bad}:8: 3 columns" in proc.stderr and "fix that line" in proc.stderr
