"""The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6), in the form
of Pascanu, Mikolov & Bengio 2013 (code: pascanur/trainingRNNs).

Every step shows one of 6 symbols, one-hot: A, B and 4 distractors. ``bits`` steps carry
A or B, one in each window (2 bits: ``[0.1 l, 0.2 l)`` and ``[0.5 l, 0.6 l)``; 3 bits:
``[0.1 l, 0.2 l)``, ``[0.3 l, 0.4 l)``, ``[0.6 l, 0.7 l)``); every other step shows a
distractor. At the last step the net names the class ``v0 + 2 v1 (+ 4 v2)``, with
``v = 0`` for A and 1 for B (4 or 8 classes). See ``tasks/temporal_order/README.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.pascanu import LastStepClassificationTask, window_positions

NUM_SYMBOLS = 6  # A = 0, B = 1, distractors 2..5
WINDOWS = {
    2: ((0.1, 0.2), (0.5, 0.6)),
    3: ((0.1, 0.2), (0.3, 0.4), (0.6, 0.7)),
}


class TemporalOrderTask(LastStepClassificationTask):
    """Many-to-one classification: inputs ``(B, l, 6)`` one-hot, targets ``(B,)`` class ids
    in ``[0, 2**bits)``.

    Args:
        length: ``T``, the sequence length (:class:`PascanuTask`).
        bits: 2 (4 classes) or 3 (8 classes).
        settings: ``solved_error_rate``, the held-out sets, ``train_min_length``,
            ``variable_length`` (default ``False``: every sequence has ``T`` steps, as the
            paper's code), ``val_lengths`` (:class:`PascanuTask`).
    """

    name = "temporal_order"
    input_size = NUM_SYMBOLS
    variable_length_default = False  # the code's generator takes l = T
    min_length = 10  # every window holds at least one step, and windows never overlap

    def __init__(
        self,
        length: int = 50,
        bits: int = 2,
        **settings: Any,
    ) -> None:
        super().__init__(length, **settings)
        if bits not in WINDOWS:
            raise RnnexpError(f"task.bits={bits}; choose 2 (4 classes) or 3 (8 classes)")
        self.bits = bits
        self.output_size = 2**bits

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        symbols = torch.randint(2, NUM_SYMBOLS, (batch_size, steps), generator=generator)
        values = torch.randint(0, 2, (batch_size, self.bits), generator=generator)  # A=0, B=1
        rows = torch.arange(batch_size)
        for i, (start, stop) in enumerate(WINDOWS[self.bits]):
            where = window_positions(batch_size, steps, start, stop, generator)
            symbols[rows, where] = values[:, i]
        target = (values * 2 ** torch.arange(self.bits)).sum(1)  # v0 + 2 v1 (+ 4 v2)
        return Batch(inputs=F.one_hot(symbols, NUM_SYMBOLS).float(), targets=target)
