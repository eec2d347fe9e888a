"""The random permutation problem of Pascanu, Mikolov & Bengio 2013 (code:
pascanur/trainingRNNs; after Hochreiter & Schmidhuber 1997's long-lag experiments).

Every step shows one of ``num_symbols`` (100) symbols, one-hot. The first symbol is 0 or
1; every later one is drawn uniformly from ``2 .. num_symbols - 1``. At the last step the
net names the first symbol: a 2-way classification (rnnexp's choice: the head has 2
outputs, not 100). See ``tasks/permutation/README.md``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.pascanu import SOLVED_ERROR_RATE, LastStepClassificationTask


class PermutationTask(LastStepClassificationTask):
    """Many-to-one classification: inputs ``(B, l, num_symbols)`` one-hot, targets ``(B,)``
    the first symbol (0 or 1).

    Args:
        length: ``T``, the sequence length (:class:`PascanuTask`).
        num_symbols: size of the one-hot input (the paper: 100).
        solved_error_rate: the run is solved when the test error rate is below it.
        seed, num_val, num_test, eval_batch_size: the fixed held-out sets.
        train_min_length: shorter training sequences mixed in (:class:`PascanuTask`).
        variable_length: ``False`` (default, as the paper's code): every sequence has
            ``T`` steps; ``True``: each batch's from ``[T, 1.1 T)`` (:class:`PascanuTask`).
        val_lengths: the validation set's lengths as the test set's (``test``) or as the
            training batches' (``train``, as the paper's code).
    """

    name = "permutation"
    output_size = 2

    def __init__(
        self,
        length: int = 50,
        num_symbols: int = 100,
        solved_error_rate: float = SOLVED_ERROR_RATE,
        seed: int = 1234,
        num_val: int = 256,
        num_test: int = 1000,
        eval_batch_size: int = 250,
        train_min_length: int | None = None,
        variable_length: bool = False,
        val_lengths: str = "test",
        name: str = "permutation",
    ) -> None:
        super().__init__(
            length,
            solved_error_rate,
            seed,
            num_val,
            num_test,
            eval_batch_size,
            train_min_length,
            variable_length,
            val_lengths,
        )
        if num_symbols < 3:
            raise RnnexpError(f"task.num_symbols={num_symbols} must be >= 3")
        self.input_size = num_symbols

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        symbols = torch.randint(2, self.input_size, (batch_size, steps), generator=generator)
        first = torch.randint(0, 2, (batch_size,), generator=generator)
        symbols[:, 0] = first
        return Batch(inputs=F.one_hot(symbols, self.input_size).float(), targets=first)
