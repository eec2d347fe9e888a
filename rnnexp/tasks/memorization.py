"""Noiseless memorization (Martens & Sutskever 2011's form of Hochreiter & Schmidhuber
1997's long-lag problems), as used by Pascanu, Mikolov & Bengio 2013, laid out as in
their code (pascanur/trainingRNNs, ``memorization.py`` and ``RNN.py``).

A pattern of ``n_pos`` symbols, each one of ``n_values``, is shown first; ``l`` blank
steps follow; then a "go" cue at step ``n_pos + l``, then ``n_pos - 1`` more blanks. From
the cue step on (``n_pos`` steps) the net must output the pattern in order; before that
its target is the blank class. Inputs are one-hot over ``n_values + 2`` symbols (values,
blank, go); outputs classify every step over ``n_values + 1`` classes (values, blank). A
sequence is wrong if any of its steps is (blank targets too, as the code's
``report='all'``). 5-bit: 2 values x 5 positions (the default); ">20-bit": 5 values x 10
positions (the code's default). See ``tasks/memorization/README.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.pascanu import PascanuTask, classification_score


class MemorizationTask(PascanuTask):
    r"""Sequence-to-sequence classification: inputs ``(B, l + 2 n_pos, n_values + 2)``
    one-hot, targets ``(B, l + 2 n_pos)`` class ids (``n_values`` is the blank class).

    .. code-block:: text

        step     0 .. n_pos-1   n_pos .. n_pos+l-1   n_pos+l      n_pos+l+1 .. l+2 n_pos-1
        input    pattern        blank                go           blank
        target   blank          blank                pattern[0]   pattern[1 ..]

    Args:
        length: ``l``, the blanks between pattern and cue (exactly ``length``, or drawn
            per batch: :class:`PascanuTask`).
        n_values: symbols a pattern position can take.
        n_pos: positions in the pattern.
        settings: ``solved_error_rate``, the held-out sets, ``train_min_length``,
            ``variable_length`` (default ``False``: every sequence has ``T`` steps, as the
            paper's code), ``val_lengths`` (:class:`PascanuTask`).
    """

    name = "memorization"
    head = "every_step"
    variable_length_default = False  # the code's generator takes l = T
    min_length = 1

    def __init__(
        self,
        length: int = 50,
        n_values: int = 2,
        n_pos: int = 5,
        **settings: Any,
    ) -> None:
        super().__init__(length, **settings)
        if n_values < 2 or n_pos < 1:
            raise RnnexpError(f"task.n_values={n_values} must be >= 2 and task.n_pos={n_pos} >= 1")
        self.n_values, self.n_pos = n_values, n_pos
        self.blank, self.go = n_values, n_values + 1  # symbol ids after the values
        self.input_size = n_values + 2
        self.output_size = n_values + 1

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        n_pos, total = self.n_pos, steps + 2 * self.n_pos
        pattern = torch.randint(0, self.n_values, (batch_size, n_pos), generator=generator)
        symbols = torch.full((batch_size, total), self.blank)
        symbols[:, :n_pos] = pattern
        symbols[:, n_pos + steps] = self.go  # the cue at step l + n_pos
        targets = torch.full((batch_size, total), self.blank)
        targets[:, -n_pos:] = pattern  # recalled from the cue step on
        return Batch(inputs=F.one_hot(symbols, self.input_size).float(), targets=targets)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.transpose(1, 2), batch.targets)  # mean over all steps

    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        targets = [b.targets for b in batches]  # every step counts, blank targets too
        return classification_score(outputs, targets, solved_error_rate=self.solved_error_rate)
