"""The random permutation problem of Pascanu, Mikolov & Bengio 2013 (code:
pascanur/trainingRNNs; after Hochreiter & Schmidhuber 1997's long-lag experiments).

Every step shows one of ``num_symbols`` (100) symbols, one-hot. The first symbol is 0 or
1; every later one is drawn uniformly from ``2 .. num_symbols - 1``. At the last step the
net names the first symbol: a 2-way classification (rnnexp's choice: the head has 2
outputs, not 100). See ``tasks/permutation/README.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.pascanu import LastStepClassificationTask


class PermutationTask(LastStepClassificationTask):
    """Many-to-one classification: inputs ``(B, l, num_symbols)`` one-hot, targets ``(B,)``
    the first symbol (0 or 1).

    Args:
        length: ``T``, the sequence length (:class:`PascanuTask`).
        num_symbols: size of the one-hot input (the paper: 100).
        settings: ``solved_error_rate``, the held-out sets, ``train_min_length``,
            ``variable_length`` (default ``False``: every sequence has ``T`` steps, as the
            paper's code), ``val_lengths`` (:class:`PascanuTask`).
    """

    name = "permutation"
    output_size = 2
    variable_length_default = False  # the code's generator takes l = T

    def __init__(
        self,
        length: int = 50,
        num_symbols: int = 100,
        **settings: Any,
    ) -> None:
        super().__init__(length, **settings)
        if num_symbols < 3:
            raise RnnexpError(f"task.num_symbols={num_symbols} must be >= 3")
        self.input_size = num_symbols

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        symbols = torch.randint(2, self.input_size, (batch_size, steps), generator=generator)
        first = torch.randint(0, 2, (batch_size,), generator=generator)
        symbols[:, 0] = first
        return Batch(inputs=F.one_hot(symbols, self.input_size).float(), targets=first)
