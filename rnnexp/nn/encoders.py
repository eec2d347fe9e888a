"""Word encoders for text tasks: a word embedding, optionally joined by a character-level
encoder of each word (``model.char_encoder=cnn|lstm``).

Character features see spelling, capitals and affixes, which matter for words that are
rare or unknown to the word vocabulary (names, in NER). Two published forms:

* ``lstm`` (Lample et al. 2016): a bidirectional LSTM over the characters of each word;
  the word's feature is the final forward state joined to the final backward state.
* ``cnn`` (Ma & Hovy 2016; Chiu & Nichols 2016): a 1-d convolution of width 3 over the
  character embeddings, max-pooled over the characters of the word.

Both read only the characters of each word (packed or masked), so the padding of a batch
never changes a word's feature.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnexp.errors import RnnexpError

CHAR_ENCODERS = ("none", "cnn", "lstm")


class CharCNN(nn.Module):
    """Characters ``(N, C)`` (0-padded ids, every word at least one character) -> ``(N, F)``.

    ``F = hidden_size`` filters of width ``width``; zero-padding at the word's edges equals
    the padding character's embedding (fixed at zero), and padded positions are left out
    of the max, so the result does not depend on ``C``.
    """

    def __init__(self, num_chars: int, embedding_size: int, hidden_size: int, width: int = 3):
        super().__init__()
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.conv = nn.Conv1d(embedding_size, hidden_size, width, padding=width // 2)
        self.output_size = hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        features = self.conv(self.embedding(chars).transpose(1, 2))  # (N, F, C)
        pad = (chars == 0).unsqueeze(1)  # (N, 1, C)
        return features.masked_fill(pad, float("-inf")).amax(dim=2)


class CharLSTM(nn.Module):
    """Characters ``(N, C)`` -> ``(N, 2H)``: a packed bidirectional LSTM over each word's
    characters; the final forward state joined to the final backward state."""

    def __init__(self, num_chars: int, embedding_size: int, hidden_size: int):
        super().__init__()
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        self.lstm = nn.LSTM(embedding_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_size = 2 * hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        lengths = (chars != 0).sum(dim=1).cpu()
        packed = pack_padded_sequence(
            self.embedding(chars), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.lstm(packed)  # h_n: (2, N, H), forward then backward
        return torch.cat([h_n[0], h_n[1]], dim=-1)


class WordEncoder(nn.Module):
    """Token inputs -> word features ``(B, T, E [+ F])``.

    Inputs are word ids ``(B, T)``, or ``(B, T, 1 + C)``: the word id in column 0 and its
    character ids (0-padded) after it, as :func:`rnnexp.data.text.collate` builds them. Without
    a character encoder the characters are ignored.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        char_encoder: str = "none",
        num_chars: int = 0,
        char_embedding_size: int = 25,
        char_hidden_size: int = 25,
    ) -> None:
        super().__init__()
        if char_encoder not in CHAR_ENCODERS:
            raise RnnexpError(
                f"model.char_encoder={char_encoder!r}; choose one of: {', '.join(CHAR_ENCODERS)}"
            )
        if char_encoder != "none" and num_chars == 0:
            raise RnnexpError(
                f"model.char_encoder={char_encoder} needs a task with character inputs (ner); "
                "set model.char_encoder=none"
            )
        self.words = nn.Embedding(vocab_size, embedding_size)
        self.chars: nn.Module | None = None
        if char_encoder == "cnn":
            self.chars = CharCNN(num_chars, char_embedding_size, char_hidden_size)
        elif char_encoder == "lstm":
            self.chars = CharLSTM(num_chars, char_embedding_size, char_hidden_size)
        self.output_size = embedding_size + (self.chars.output_size if self.chars else 0)

    def forward(self, inputs: Tensor) -> Tensor:
        words = inputs[..., 0] if inputs.dim() == 3 else inputs
        features = self.words(words)  # (B, T, E)
        if self.chars is None:
            return features
        if inputs.dim() != 3:
            raise RnnexpError("model.char_encoder needs inputs with character ids (B, T, 1 + C)")
        chars = inputs[..., 1:].reshape(-1, inputs.shape[-1] - 1)  # (B * T, C)
        real = chars[:, 0] != 0  # padded steps have no characters
        encoded = self.chars(chars[real])  # (N, F) for the real words only
        out = encoded.new_zeros(chars.shape[0], encoded.shape[-1])
        out[real] = encoded
        return torch.cat([features, out.view(*inputs.shape[:2], -1)], dim=-1)


def word_embedding(encoder: nn.Module) -> nn.Embedding:
    """The word embedding of a model's encoder (plain or :class:`WordEncoder`)."""
    if isinstance(encoder, WordEncoder):
        return encoder.words
    if isinstance(encoder, nn.Embedding):
        return encoder
    raise RnnexpError("task.embeddings.path needs a model with a word embedding")
