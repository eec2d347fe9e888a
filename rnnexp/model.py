"""The network every task trains: input encoder -> stacked recurrent layers -> head."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp.cells.steps import join_state, split_state, step_layers
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
        hidden, state = self.recur(inputs, state)
        return self.readout(hidden, lengths), state

    def recur(self, inputs: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Encoder and recurrent layers: the top layer's hidden states ``(B, T, D*H)``.

        The training loop calls this and :meth:`readout` separately, so that regularizers
        and diagnostics can reach the hidden states ``h_t``.
        """
        return self.rnn(self.encoder(inputs), state)

    def recur_steps(
        self, inputs: Tensor, state: Any = None, grad_hook: Callable | None = None
    ) -> tuple[Tensor, Any, list[Tensor]]:
        """As :meth:`recur`, one step at a time, also returning the top layer's ``h_t``.

        Each ``h_t`` ``(B, H)`` is the very tensor that feeds both the head and step
        ``t + 1``, so ``torch.autograd.grad(loss, steps)`` gives the total derivatives
        ``∂L/∂h_t`` through time, which a fused multi-step kernel hides. ``grad_hook``
        is registered on every ``h_t`` (e.g. to clamp the backpropagated gradient,
        Mikolov 2012). Slower than :meth:`recur`: use it only where ``h_t`` is needed.

        Each layer runs as plain per-step tensor code on the cell's own weights
        (:mod:`rnnexp.cells.steps`): the input projection of all steps in one matmul,
        then one recurrent matmul per step. Cells without such a form are called one
        step at a time.
        """
        if self.bidirectional:
            raise RnnexpError(
                "step-by-step hidden states (regularizer=pascanu, clip=hidden, diagnostics) "
                "need a one-direction net: set model.bidirectional=false"
            )
        x = self.encoder(inputs)  # (B, T, I)
        layers = step_layers(self.rnn)
        if layers is None:
            return self._recur_module_steps(x, state, grad_hook)
        per_layer = split_state(self.rnn, state, x.shape[0], x)
        for k, layer in enumerate(layers):
            top = k == len(layers) - 1
            if k and self.training and self.rnn.dropout:  # between stacked layers, as torch
                x = F.dropout(x, self.rnn.dropout, training=True)
            layer_state, steps = per_layer[k], []
            for t, xw_t in enumerate(layer.project(x).unbind(1)):  # xw_t: (B, G)
                h_t, layer_state = layer.step(xw_t, layer_state, t)  # h_t is in layer_state
                if top and grad_hook is not None and h_t.requires_grad:
                    h_t.register_hook(grad_hook)
                steps.append(h_t)
            per_layer[k] = layer_state
            x = torch.stack(steps, dim=1)  # (B, T, H): the next layer's input
        return x, join_state(per_layer), steps

    def _recur_module_steps(
        self, x: Tensor, state: Any, grad_hook: Callable | None
    ) -> tuple[Tensor, Any, list[Tensor]]:
        """:meth:`recur_steps` for cells without per-step functions: call the module."""
        steps = []
        for x_t in x.unbind(1):  # x_t: (B, I)
            _, state = self.rnn(x_t.unsqueeze(1), state)
            layers = state[0] if isinstance(state, tuple) else state  # h_n: (L, B, H)
            h_t = layers[-1]
            if grad_hook is not None and h_t.requires_grad:
                h_t.register_hook(grad_hook)
            # Rebuild the state from h_t so that step t + 1 reads this very tensor.
            layers = torch.cat([layers[:-1], h_t.unsqueeze(0)], dim=0)
            state = (layers, *state[1:]) if isinstance(state, tuple) else layers
            steps.append(h_t)
        return torch.stack(steps, dim=1), state, steps

    def readout(self, hidden: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The head on the hidden states: ``(B, T, O)`` or ``(B, O)`` (``last_step``)."""
        return self.head(self.dropout(self.select(hidden, lengths)))

    def features(
        self, inputs: Tensor, state: Any = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """What the head reads: ``(B, T, D*H)`` (every_step) or ``(B, D*H)`` (last_step)."""
        hidden, state = self.recur(inputs, state)
        return self.select(hidden, lengths), state

    def select(self, hidden: Tensor, lengths: Tensor | None) -> Tensor:
        """All steps, or each sequence's last valid step for a ``last_step`` head."""
        return self._last_step(hidden, lengths) if self.head_mode == "last_step" else hidden

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
