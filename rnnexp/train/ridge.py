"""``optim=ridge``: fit the linear readout in closed form, in one pass (echo-state nets).

Jaeger's recipe: drive the fixed reservoir with training sequences, drop the first
``train.washout`` steps of each (the initial transient), and solve
``W_out = Y X^T (X X^T + alpha I)^{-1}`` for the head (:func:`rnnexp.cells.esn.ridge_readout`).
Only the head changes; with another cell than ``esn`` this fits a readout on top of the
(untrained) recurrent features.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import DictConfig

from rnnexp.cells.esn import ridge_readout
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel
from rnnexp.tasks.base import Batch, Task, eval_mode
from rnnexp.train.updates import RidgeUpdate


class RidgeReadout:
    """Closed-form ridge regression for the model's head.

    Args:
        alpha: the ridge penalty ``λ``.
        batches: training batches (of ``train.batch_size`` sequences) in the fit.
    """

    def __init__(self, alpha: float = 1e-6, batches: int = 32) -> None:
        self.alpha = alpha
        self.batches = batches

    def make_update(
        self, model: SequenceModel, task: Task, stream: Any, train: DictConfig,
        device: torch.device,
    ) -> RidgeUpdate:  # fmt: skip
        """The loop's update for ``optim=ridge`` (:class:`rnnexp.train.updates.MakesUpdate`)."""
        if train.ema_decay is not None:
            raise RnnexpError("train.ema_decay averages gradient steps, and optim=ridge takes none")
        return RidgeUpdate(model, task, self, stream, train.washout, device)

    @torch.no_grad()
    def fit(
        self,
        model: SequenceModel,
        task: Task,
        stream: Iterator[Batch],
        washout: int,
        device: torch.device,
    ) -> float:
        """Set ``model.head`` to the ridge solution; returns the training loss after the fit."""
        with eval_mode(model):  # no dropout while the states are collected and scored
            states, targets, batches = [], [], []
            for _ in range(self.batches):
                batch = next(stream).to(device)
                if not batch.targets.is_floating_point():
                    raise RnnexpError(
                        f"optim=ridge fits a regression readout, but task {task.name!r} has class "
                        "targets; use a gradient optimizer (optim=adam)"
                    )
                features, _ = model.features(batch.inputs, None, batch.lengths)
                target = batch.targets
                if features.ndim == 3:  # every_step: drop the washout steps
                    if washout >= features.shape[1]:
                        raise RnnexpError(
                            f"train.washout={washout} leaves no steps of the "
                            f"{features.shape[1]}-step training sequences"
                        )
                    features, target = features[:, washout:], target[:, washout:]
                states.append(features.reshape(-1, features.shape[-1]))
                targets.append(target.reshape(-1, target.shape[-1]))
                batches.append(batch)
            weight, bias = ridge_readout(torch.cat(states), torch.cat(targets), self.alpha)
            model.head.weight.copy_(weight)
            model.head.bias.copy_(bias)
            losses = [task.loss(model(b.inputs, None, b.lengths)[0], b).item() for b in batches]
            return sum(losses) / len(losses)
