"""The shared text pipeline: readers on tiny files written here, vocabularies, batches,
bucketing, pretrained vectors, and padding invariance of the whole model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from rnnexp.config import build
from rnnexp.data.streams import Stream
from rnnexp.data.text import (
    BucketStream,
    Example,
    collate,
    entities,
    normalize,
    read_conll,
    read_table,
    to_scheme,
    tokenize,
)
from rnnexp.data.vocab import PAD_ID, UNK_ID, Vocab
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRFScores
from rnnexp.nn.model import build_model
from rnnexp.tasks.base import eval_mode


def sentiment_task(
    tmp_path: Path, train: str | bytes, dev: str, suffix: str = ".tsv", *extra: str, **data: str
):
    """A sentiment task on two files written here; ``extra``: more overrides,
    ``data``: ``task.data.*`` keys."""
    files = {}
    for name, content in (("train", train), ("dev", dev)):
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        files[f"{name}_path"] = str(path)
    overrides = [f"task.data.{k}={v}" for k, v in {**files, **data}.items()]
    return build(compose_config("task=sentiment", *overrides, *extra).task, "task")


# ---------------------------------------------------------------------------- tables


def test_tsv_with_quotes_tabs_crlf_bom_and_blank_lines(tmp_path: Path) -> None:
    raw = (
        "\ufeffsentence\tlabel\r\n"
        '"a quoted\ttab and ""quotes"" inside"\t1\r\n'
        "\r\n"
        "plain text \t0\r\n"
        '"spans\r\ntwo lines"\t1\r\n'
        "\t\r\n"
    )
    path = tmp_path / "t.tsv"
    path.write_bytes(raw.encode("utf-8"))
    rows = read_table(path, ["sentence", "label"], "task.data.train_path")
    texts = [r.fields["sentence"] for r in rows]
    assert texts == ['a quoted\ttab and "quotes" inside', "plain text ", "spans\r\ntwo lines"]
    assert [r.fields["label"] for r in rows] == ["1", "0", "1"]
    assert [r.line for r in rows] == [2, 4, 6]  # the BOM did not hide the header


def test_quoting_none_takes_quotes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_text('text\tlabel\n"unbalanced quote\t1\nnext\t0\n')
    rows = read_table(path, ["text", "label"], "k", quoting="none")
    assert [r.fields["text"] for r in rows] == ['"unbalanced quote', "next"]


def test_csv_with_named_columns_and_three_classes(tmp_path: Path) -> None:
    train = 'id,review,stars\n1,"good, really good",pos\n2,bad,neg\n3,"so-so, fine",neutral\n'
    task = sentiment_task(
        tmp_path, train, "id,review,stars\n9,good,pos\n", ".csv",
        text_column="review", label_column="stars",
    )  # fmt: skip
    assert task.setup().output_size == 3 and task.labels.tokens == ["neg", "neutral", "pos"]
    (first, *_) = task.examples("train")
    assert first.tokens == ["good,", "really", "good"] and task.labels.tokens[first.target] == "pos"


def test_numeric_labels_sort_as_numbers(tmp_path: Path) -> None:
    train = "sentence\tlabel\n" + "".join(f"w{i}\t{i}\n" for i in (10, 2, 0, 1))
    task = sentiment_task(tmp_path, train, "sentence\tlabel\nw2\t2\n")
    task.fit()
    assert task.labels.tokens == ["0", "1", "2", "10"]


def test_unknown_label_at_dev_time_is_a_one_line_error(tmp_path: Path) -> None:
    task = sentiment_task(
        tmp_path, "sentence\tlabel\ngood\t1\nbad\t0\n", "sentence\tlabel\nfine\t1\nmeh\t2\n"
    )
    task.fit()
    with pytest.raises(RnnexpError, match=r"dev.tsv:3: label '2' is not among the training"):
        task.examples("val")


def test_file_and_column_errors_name_the_fix(tmp_path: Path) -> None:
    task = sentiment_task(tmp_path, "text\tlabel\ngood\t1\n", "text\tlabel\ngood\t1\n")
    with pytest.raises(RnnexpError, match="no column 'sentence'.*task.data.text_column"):
        task.fit()
    task = sentiment_task(tmp_path, "sentence\tlabel\ngood 1\n", "sentence\tlabel\n")
    with pytest.raises(RnnexpError, match=r"train.tsv:2: 1 field\(s\).*delimiter"):
        task.fit()
    task = sentiment_task(tmp_path, "sentence\tlabel\n\t1\n", "sentence\tlabel\n")
    with pytest.raises(RnnexpError, match="empty text"):
        task.fit()
    cfg = compose_config("task=sentiment", f"task.data.train_path={tmp_path}/nope.tsv")
    with pytest.raises(RnnexpError, match="task.data.train_path=.*nope.tsv: no such file"):
        build(cfg.task, "task").fit()
    (tmp_path / "latin1.tsv").write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    cfg = compose_config("task=sentiment", f"task.data.train_path={tmp_path}/latin1.tsv")
    with pytest.raises(RnnexpError, match="not UTF-8"):
        build(cfg.task, "task").fit()


def test_test_split_without_a_test_file_is_the_dev_file(tmp_path: Path) -> None:
    task = sentiment_task(
        tmp_path, "sentence\tlabel\ngood\t1\nbad\t0\n", "sentence\tlabel\nok\t1\n"
    )
    assert [e.tokens for e in task.examples("test")] == [["ok"]]


# ---------------------------------------------------------------------------- CoNLL


def test_conll_with_docstart_crlf_and_iob1_tags(tmp_path: Path) -> None:
    raw = (
        "-DOCSTART- -X- O O\r\n\r\n"
        "EU NNP I-NP I-ORG\r\nrejects VBZ I-VP O\r\nGerman JJ I-NP I-MISC\r\n"
        "call NN I-NP O\r\n\r\n"
        "-DOCSTART- -X- O O\r\n\r\n"
        "Peter NNP I-NP I-PER\r\nBlackburn NNP I-NP I-PER\r\nMary NNP I-NP B-PER\r\n"
    )  # no blank line at the end: the last sentence still counts
    path = tmp_path / "train.txt"
    path.write_bytes(raw.encode())
    sentences = read_conll(path, "k")
    assert [s.words for s in sentences] == [
        ["EU", "rejects", "German", "call"],
        ["Peter", "Blackburn", "Mary"],
    ]
    assert sentences[1].line == 10
    # IOB1: I- starts an entity after O; B- only separates two adjacent same-type entities.
    iob1 = sentences[1].tags
    assert entities(iob1) == [("PER", 0, 1), ("PER", 2, 2)]
    assert to_scheme(iob1, "iob2") == ["B-PER", "I-PER", "B-PER"]
    assert to_scheme(iob1, "iobes") == ["B-PER", "E-PER", "S-PER"]
    assert to_scheme(sentences[0].tags, "iob2") == ["B-ORG", "O", "B-MISC", "O"]
    assert read_conll(path, "k", tag_column=1)[0].tags[0] == "NNP"
    with pytest.raises(RnnexpError, match="no column 7"):
        read_conll(path, "k", tag_column=7)


@pytest.mark.parametrize(
    "tags",
    [
        ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"],  # IOB1
        ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "B-ORG"],  # IOB2
        ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-ORG", "E-ORG", "S-ORG"],  # IOBES
        ["O", "I-PER", "B-LOC", "I-PER", "O", "B-ORG", "I-ORG"],  # ill-formed IOB2
    ],
)
def test_entities_read_every_scheme_as_seqeval_does(tags: list[str]) -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    assert entities(tags) == get_entities(tags)
    for scheme in ("iob2", "iobes"):
        assert entities(to_scheme(tags, scheme)) == entities(tags)


# ---------------------------------------------------------------------------- tokens


def test_tokenizers_and_normalization() -> None:
    assert tokenize("  a  b\tc\n") == ["a", "b", "c"]
    text = "It's a well-made film, isn't it? 3.5/5!"
    assert tokenize(text, "simple") == [
        "It", "'s", "a", "well-made", "film", ",", "is", "n't", "it", "?", "3.5", "/", "5", "!",
    ]  # fmt: skip
    assert tokenize("does n't it 's", "simple") == ["does", "n't", "it", "'s"]  # SST form kept
    assert normalize("Paris1996", lowercase=True, digits=True) == "paris0000"
    with pytest.raises(RnnexpError, match="task.tokenizer"):
        tokenize("a", "spacy")


def test_vocab_from_counts_with_min_freq_and_size() -> None:
    counts = Counter({"the": 5, "film": 3, "good": 3, "rare": 1})
    vocab = Vocab.by_frequency(counts, min_freq=2)
    assert vocab.tokens == ["<pad>", "<unk>", "the", "film", "good"]  # ties: alphabetical
    assert vocab["rare"] == UNK_ID and vocab["<pad>"] == PAD_ID
    assert Vocab.by_frequency(counts, max_size=4).tokens == ["<pad>", "<unk>", "the", "film"]
    labels = Vocab.labels(["neg", "pos"])
    with pytest.raises(KeyError):
        labels["neutral"]


def test_lowercase_and_digits_apply_to_the_vocabulary(tmp_path: Path) -> None:
    train = "sentence\tlabel\nGood 1999\t1\ngood 2003\t0\n"
    task = sentiment_task(
        tmp_path, train, train, ".tsv", "task.lowercase=true", "task.normalize_digits=true"
    )
    task.fit()
    assert "good" in task.words and "0000" in task.words and "Good" not in task.words
    task.lowercase = task.normalize_digits = False
    assert task.unknown(["Good", "1999"]) == ["Good", "1999"]


# ---------------------------------------------------------------------------- batches


def test_collate_pads_with_true_lengths_and_drops_singletons() -> None:
    examples = [
        Example(torch.tensor([5, 6, 7]), torch.tensor(1), ["a", "b", "c"]),
        Example(torch.tensor([8]), torch.tensor(0), ["d"]),
    ]
    batch = collate(examples)
    assert batch.inputs.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert batch.lengths.tolist() == [3, 1] and batch.targets.tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    dropped = collate(examples, torch.tensor([6, 8]), 0.999, generator).inputs
    assert dropped.tolist() == [[5, UNK_ID, 7], [UNK_ID, PAD_ID, PAD_ID]]


def test_epoch_stream_covers_each_example_once_in_length_buckets_and_resumes() -> None:
    lengths = torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    seen = []

    def make_batch(indices, generator):
        seen.append(list(indices))
        return torch.rand(1, generator=generator)  # stands in for a Batch

    stream = BucketStream(lengths, make_batch, batch_size=10, seed=3, bucket_size=20)
    assert isinstance(stream, Stream)  # the training loop's one protocol
    epoch = [next(stream) for _ in range(stream.batches_per_epoch)]
    assert sorted(i for b in seen for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in seen) / len(seen)
    assert spread < 10  # unbucketed batches of 10 from 1..59 spread about 45
    state = stream.state_dict()
    ahead = [next(stream) for _ in range(150)]  # across the epoch boundary
    resumed = BucketStream(lengths, make_batch, batch_size=10, seed=3, bucket_size=20)
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat([next(resumed) for _ in range(150)]), torch.cat(ahead))
    assert seen[100:250] == seen[250:400] and seen[:100] != seen[100:200]
    assert len(epoch) == 100


# ---------------------------------------------------------------------------- model


def padded_vs_alone(model, examples: list[Example]) -> None:
    """The first example alone and inside a padded batch with longer ones: same output."""
    with eval_mode(model), torch.no_grad():
        alone = collate(examples[:1])
        together = collate(examples)
        assert together.inputs.shape[1] > alone.inputs.shape[1]  # it really is padded
        out_alone, _ = model(alone.inputs, lengths=alone.lengths)
        out_together, _ = model(together.inputs, lengths=together.lengths)
        n = len(examples[0])
        if isinstance(out_together, CRFScores):  # a CRF read-out: the emissions, the CRF
            steps = torch.arange(together.inputs.shape[1])
            paths = out_together.decode(steps < together.lengths.unsqueeze(1))
            assert paths[0] == out_alone.decode(torch.ones(1, n, dtype=torch.bool))[0]
            out_alone, out_together = out_alone.emissions, out_together.emissions
        if out_alone.dim() == 2:  # many-to-one: (B, C)
            torch.testing.assert_close(out_together[0], out_alone[0])
        else:  # one output per step: (B, T, K)
            torch.testing.assert_close(out_together[0, :n], out_alone[0, :n])


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_never_changes_a_sentiment_output(cell: str, pooling: str) -> None:
    cfg = compose_config(
        "task=sentiment", f"cell={cell}", f"model.pooling={pooling}", "model.num_layers=2",
        "model.hidden_size=8", "model.embedding_size=6", "model.dropout=0.5",
    )  # fmt: skip
    torch.manual_seed(0)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    assert model.bidirectional  # the text tasks' default
    texts = ["a good film", "a bad , cold and very dull film", "funny and good and warm too"]
    padded_vs_alone(model, task.encode_texts(texts))


@pytest.mark.parametrize("char_encoder", ["none", "cnn", "lstm"])
def test_padding_never_changes_a_tagger_output(char_encoder: str) -> None:
    cfg = compose_config(
        "task=ner", f"model.char_encoder={char_encoder}", "model.crf=true",
        "model.hidden_size=8", "model.embedding_size=6",
    )  # fmt: skip
    torch.manual_seed(0)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    texts = ["Paris is big .", "John Smith visited Berlin and Rome with Mary ."]
    padded_vs_alone(model, task.encode_texts(texts))
    # unknown characters and longer words than any seen in training are fine
    padded_vs_alone(model, task.encode_texts(["Zürich !", "Xylophonically Quixotic Łódź ."]))


def test_hand_written_bidirectional_cell_refuses_padded_batches() -> None:
    cfg = compose_config("task=sentiment", "cell=lstm_peephole", "model.hidden_size=4")
    task = build(cfg.task, "task")
    batch = collate(task.encode_texts(["a good film", "bad"]))
    with pytest.raises(RnnexpError, match="bidirectional hand-written cell"):
        build_model(cfg, task.setup())(batch.inputs, lengths=batch.lengths)
    cfg = compose_config("task=sentiment", "cell=lstm_peephole", "model.bidirectional=false")
    build_model(cfg, task.setup())(batch.inputs, lengths=batch.lengths)  # one direction: fine


# ---------------------------------------------------------------------------- vectors


def test_pretrained_vectors_fill_the_embedding_frozen_or_not(tmp_path: Path) -> None:
    glove = tmp_path / "glove.txt"
    glove.write_text("good 1 2 3\nfilm 4 5 6\nparis 7 8 9\nunseen 0 0 0\n")
    for freeze in (False, True):
        cfg = compose_config(
            "task=sentiment", "model.embedding_size=3",
            f"task.embeddings.path={glove}", f"task.embeddings.freeze={freeze}",
        )  # fmt: skip
        task = build(cfg.task, "task")
        model = build_model(cfg, task.setup())
        weight = model.encoder.weight
        assert weight[task.words["good"]].tolist() == [1, 2, 3]
        assert weight[task.words["film"]].tolist() == [4, 5, 6]
        assert weight.requires_grad is not freeze
    cfg = compose_config(
        "task=sentiment", "model.embedding_size=5", f"task.embeddings.path={glove}"
    )
    with pytest.raises(RnnexpError, match="3-d vector.*model.embedding_size=3"):
        build_model(cfg, build(cfg.task, "task").setup())
    # a cased vocabulary (NER) finds the lower-case GloVe entry
    cfg = compose_config("task=ner", "model.embedding_size=3", f"task.embeddings.path={glove}")
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    assert model.encoder.words.weight[task.words["Paris"]].tolist() == [7, 8, 9]


def test_extend_vocab_adds_dev_words_that_have_pretrained_vectors(tmp_path: Path) -> None:
    glove = tmp_path / "glove.txt"
    glove.write_text("good 1 2 3\nsuperb 4 5 6\nplot 7 8 9\nunseen 0 0 0\n")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nSuperb film\t1\ndreadful plot\t0\n")
    files = [
        "task=sentiment", "task.lowercase=true", "model.embedding_size=3",
        f"task.data.train_path={tmp_path / 'train.tsv'}",
        f"task.data.dev_path={tmp_path / 'dev.tsv'}", f"task.embeddings.path={glove}",
    ]  # fmt: skip
    task = build(compose_config(*files).task, "task")
    task.fit()
    assert task.words.tokens == ["<pad>", "<unk>", "film", "bad", "good"]
    cfg = compose_config(*files, "task.embeddings.extend_vocab=true")
    task = build(cfg.task, "task")
    task.fit()
    # the train words first, as before; then the dev words with a vector, sorted
    assert task.words.tokens == ["<pad>", "<unk>", "film", "bad", "good", "plot", "superb"]
    assert "dreadful" not in task.words and "unseen" not in task.words
    model = build_model(cfg, task.setup())
    assert model.encoder.weight[task.words["superb"]].tolist() == [4, 5, 6]
    dev = task.examples("val")
    assert dev[0].ids.tolist() == [task.words["superb"], task.words["film"]]
    assert dev[1].ids.tolist() == [1, task.words["plot"]]  # dreadful: <unk>
    # the added words are not training singletons, so word dropout leaves them alone
    assert task.words.counts["superb"] == 0
