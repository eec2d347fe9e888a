"""The network every task trains: input encoder -> stacked recurrent layers -> head."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Task


class OneHot(nn.Module):
    """Token ids ``(B, T)`` -> one-hot float vectors ``(B, T, V)``; no parameters."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        return F.one_hot(tokens, self.vocab_size).float()


class SequenceModel(nn.Module):
    """``encoder`` -> ``rnn`` (any cell from :mod:`rnnexp.cells`) -> dropout -> ``head``.

    Args:
        encoder: maps the task's inputs to ``(B, T, I)`` features.
        rnn: a cell module, ``forward(x (B, T, I), state) -> (outputs (B, T, D*H), state)``.
        head: ``nn.Linear(D*H, O)``.
        head_mode: ``every_step`` gives ``(B, T, O)``; ``last_step`` gives ``(B, O)`` read
            at each sequence's last valid step (the backward direction's output at step 0
            for bidirectional nets, which is where it has read the whole sequence).
        bidirectional: whether ``rnn`` runs both directions.
        dropout: dropout on the recurrent outputs before the head.
    """

    def __init__(
        self,
        encoder: nn.Module,
        rnn: nn.Module,
        head: nn.Linear,
        head_mode: str,
        bidirectional: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        if head_mode not in ("every_step", "last_step"):
            raise RnnexpError(f"unknown head {head_mode!r}; choose every_step or last_step")
        self.encoder = encoder
        self.rnn = rnn
        self.dropout = nn.Dropout(dropout)
        self.head = head
        self.head_mode = head_mode
        self.bidirectional = bidirectional

    def forward(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        features, state = self.features(inputs, state, lengths)
        return self.head(self.dropout(features)), state

    def features(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """What the head reads: ``(B, T, D*H)`` (every_step) or ``(B, D*H)`` (last_step)."""
        outputs, state = self.rnn(self.encoder(inputs), state)  # (B, T, D*H)
        if self.head_mode == "last_step":
            outputs = self._last_step(outputs, lengths)  # (B, D*H)
        return outputs, state

    def _last_step(self, outputs: Tensor, lengths: Tensor | None) -> Tensor:
        batch, steps, width = outputs.shape
        if lengths is None:
            last = torch.full((batch,), steps - 1, device=outputs.device)
        else:
            last = lengths.to(outputs.device) - 1
        index = last.view(batch, 1, 1).expand(batch, 1, width)
        final = outputs.gather(1, index).squeeze(1)  # (B, D*H) at each last valid step
        if not self.bidirectional:
            return final
        hidden = width // 2
        return torch.cat([final[:, :hidden], outputs[:, 0, hidden:]], dim=-1)


def build_model(cfg: DictConfig, task: Task) -> SequenceModel:
    """The model for ``task`` from the ``model`` and ``cell`` config groups."""
    model_cfg = cfg.model
    if task.encoder == "linear":
        encoder, features = nn.Identity(), task.input_size  # W_ih is the linear input map
    elif task.encoder == "onehot":
        encoder, features = OneHot(task.input_size), task.input_size
    elif task.encoder == "embedding":
        encoder = nn.Embedding(task.input_size, model_cfg.embedding_size)
        features = model_cfg.embedding_size
    else:
        raise RnnexpError(f"task {task.name!r} asks for unknown encoder {task.encoder!r}")
    rnn = instantiate(
        cfg.cell,
        input_size=features,
        hidden_size=model_cfg.hidden_size,
        num_layers=model_cfg.num_layers,
        bidirectional=model_cfg.bidirectional,
        dropout=model_cfg.dropout,
        _convert_="all",
    )
    directions = 2 if model_cfg.bidirectional else 1
    head = nn.Linear(directions * model_cfg.hidden_size, task.output_size)
    return SequenceModel(
        encoder,
        rnn,
        head,
        head_mode=task.head,
        bidirectional=model_cfg.bidirectional,
        dropout=model_cfg.dropout,
    )
