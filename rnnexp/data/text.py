"""The shared text pipeline: files -> tokens -> ids -> padded, length-bucketed batches.

Used by the ``sentiment`` and ``ner`` tasks and meant for any later text task:

* readers for a table with a header (TSV/CSV through the ``csv`` module: quoted fields,
  tabs inside quotes, CRLF, a UTF-8 byte-order mark, blank lines) and for CoNLL columns
  (``-DOCSTART-`` skipped, any tag column, IOB1/IOB2/IOBES tags converted to one scheme);
* tokenization (whitespace, or ``simple``: punctuation and English clitics split off),
  optional lower-casing and digit normalization;
* vocabularies (:class:`rnnexp.data.vocab.Vocab`, :meth:`~rnnexp.data.vocab.Vocab.by_frequency`),
  built from the training split only (``min_freq``, ``max_size``, ``<pad>`` at id 0 and
  ``<unk>`` at id 1) and saved in every checkpoint as plain data;
* :func:`collate`: padding with the true lengths (the model packs the sequences, so
  padding never changes a result) and singleton word dropout; :class:`BucketStream`:
  epochs in length buckets, resumable exactly;
* :func:`read_vectors`: pretrained vectors in GloVe's text format.

:class:`rnnexp.tasks.text_task.TextTask` puts these together for a task.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnexp.data.download import not_utf8, unreadable
from rnnexp.data.streams import Batch, EpochStream
from rnnexp.data.vocab import PAD_ID, UNK_ID, Vocab
from rnnexp.errors import RnnexpError

log = logging.getLogger(__name__)

IGNORE = -100  # target at padded steps: F.cross_entropy's ignore_index

# ---------------------------------------------------------------------------- tokens

# `simple`: words (with inner hyphens/dots, e.g. "well-made", "3.5"), English clitics as the
# Penn Treebank splits them ("does n't", "it 's") and every other non-space symbol alone.
SIMPLE_TOKEN = re.compile(
    r"\w+?(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.]\w+)*|[^\w\s]", re.I
)
TOKENIZERS = ("whitespace", "simple")
DIGIT = re.compile(r"\d")


def tokenize(text: str, tokenizer: str = "whitespace") -> list[str]:
    """``text`` as tokens: split on whitespace, or with the ``simple`` rules above."""
    if tokenizer == "whitespace":
        return text.split()
    if tokenizer == "simple":
        return SIMPLE_TOKEN.findall(text)
    raise RnnexpError(f"task.tokenizer={tokenizer!r}; choose one of: {', '.join(TOKENIZERS)}")


def normalize(token: str, lowercase: bool = False, digits: bool = False) -> str:
    """The vocabulary form of a token: lower-cased and/or every digit replaced by 0
    (Lample et al. 2016), so that "1996" and "2003" share one entry."""
    if lowercase:
        token = token.lower()
    if digits:
        token = DIGIT.sub("0", token)
    return token


# ---------------------------------------------------------------------------- files


def check_file(path: str | Path | None, key: str, hint: str = "") -> Path:
    """``path`` as an existing file, or a one-line error naming the config ``key``."""
    if path is None or str(path) == "":
        raise RnnexpError(f"{key} is not set; give the path of the file{hint}")
    found = Path(path).expanduser()
    if found.is_dir():
        raise RnnexpError(f"{key}={path} is a folder; give the path of the file{hint}")
    if not found.is_file():
        raise RnnexpError(f"{key}={path}: no such file{hint}")
    return found


@dataclass
class Row:
    """One record of a table file: its fields by column name, and the line it ends on."""

    fields: dict[str, str]
    line: int


def read_table(
    path: Path,
    columns: Iterable[str],
    key: str,
    delimiter: str = "auto",
    quoting: str = "minimal",
) -> list[Row]:
    """Rows of a TSV/CSV file with a header, keeping the named ``columns``.

    ``delimiter``: ``auto`` (``,`` for ``*.csv``, else a tab), ``tab``, ``comma`` or the
    character itself. ``quoting``: ``minimal`` reads ``"..."`` fields (which may hold the
    delimiter, doubled quotes or line breaks); ``none`` takes quotes literally, for files
    whose text has unbalanced ``"``. A byte-order mark, CRLF line ends and blank lines are
    fine. A missing column, or a row with more or fewer fields than the header (a stray
    delimiter in an unquoted text shifts the label column), is a one-line error with the
    file and line number.
    """
    named = {"auto": "," if path.suffix.lower() == ".csv" else "\t", "tab": "\t", "comma": ","}
    sep = named.get(delimiter, delimiter)
    if len(sep) != 1:
        raise RnnexpError(
            f"task.data.delimiter={delimiter!r}; use auto, tab, comma or one character"
        )
    if quoting not in ("minimal", "none"):
        raise RnnexpError(f"task.data.quoting={quoting!r}; choose minimal or none")
    mode = csv.QUOTE_MINIMAL if quoting == "minimal" else csv.QUOTE_NONE
    columns = list(columns)
    rows: list[Row] = []
    try:
        # newline="": the csv module handles CRLF and line breaks inside quoted fields;
        # utf-8-sig drops a byte-order mark (Excel writes one) from the first header name.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=sep, quoting=mode)
            header = next((r for r in reader if any(f.strip() for f in r)), None)
            if header is None:
                raise RnnexpError(f"{key}={path} is empty; it needs a header line and rows")
            header = [h.strip() for h in header]
            for column in columns:
                if column not in header:
                    which = "text_column" if column == columns[0] else "label_column"
                    raise RnnexpError(
                        f"{key}={path} has no column {column!r} (its header: "
                        f"{', '.join(repr(h) for h in header)}); set task.data.{which}"
                    )
            index = [header.index(c) for c in columns]
            for record in reader:
                if not any(f.strip() for f in record):
                    continue  # a blank line
                if len(record) != len(header):
                    raise RnnexpError(
                        f"{path}:{reader.line_num}: {len(record)} field(s) where the header "
                        f"has {len(header)} ({', '.join(header)}); fix that line (quote a "
                        "text that holds the delimiter), or is task.data.delimiter right?"
                    )
                rows.append(
                    Row(
                        {c: record[i] for c, i in zip(columns, index, strict=True)}, reader.line_num
                    )
                )
    except UnicodeDecodeError:
        raise not_utf8(path, key) from None
    except OSError as err:
        raise unreadable(path, key, err) from None
    except csv.Error as err:
        raise RnnexpError(
            f"{path}: cannot parse as {'CSV' if sep == ',' else 'TSV'}: {err}"
        ) from None
    return rows


@dataclass
class Sentence:
    """One sentence of a CoNLL file: words, their tags, and the line it starts on."""

    words: list[str]
    tags: list[str]
    line: int


def read_conll(path: Path, key: str, tag_column: int = -1) -> list[Sentence]:
    """Sentences of a CoNLL file: one token a line (``word ... tag`` columns, separated by
    spaces or tabs), a blank line after each sentence; ``-DOCSTART-`` lines are skipped.

    ``tag_column`` indexes the columns (``-1``: the last; CoNLL-2003's NER tag). Every
    token line must have as many columns as the file's first one: a line that lost a
    column would otherwise give its chunk tag as the entity tag (a new label, silently).
    A line that breaks this is a one-line error with the file and line number.
    """
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    first: tuple[int, list[str]] | None = None  # the first token line: (number, fields)

    def flush() -> None:
        if words:
            sentences.append(Sentence(list(words), list(tags), start))
            words.clear()
            tags.clear()

    try:
        with open(path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    flush()
                    continue
                if fields[0] == "-DOCSTART-":
                    flush()
                    continue
                if len(fields) < 2:
                    raise RnnexpError(
                        f"{path}:{number}: one column ({line.strip()!r}); CoNLL lines are "
                        "`word ... tag`, with a blank line between sentences"
                    )
                if first is None:
                    first = number, fields
                elif len(fields) != len(first[1]):
                    raise RnnexpError(
                        f"{path}:{number}: {len(fields)} columns ({' '.join(fields)!r}), the "
                        f"file's other lines have {len(first[1])} (line {first[0]}: "
                        f"{' '.join(first[1])!r}); fix that line"
                    )
                try:
                    tag = fields[tag_column]
                except IndexError:
                    raise RnnexpError(
                        f"{path}:{number}: no column {tag_column} in {len(fields)} columns; "
                        "set task.data.tag_column"
                    ) from None
                if not words:
                    start = number
                words.append(fields[0])
                tags.append(tag)
    except UnicodeDecodeError:
        raise not_utf8(path, key) from None
    except OSError as err:
        raise unreadable(path, key, err) from None
    flush()
    return sentences


# ---------------------------------------------------------------------------- tag schemes

SCHEMES = ("iob2", "iobes")
TAG = re.compile(r"^([BIES])-(.+)$")


def check_tags(tags: list[str], where: str, line: int | None = None) -> None:
    """Every tag is ``O`` or ``B-``/``I-``/``E-``/``S-`` + type; else a one-line error
    naming ``where`` (a file), and the tag's own line when ``line`` (the sentence's first
    line, one tag a line) is given."""
    for i, tag in enumerate(tags):
        if tag != "O" and not TAG.match(tag):
            at = f"{where}:{line + i}" if line is not None else where
            raise RnnexpError(
                f"{at}: tag {tag!r} is neither O nor B-/I-/E-/S- followed by a type "
                "(IOB1, IOB2 or IOBES); is task.data.tag_column right?"
            )


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, first, last)`` (inclusive) in tags of any scheme, read as conlleval
    does: an entity starts at ``B-``/``S-``, at an ``I-``/``E-`` after ``O``, or where the
    type changes; it ends before ``O``, ``B-``, ``S-``, a type change, or after ``E-``/``S-``.
    This is how IOB1 (``B-`` only between two same-type entities), IOB2 and IOBES all read,
    and what ``seqeval``'s default mode and conlleval count (tested against seqeval)."""
    found: list[tuple[str, int, int]] = []
    kind, first = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        ends = kind is not None and (
            prefix in ("O", "B", "S") or label != kind or tags[i - 1][0] in ("E", "S")
        )
        if ends:
            found.append((kind, first, i - 1))
            kind = None
        if prefix != "O" and kind is None:
            kind, first = label, i
    return found


