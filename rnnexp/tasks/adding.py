"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4), in the form of
Pascanu, Mikolov & Bengio 2013 (code: pascanur/trainingRNNs).

Two input channels: a value drawn from U[0, 1] at every step and a marker that is 1 at
exactly two steps, one in ``[0, 0.1 l)`` and one in ``[0.1 l, 0.5 l)``. At the last step
the net outputs the mean of the two marked values, ``(x1 + x2) / 2``. A test sequence is
wrong when the squared error exceeds 0.04. See ``tasks/adding/README.md``.
"""

from __future__ import annotations

from torch import Tensor

from rnnexp.tasks.pascanu import MarkedPairTask


class AddingTask(MarkedPairTask):
    """Many-to-one regression: inputs ``(B, l, 2)`` (value, marker), targets ``(B, 1)``.

    Args (see :class:`MarkedPairTask`): ``length`` ``T``, each batch's length ``l`` drawn
    from ``[T, 1.1 T)``; ``tolerance``; ``solved_error_rate``; ``seed``, ``num_val``,
    ``num_test``, ``eval_batch_size`` for the fixed held-out sets.
    """

    name = "adding"

    @staticmethod
    def combine(x1: Tensor, x2: Tensor) -> Tensor:
        return (x1 + x2) / 2
