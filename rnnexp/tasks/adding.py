"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4), by default in the form
of Pascanu, Mikolov & Bengio 2013 (code: pascanur/trainingRNNs).

``form=pascanu`` (default): two input channels, a value drawn from U[0, 1] at every step
and a marker that is 1 at exactly two steps, one in ``[0, 0.1 l)`` and one in
``[0.1 l, 0.5 l)``; ``l`` from ``[T, 1.1 T)``. At the last step the net outputs the mean of
the two marked values::

    y = (X1 + X2) / 2

``form=hs97`` (HS97 exp. 4): values from U[-1, 1]; markers 1 on X1 (one of the first ten
pairs) and X2 (one of the first ``T/2 - 1`` pairs still unmarked), -1 on the first and the
last pair, else 0; X1 := 0 when it is the first pair; ``l`` from ``[T, T + T/10]``::

    y = 0.5 + (X1 + X2) / 4

A test sequence is wrong when its squared error exceeds 0.04 (``criterion=pascanu``) or
when ``|error| >= 0.04`` (``criterion=hs97``, HS97's rule); both rates are reported. See
``tasks/adding/README.md``.
"""

from __future__ import annotations

from torch import Tensor

from rnnexp.tasks.pascanu import MarkedPairTask


class AddingTask(MarkedPairTask):
    """Many-to-one regression: inputs ``(B, l, 2)`` (value, marker), targets ``(B, 1)``.

    Args (see :class:`MarkedPairTask`): ``length`` ``T``; ``form`` (``pascanu`` or
    ``hs97``); ``criterion``, ``tolerance``, ``abs_tolerance``; ``solved_error_rate``;
    ``seed``, ``num_val``, ``num_test``, ``eval_batch_size`` for the fixed held-out sets;
    ``train_min_length``; ``val_lengths``; ``variable_length``.
    """

    name = "adding"
    hs97_low = -1.0  # HS97 exp. 4: values U[-1, 1]
    hs97_neutral = 0.0  # HS97 exp. 4: "we set X1 to zero" when X1 is the first pair

    @staticmethod
    def combine(x1: Tensor, x2: Tensor) -> Tensor:
        return (x1 + x2) / 2

    @staticmethod
    def combine_hs97(x1: Tensor, x2: Tensor) -> Tensor:
        return 0.5 + (x1 + x2) / 4.0  # the sum scaled to [0, 1]
