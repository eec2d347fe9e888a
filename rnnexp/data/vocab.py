"""The one vocabulary: tokens <-> ids, for every task that reads text (pure Python).

:class:`Vocab` serves the char/word language model (``charlm``), the words and characters
of the text tasks (``sentiment``, ``ner``) and their label sets. What differs between
them is how the token order is chosen, and each way is a named constructor, so the ids a
model was trained with never change:

* :meth:`Vocab.of_characters`: every character of a text, sorted by code point, no
  specials (``charlm``, ``level=char``);
* :meth:`Vocab.of_words`: ``<unk>``, ``<eos>`` and the most frequent words, ties first
  seen first (``charlm``, ``level=word``);
* :meth:`Vocab.by_frequency`: ``<pad>`` (id 0), ``<unk>`` (id 1) and the tokens seen at
  least ``min_freq`` times, most frequent first, ties alphabetical (text tasks' words and
  characters);
* :meth:`Vocab.labels`: a label or tag set as given, no specials: an unknown label is a
  ``KeyError``, never ``<unk>``.

A vocabulary is saved in checkpoints as plain data (:meth:`Vocab.state_dict`:
``{"tokens", "unk", "pad", "level"}``); :meth:`Vocab.from_state` also reads the two
formats written before this class (``charlm``'s ``{"level", "tokens", "unk"}`` and the
text tasks' bare lists), so every older checkpoint still loads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from rnnexp.errors import RnnexpError

Level = Literal["char", "word", "label"]
LEVELS: tuple[str, ...] = ("char", "word", "label")

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1  # where Vocab.with_specials puts them
EOS = "<eos>"  # a line end in a word-level language model
UNK_CHAR = "\ufffd"  # U+FFFD: a character-level model's stand-in for unseen characters


def split_tokens(text: str, level: str) -> str | list[str]:
    """A text as a language model's tokens: itself (a string is a sequence of characters)
    at ``level=char``; at ``level=word`` its whitespace-separated words with ``<eos>`` at
    each line end."""
    if level == "char":
        return text
    words: list[str] = []
    lines = text.split("\n")
    for k, line in enumerate(lines):
        words.extend(line.split())
        if k < len(lines) - 1:  # a newline followed this line
            words.append(EOS)
    return words


class Vocab:
    """Tokens <-> ids.

    ``tokens``: the tokens in id order; ``index``: token -> id. ``unk``: the token that
    stands for anything outside the vocabulary (``unk_id`` its id), or ``None``: then an
    unknown token is a ``KeyError`` (:meth:`encode`) or reported (:meth:`lookup`).
    ``pad``: the padding token (``pad_id``), or ``None``. ``level``: ``char`` (tokens are
    characters, decoded by joining them), ``word`` (decoded with spaces, ``<eos>`` a line
    end) or ``label``. ``counts``: training frequencies (not saved), from which the text
    tasks find singletons for word dropout.
    """

    def __init__(
        self,
        tokens: Iterable[str],
        level: Level,
        unk: str | None = None,
        pad: str | None = None,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level={level!r}; choose one of {', '.join(LEVELS)}")
        self.tokens = list(tokens)
        self.level = level
        # A token listed twice maps to its last id: charlm's word vocabulary of a text that
        # holds "<unk>" itself (Penn Treebank) lists it twice, and its models were trained so.
        self.index = {token: i for i, token in enumerate(self.tokens)}
        for name, special in (("unk", unk), ("pad", pad)):
            if special is not None and special not in self.index:
                raise ValueError(f"{name}={special!r} is not one of the tokens")
        self.unk, self.pad = unk, pad
        self.unk_id = None if unk is None else self.index[unk]
        self.pad_id = None if pad is None else self.index[pad]
        self.counts: Counter[str] = Counter()

    # ------------------------------------------------------------------ building
    @classmethod
    def with_specials(cls, tokens: Iterable[str], level: Level = "word") -> Vocab:
        """``<pad>`` (id 0), ``<unk>`` (id 1), then ``tokens`` in their order."""
        rest = [t for t in tokens if t not in (PAD, UNK)]
        return cls([PAD, UNK, *rest], level, unk=UNK, pad=PAD)

    @classmethod
    def by_frequency(
        cls,
        counts: Counter[str],
        min_freq: int = 1,
        max_size: int | None = None,
        level: Level = "word",
    ) -> Vocab:
        """``<pad>``, ``<unk>`` and the tokens seen at least ``min_freq`` times, most
        frequent first (ties alphabetical, so the vocabulary never depends on file order),
        at most ``max_size`` entries in all. Keeps ``counts``."""
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            if max_size < 3:
                raise RnnexpError(f"task.vocab_size={max_size}: allow at least 3 entries")
            kept = kept[: max_size - 2]
        vocab = cls.with_specials(kept, level)
        vocab.counts = counts
        return vocab

    @classmethod
    def of_characters(cls, text: Iterable[str]) -> Vocab:
        """Every character of ``text``, sorted by code point; no specials."""
        return cls(sorted(set(text)), "char")

    @classmethod
    def of_words(cls, words: Iterable[str], size: int) -> Vocab:
        """``<unk>``, ``<eos>`` and the ``size - 2`` most frequent words (ties: first seen
        first, as ``Counter.most_common`` orders them)."""
        counts = Counter(w for w in words if w != EOS)
        kept = [word for word, _ in counts.most_common(max(size - 2, 0))]
        return cls([UNK, EOS, *kept], "word", unk=UNK)

    @classmethod
    def labels(cls, names: Iterable[str]) -> Vocab:
        """A label (tag) set in the given order, without specials."""
        return cls(names, "label")

    def extended(self, tokens: Iterable[str], unk: str | None = None) -> Vocab:
        """This vocabulary with ``tokens`` it lacks appended (ids of the others unchanged),
        the same ``counts``; ``unk``, if given, becomes the unknown token."""
        added = [t for t in dict.fromkeys(tokens) if t not in self.index]
        vocab = Vocab([*self.tokens, *added], self.level, unk or self.unk, self.pad)
        vocab.counts = self.counts
        return vocab

    # ------------------------------------------------------------------ lookup
    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"Vocab({len(self)} {self.level} tokens, unk={self.unk!r}, pad={self.pad!r})"

    def __getitem__(self, token: str) -> int:
        """The id of ``token``: ``unk_id`` when it is unknown, or a ``KeyError`` when the
        vocabulary has no ``unk``."""
        found = self.index.get(token, self.unk_id)
        if found is None:
            raise KeyError(token)
        return found

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """The ids of ``tokens`` (:meth:`__getitem__` for each)."""
        return [self[t] for t in tokens]

    def lookup(self, tokens: Iterable[str]) -> tuple[list[int], list[str]]:
        """The ids of ``tokens``, an unknown token as ``unk_id`` (-1 without ``unk``), and
        the distinct unknown tokens, sorted."""
        unk = -1 if self.unk_id is None else self.unk_id
        ids, missing = [], set()
        for token in tokens:
            found = self.index.get(token)
            if found is None:
                missing.add(token)
                found = unk
            ids.append(found)
        return ids, sorted(missing)

    # ------------------------------------------------------------------ text
    def split(self, text: str) -> str | list[str]:
        """``text`` as tokens of this vocabulary's level (:func:`split_tokens`)."""
        return split_tokens(text, self.level)

    @property
    def start_id(self) -> int | None:
        """What an empty prompt starts from: a line end, when the vocabulary has one."""
        return self.index.get("\n" if self.level == "char" else EOS)

    def piece(self, token: int, previous: int | None) -> str:
        """The text of ``token`` after ``previous``: a character as it is; a word with a
        space before it unless it starts a line; ``<eos>`` as a newline."""
        text = self.tokens[token]
        if self.level == "char":
            return text
        if text == EOS:
            return "\n"
        at_line_start = previous is None or self.tokens[previous] == EOS
        return text if at_line_start else " " + text

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (:meth:`piece` for each)."""
        previous, parts = None, []
        for token in ids:
            parts.append(self.piece(token, previous))
            previous = token
        return "".join(parts)

    # ------------------------------------------------------------------ plain data
    def state_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "unk": self.unk, "pad": self.pad, "level": self.level}

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any] | Sequence[str], list_level: Level | None = None
    ) -> Vocab:
        """A vocabulary from :meth:`state_dict`, or from a format written before this class:

        * ``charlm``'s ``{"level", "tokens", "unk"}`` (no ``pad``): read as it is;
        * the text tasks' bare lists of tokens (``words``, ``chars``: ``<pad>`` and
          ``<unk>`` first; ``labels``: none), whose ``list_level`` (``word``, ``char`` or
          ``label``) the caller knows.
        """
        if isinstance(state, Mapping):
            return cls(state["tokens"], state["level"], state["unk"], state.get("pad"))
        if list_level is None:
            raise ValueError("a vocabulary saved as a bare list needs its list_level")
        if list_level == "label":
            return cls.labels(state)
        return cls.with_specials(state, list_level)