def to_scheme(tags: list[str], scheme: str) -> list[str]:
    """The same entities written in ``scheme``: ``iob2`` (B- first, I- inside) or ``iobes``
    (S- single, B- first, I- inside, E- last)."""
    out = ["O"] * len(tags)
    for kind, first, last in entities(tags):
        if scheme == "iobes" and first == last:
            out[first] = f"S-{kind}"
            continue
        out[first] = f"B-{kind}"
        for i in range(first + 1, last + 1):
            out[i] = f"I-{kind}"
        if scheme == "iobes":
            out[last] = f"E-{kind}"
    return out


def scheme_tags(types: Iterable[str], scheme: str) -> list[str]:
    """The tag set of ``scheme`` over entity ``types``: ``O`` first, then per type."""
    prefixes = "BI" if scheme == "iob2" else "BIES"
    return ["O", *(f"{p}-{t}" for t in sorted(types) for p in prefixes)]


# ---------------------------------------------------------------------------- batches


@dataclass
class Example:
    """One encoded example.

    ``ids``: word ids ``(T,)``. ``chars``: character ids ``(T, C)`` (0-padded per word), or
    ``None`` for tasks without character inputs. ``target``: a class id ``()`` or one tag id
    per word ``(T,)``. ``tokens``: the words as read (for predictions); ``line``: where the
    example starts in its file (0 for typed-in text).
    """

    ids: Tensor
    target: Tensor
    tokens: list[str]
    line: int = 0
    chars: Tensor | None = None
    text: str = ""

    def __len__(self) -> int:
        return len(self.tokens)


def collate(
    examples: list[Example],
    dropout_ids: Tensor | None = None,
    word_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> Batch:
    """Pad ``examples`` into one :class:`Batch` with their true ``lengths``.

    ``inputs``: word ids ``(B, T)``, or ``(B, T, 1 + C)`` with the word id in column 0 and
    its characters after it when the examples have characters. ``targets``: ``(B,)`` class
    ids or ``(B, T)`` tag ids (:data:`IGNORE` at padded steps). With ``word_dropout`` > 0
    (training), each word whose id is in ``dropout_ids`` (the training singletons) becomes
    ``<unk>`` with that probability (Lample et al. 2016), so ``<unk>`` gets trained.
    """
    lengths = torch.tensor([len(e) for e in examples])
    batch, steps = len(examples), int(lengths.max())
    words = torch.full((batch, steps), PAD_ID, dtype=torch.long)
    for i, e in enumerate(examples):
        words[i, : len(e)] = e.ids
    if word_dropout > 0 and dropout_ids is not None:
        drop = torch.isin(words, dropout_ids)
        drop &= torch.rand(words.shape, generator=generator) < word_dropout
        words = words.masked_fill(drop, UNK_ID)
    inputs = words
    if examples[0].chars is not None:
        width = max(e.chars.shape[1] for e in examples)
        inputs = torch.zeros(batch, steps, 1 + width, dtype=torch.long)
        inputs[..., 0] = words
        for i, e in enumerate(examples):
            inputs[i, : len(e), 1 : 1 + e.chars.shape[1]] = e.chars
    if examples[0].target.dim() == 0:
        targets = torch.stack([e.target for e in examples])
    else:
        targets = torch.full((batch, steps), IGNORE, dtype=torch.long)
        for i, e in enumerate(examples):
            targets[i, : len(e)] = e.target
    return Batch(inputs=inputs, targets=targets, lengths=lengths)


class BucketStream(EpochStream):
    """Endless training batches, epoch after epoch, bucketed by length.

    Each epoch shuffles the examples, cuts them into buckets of ``bucket_size`` batches,
    sorts each bucket by length and cuts it into batches (so a batch holds sequences of
    similar length and little padding), then shuffles the batches. ``bucket_size=1``: plain
    shuffled batches. The epoch's order comes from ``(seed, epoch)`` alone; the stream's
    generator serves ``make_batch`` (word dropout). The state (:class:`EpochStream`'s: the
    epoch, the position in it and that generator) lets a resumed run see exactly the same
    batches.
    """

    def __init__(
        self,
        lengths: list[int],
        make_batch: Callable[[list[int], torch.Generator], Batch],
        batch_size: int,
        seed: int,
        bucket_size: int = 50,
    ) -> None:
        if not lengths:
            raise RnnexpError("the training split has no examples")
        self.lengths = lengths
        self.make_batch = make_batch
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_size = max(int(bucket_size), 1)
        super().__init__(seed)

    def plan(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch``, as lists of example indices."""
        # A fixed function of (seed, epoch); seeds 0, 1, 2 ... never share an epoch order.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.bucket_size
        batches = []
        for start in range(0, len(perm), size):
            bucket = sorted(perm[start : start + size], key=self.lengths.__getitem__)
            batches += [
                bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)
            ]
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def start_epoch(self) -> None:
        self.order = self.plan(self.epoch)  # draws nothing from the stream's generator

    @property
    def batches_per_epoch(self) -> int:  # type: ignore[override]
        return len(self.order)

    def batch(self, position: int) -> Batch:
        return self.make_batch(self.order[position], self.generator)


# ---------------------------------------------------------------------------- vectors


def pretrained_words(path: Path, key: str) -> set[str]:
    """The words of a GloVe-format text file (first field of each line), without parsing
    the vectors."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            return {line[: line.find(" ")] for line in handle if " " in line}
    except OSError as err:
        raise RnnexpError(f"{key}={path} cannot be read ({err})") from None


def read_vectors(path: Path, vocab: Vocab, dim: int | None, key: str) -> tuple[Tensor, Tensor]:
    """Pretrained vectors for ``vocab`` from a GloVe-format text file (``word v1 ... vD``
    a line; a word2vec ``count dim`` header line and blank lines are skipped).

    A word takes the vector of its exact form, else of its lower-cased form (GloVe is
    lower-case; a cased vocabulary such as NER's then still finds "Paris").
    Returns ``(vectors (V, dim), found (V,) bool)``.

    The first vector line sets the file's width D, which must equal ``dim`` (``None``:
    any width; the caller checks it, as :func:`rnnexp.nn.model.build_model` does). A line with
    fewer than D values, or a value that is not a number, is a one-line error with the
    file and line number; a line with more fields is a word that holds spaces (GloVe
    840B has a few, e.g. ``. . .``) followed by its D values. Bytes that are not UTF-8
    become U+FFFD, so such a word matches nothing (torchtext skips those words too).
    """
    lower: dict[str, list[int]] = {}
    for i, token in enumerate(vocab.tokens):
        lower.setdefault(token.lower(), []).append(i)
    vectors = torch.zeros(len(vocab), dim or 0)
    exact = torch.zeros(len(vocab), dtype=torch.bool)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    width: tuple[int, int] | None = None  # (values a line, line that set it)
    number = 0
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip().split(" ")
                if parts == [""] or (number == 1 and len(parts) == 2):
                    continue  # a blank line, or word2vec's text header "<count> <dim>"
                if width is None:
                    width = len(parts) - 1, number
                    if dim is None:  # the file's own width
                        if width[0] < 1:
                            raise RnnexpError(
                                f"{path}:{number}: no values after the word; {key} must be "
                                "a GloVe text file (word v1 ... vD a line)"
                            )
                        dim, vectors = width[0], torch.zeros(len(vocab), width[0])
                    if width[0] != dim:
                        raise RnnexpError(
                            f"{key}={path}:{number}: {width[0]}-d vectors, but "
                            f"model.embedding_size={dim}; set model.embedding_size={width[0]}"
                        )
                if len(parts) - 1 < dim:
                    raise RnnexpError(
                        f"{path}:{number}: {len(parts) - 1} values after the word, the "
                        f"file's other lines have {dim} (line {width[1]}); fix that line"
                    )
                word, values = " ".join(parts[:-dim]), parts[-dim:]
                if word not in vocab.index and word not in lower:
                    continue
                vector = torch.tensor([float(v) for v in values])
                if word in vocab.index:
                    i = vocab.index[word]
                    vectors[i], exact[i], found[i] = vector, True, True
                for i in lower.get(word, []):
                    if not exact[i]:
                        vectors[i], found[i] = vector, True
    except ValueError as err:
        raise RnnexpError(
            f"{path}:{number}: {err}; {key} must be a GloVe text file (word v1 ... vD a line)"
        ) from None
    except OSError as err:
        raise unreadable(path, key, err) from None
    if width is None:
        raise RnnexpError(f"{key}={path} holds no vectors; give a GloVe-format text file")
    return vectors, found
