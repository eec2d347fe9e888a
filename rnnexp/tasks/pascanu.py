"""What the tasks of Pascanu, Mikolov & Bengio 2013 share (code: pascanur/trainingRNNs).

"On the difficulty of training recurrent neural networks" (ICML 2013) trains on the
pathological long-term-dependency problems of Hochreiter & Schmidhuber 1997 (adding,
multiplication, temporal order, random permutation, noiseless memorization). Their
common protocol, implemented once here:

- the length ``l`` of each minibatch is drawn uniformly from the integers in
  ``[T, 1.1 T)``, i.e. ``T <= l < ceil(1.1 T)`` (just ``T`` when ``T < 10``), as the
  code's adding and multiplication generators do; with ``variable_length=False`` (the
  default of temporal order, permutation and memorization, whose generators in the code
  take the length as given) ``l = T`` (:func:`draw_exact_length`). All sequences of one
  batch share ``l``, so no padding and no ``lengths`` are needed. The held-out sets are
  made of chunks of ``eval_batch_size`` sequences, each chunk with its own length. With
  ``train_min_length`` the training batches draw from ``[train_min_length, 1.1 T)``
  (exact lengths: ``[train_min_length, T)``, the code's ``[min_length, max_length)``)
  instead, as the paper's code does when its ``min_length`` is below its ``max_length``
  (one model trained on lengths 50 to 200); the test set keeps ``T``'s lengths, and so
  does the validation set unless ``val_lengths="train"`` (the code's validation draws
  its lengths as training does);
- relevant events sit at a uniform position in a window ``[a l, b l)`` given as a
  fraction of the sequence length (:func:`window_positions`);
- a test sequence is wrong when its squared error exceeds 0.04 (real-valued targets) or
  when an argmax differs from its target class (classification); a run is solved when
  fewer than 1% of the test sequences are wrong (:func:`regression_score`,
  :func:`classification_score`).

Adding and multiplication also come in Hochreiter & Schmidhuber's own form
(``task.form=hs97``, :class:`MarkedPairTask`): lengths from ``[T, T + T/10]``
(:func:`draw_hs97_length`), -1 markers on the first and last pair, and HS97's criterion,
a sequence correct when ``|error| < 0.04`` (``task.criterion=hs97``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, SyntheticTask

SQUARED_ERROR_TOLERANCE = 0.04  # Pascanu 2013: a real-valued output is wrong above this
ABS_ERROR_TOLERANCE = 0.04  # HS97 exp. 4: a sequence is correct when |error| is below this
SOLVED_ERROR_RATE = 0.01  # a run succeeds when fewer than 1% of test sequences are wrong
FORMS = ("pascanu", "hs97")  # task.form of adding / multiplication
VAL_LENGTHS = ("test", "train")  # task.val_lengths: as the test set's, or the training batches'
CRITERIA = ("pascanu", "hs97")  # task.criterion: squared error > 0.04, or |error| >= 0.04
HS97_FIRST_WINDOW = 10  # HS97: X1 is one of the first ten pairs
HS97_MIN_LENGTH = HS97_FIRST_WINDOW + 1  # so that X1 never falls on the last pair


def draw_length(length: int, generator: torch.Generator, shortest: int | None = None) -> int:
    """One sequence length, uniform over the integers in ``[length, 1.1 length)``, or in
    ``[shortest, 1.1 length)`` when ``shortest`` is given."""
    high = max(length + 1, -(-11 * length // 10))  # ceil(1.1 length) in exact integers
    low = length if shortest is None else shortest
    return int(torch.randint(low, high, (1,), generator=generator).item())


def draw_exact_length(length: int, generator: torch.Generator, shortest: int | None = None) -> int:
    """``length`` itself; with ``shortest < length``, uniform over the integers in
    ``[shortest, length)``, as the paper's code draws ``min_length + randint(max_length -
    min_length)`` (``max_length`` itself never comes up)."""
    if shortest is None or shortest >= length:
        return length
    return int(torch.randint(shortest, length, (1,), generator=generator).item())


def draw_hs97_length(length: int, generator: torch.Generator, shortest: int | None = None) -> int:
    """One sequence length as in HS97 (exp. 3a, 4, 5): uniform over the integers in
    ``[T, T + T/10]``, both ends included, ``T/10`` rounded down (``T = length``); from
    ``[shortest, T + T/10]`` when ``shortest`` is given."""
    low = length if shortest is None else shortest
    return int(torch.randint(low, length + length // 10 + 1, (1,), generator=generator).item())


def window(steps: int, start: float, stop: float) -> tuple[int, int]:
    """The integer steps ``p`` with ``start * steps <= p < stop * steps``, as ``(lo, hi)``.

    Fractions are rounded to tenths and computed in integers (no float surprises); a
    window with no integer in it (very short sequences) becomes the single step ``lo``.
    The paper's code writes a window as ``floor(start l) + randint(floor(w l))`` (``w``
    its width): the same steps when ``l`` is a multiple of 10; otherwise this window may
    start and end one step later (``l = 55``, ``[0.1 l, 0.2 l)``: ``[6, 11)`` here,
    ``[5, 10)`` there).
    """
    lo = -(-round(10 * start) * steps // 10)  # ceil
    hi = -(-round(10 * stop) * steps // 10)
    return lo, max(hi, lo + 1)


def window_positions(
    batch_size: int, steps: int, start: float, stop: float, generator: torch.Generator
) -> Tensor:
    """``(batch_size,)`` positions, uniform over the steps of :func:`window`."""
    lo, hi = window(steps, start, stop)
    return torch.randint(lo, hi, (batch_size,), generator=generator)


def hs97_positions(
    batch_size: int, length: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """HS97's marked pairs (exp. 4, 5), ``(batch_size,)`` steps each: X1 uniform over the
    first ten pairs; X2 uniform over the first ``T/2 - 1`` pairs still unmarked
    (``T = length``, ``T/2`` rounded down), i.e. the ``j``-th pair other than X1 for ``j``
    uniform in ``[0, T/2 - 1)``. X2 may be the first pair; X1 never the last
    (``length >= HS97_MIN_LENGTH``)."""
    first = torch.randint(0, HS97_FIRST_WINDOW, (batch_size,), generator=generator)
    j = torch.randint(0, length // 2 - 1, (batch_size,), generator=generator)
    return first, j + (j >= first).long()  # skip X1's pair


def solved_metrics(wrong: Tensor, loss: float, solved_error_rate: float) -> dict[str, float]:
    """``loss``, ``error_rate``, ``accuracy``, ``solved`` from per-sequence ``wrong`` flags."""
    error_rate = wrong.float().mean().item()
    return {
        "loss": loss,
        "error_rate": error_rate,
        "accuracy": 1.0 - error_rate,
        "solved": float(error_rate < solved_error_rate),
    }


def regression_score(
    outputs: list[Tensor],
    targets: list[Tensor],
    tolerance: float = SQUARED_ERROR_TOLERANCE,
    solved_error_rate: float = SOLVED_ERROR_RATE,
    criterion: str = "pascanu",
    abs_tolerance: float = ABS_ERROR_TOLERANCE,
) -> dict[str, float]:
    """Last-step regression: outputs and targets ``(B, O)`` per chunk.

    Two rules for a wrong sequence, with ``e = prediction - target``:

    - ``pascanu`` (Pascanu 2013): wrong when ``sum_o e_o^2 > tolerance`` (0.04, i.e.
      ``|e| > 0.2`` for one output);
    - ``hs97`` (HS97 exp. 4): correct only when ``|e_o| < abs_tolerance`` (0.04) for every
      output, i.e. wrong when ``max_o |e_o| >= abs_tolerance``.

    ``error_rate``, ``accuracy`` and ``solved`` follow ``criterion``; ``error_rate_pascanu``
    and ``error_rate_hs97`` give both rules' rates, whichever is chosen. ``loss`` is the
    mean squared error per sequence.
    """
    if criterion not in CRITERIA:
        raise RnnexpError(f"task.criterion={criterion!r}: choose one of {', '.join(CRITERIA)}")
    prediction, target = torch.cat(outputs), torch.cat(targets)
    error = prediction - target  # (N, O)
    squared_error = error.pow(2).sum(-1)  # (N,)
    wrong = {
        "pascanu": squared_error > tolerance,
        "hs97": error.abs().amax(-1) >= abs_tolerance,
    }
    metrics = solved_metrics(wrong[criterion], squared_error.mean().item(), solved_error_rate)
    for name, flags in wrong.items():
        metrics[f"error_rate_{name}"] = flags.float().mean().item()
    return metrics


def classification_score(
    outputs: list[Tensor],
    targets: list[Tensor],
    masks: list[Tensor] | None = None,
    solved_error_rate: float = SOLVED_ERROR_RATE,
) -> dict[str, float]:
    """Classification, per chunk: logits ``(B, C)`` or ``(B, T, C)``, class ids ``(B)`` or
    ``(B, T)``; chunks may differ in ``T``.

    ``loss`` is the cross-entropy averaged over each sequence's steps, then over
    sequences. A sequence is wrong when the argmax differs from the target at any step
    where its ``mask`` (``(B, T)`` bool, default all steps) is true.
    """
    wrong, losses = [], []
    for i, (logits, target) in enumerate(zip(outputs, targets, strict=True)):
        if target.dim() == 1:  # one step per sequence
            logits, target = logits.unsqueeze(1), target.unsqueeze(1)
        mask = torch.ones_like(target, dtype=torch.bool) if masks is None else masks[i]
        if mask.dim() == 1:
            mask = mask.unsqueeze(1)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T)
        losses.append(ce.mean(1))
        wrong.append(((logits.argmax(-1) != target) & mask).any(1))
    return solved_metrics(torch.cat(wrong), torch.cat(losses).mean().item(), solved_error_rate)


class PascanuTask(SyntheticTask):
    """A Pascanu-2013 task: a batch's length drawn from ``[length, 1.1 length)``, or
    ``length`` itself.

    Subclasses implement :meth:`sample_length` (a batch of one given length),
    :meth:`loss` and :meth:`score`.

    The settings every Pascanu task shares; a subclass's ``__init__`` takes its own keys
    and passes these on (``**settings``), so each is declared once, here.

    Args:
        length: ``T``, the (shortest) sequence length of the held-out sets.
        solved_error_rate: the run is solved when the test error rate is below it.
        seed, num_val, num_test, eval_batch_size: the fixed held-out sets.
        train_min_length: when given, each training batch's length is drawn from
            ``[train_min_length, 1.1 length)`` (exact lengths: ``[train_min_length,
            length)``; shorter sequences mixed in, as in the paper's code); ``None``: as
            the held-out sets.
        variable_length: ``True``: lengths from ``[length, 1.1 length)``
            (:func:`draw_length`); ``False``: exactly ``length`` (:func:`draw_exact_length`);
            ``None``: the task's own (:attr:`variable_length_default`, as the paper's code).
        val_lengths: ``test``: the validation set draws its lengths as the test set does;
            ``train``: as the training batches do (with ``train_min_length``, the
            paper's code's validation on its whole training range).
        name: the yaml's ``name`` key (the class attribute is the task's name).
    """

    encoder = "linear"
    metric = "error_rate"
    metric_mode = "min"
    diagnostics = True  # gradient flow is what these tasks are about
    min_length = 2  # the shortest T a subclass accepts
    variable_length_default = True  # the code's generator draws l from [T, 1.1 T)

    def __init__(
        self,
        length: int = 50,
        *,
        solved_error_rate: float = SOLVED_ERROR_RATE,
        seed: int = 1234,
        num_val: int = 256,
        num_test: int = 1000,
        eval_batch_size: int = 250,
        train_min_length: int | None = None,
        variable_length: bool | None = None,
        val_lengths: str = "test",
        name: str = "",
    ) -> None:
        super().__init__(seed, num_val, num_test, eval_batch_size)
        if variable_length is None:
            variable_length = self.variable_length_default
        if val_lengths not in VAL_LENGTHS:
            raise RnnexpError(
                f"task.val_lengths={val_lengths!r}: choose one of {', '.join(VAL_LENGTHS)}"
            )
        if length < self.min_length:
            raise RnnexpError(f"task.length={length} must be >= {self.min_length}")
        if train_min_length is not None and not self.min_length <= train_min_length <= length:
            raise RnnexpError(
                f"task.train_min_length={train_min_length} must lie in "
                f"[{self.min_length}, task.length={length}], or be null"
            )
        self.length = length
        self.solved_error_rate = solved_error_rate
        self.train_min_length = train_min_length
        self.variable_length, self.val_lengths = variable_length, val_lengths

    def draw_steps(self, generator: torch.Generator, shortest: int | None = None) -> int:
        """One batch's length: :func:`draw_length` (``[T, 1.1 T)``, or from ``shortest``),
        or :func:`draw_exact_length` (``T``, or ``[shortest, T)``) without
        ``variable_length``."""
        if not self.variable_length:
            return draw_exact_length(self.length, generator, shortest)
        return draw_length(self.length, generator, shortest)

    def held_out_draw(self, split: str) -> Callable[[int, torch.Generator], Batch]:
        if split == "val" and self.val_lengths == "train":
            return self.sample_train
        return super().held_out_draw(split)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.sample_length(batch_size, self.draw_steps(generator), generator)

    def sample_train(self, batch_size: int, generator: torch.Generator) -> Batch:
        steps = self.draw_steps(generator, self.train_min_length)
        return self.sample_length(batch_size, steps, generator)

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        """``batch_size`` sequences of exactly ``steps`` steps."""
        raise NotImplementedError


class MarkedPairTask(PascanuTask):
    """Adding / multiplication: two channels per step, a value and a marker; the target, read
    at the last step, combines the two marked values ``X1`` and ``X2``. Inputs
    ``(B, l, 2)`` (channel 0 value, channel 1 marker), targets ``(B, 1)``; MSE loss.

    ``form="pascanu"`` (default; Pascanu 2013 and its code): values ``U[0, 1]``, markers
    in ``{0, 1}``; one marker in ``[0, 0.1 l)``, the other in ``[0.1 l, 0.5 l)``; target
    :meth:`combine` ``(X1, X2)``; ``l`` from ``[T, 1.1 T)``.

    ``form="hs97"`` (Hochreiter & Schmidhuber 1997, exp. 4 and 5): ``l`` uniform over the
    integers in ``[T, T + T/10]``; values ``U[hs97_low, 1]``; X1 is one of the first ten
    pairs, X2 one of the first ``T/2 - 1`` pairs still unmarked (the ``j``-th pair other than X1,
    ``j`` uniform in ``[0, T/2 - 1)``, ``T/2`` rounded down); their markers are 1, the
    first and the last pair's -1 (the first's 1 when marked), all others 0. When X1 is
    the first pair its value is set to :attr:`hs97_neutral` (HS97: 0 for adding, 1.0 for
    multiplication), in the input and in the target :meth:`combine_hs97` ``(X1, X2)``.

    Args:
        length: ``T``.
        form: ``pascanu`` or ``hs97`` (above).
        criterion: the rule behind ``error_rate`` and ``solved`` (:func:`regression_score`):
            ``pascanu`` (squared error > ``tolerance`` is wrong), ``hs97`` (``|error| >=
            abs_tolerance`` is wrong); ``None``: the form's own rule.
        tolerance: Pascanu's largest squared error that counts as correct (0.04).
        abs_tolerance: HS97's bound: correct when ``|error| < abs_tolerance`` (0.04).
        settings: ``solved_error_rate``, the held-out sets, ``train_min_length``,
            ``val_lengths``, ``variable_length`` (default ``True``: lengths drawn as
            ``form`` says; ``False``: exactly ``T``) (:class:`PascanuTask`).
    """

    input_size = 2
    output_size = 1
    head = "last_step"
    hs97_low: float  # form=hs97: values are U[hs97_low, 1]
    hs97_neutral: float  # form=hs97: X1's value when X1 is the first pair

    def __init__(
        self,
        length: int = 50,
        tolerance: float = SQUARED_ERROR_TOLERANCE,
        form: str = "pascanu",
        criterion: str | None = None,
        abs_tolerance: float = ABS_ERROR_TOLERANCE,
        **settings: Any,
    ) -> None:
        super().__init__(length, **settings)
        train_min_length = self.train_min_length
        if form not in FORMS:
            raise RnnexpError(f"task.form={form!r}: choose one of {', '.join(FORMS)}")
        criterion = form if criterion is None else criterion
        if criterion not in CRITERIA:
            raise RnnexpError(
                f"task.criterion={criterion!r}: choose one of {', '.join(CRITERIA)}, or null"
            )
        if form == "hs97" and min(length, train_min_length or length) < HS97_MIN_LENGTH:
            raise RnnexpError(
                f"task.form=hs97 needs task.length (and task.train_min_length) >= "
                f"{HS97_MIN_LENGTH}: X1 is one of the first {HS97_FIRST_WINDOW} pairs"
            )
        self.form, self.criterion = form, criterion
        self.tolerance, self.abs_tolerance = tolerance, abs_tolerance

    @staticmethod
    def combine(x1: Tensor, x2: Tensor) -> Tensor:
        """Pascanu's target from the two marked values."""
        raise NotImplementedError

    @classmethod
    def combine_hs97(cls, x1: Tensor, x2: Tensor) -> Tensor:
        """HS97's target from the two marked values (default: :meth:`combine`)."""
        return cls.combine(x1, x2)

    def draw_steps(self, generator: torch.Generator, shortest: int | None = None) -> int:
        if self.form == "hs97" and self.variable_length:
            return draw_hs97_length(self.length, generator, shortest)
        return super().draw_steps(generator, shortest)

    def sample_length(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        if self.form == "hs97":
            return self._sample_hs97(batch_size, steps, generator)
        values = torch.rand(batch_size, steps, generator=generator)
        first = window_positions(batch_size, steps, 0.0, 0.1, generator)
        second = window_positions(batch_size, steps, 0.1, 0.5, generator)
        rows = torch.arange(batch_size)
        markers = torch.zeros(batch_size, steps)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = self.combine(values[rows, first], values[rows, second]).unsqueeze(1)
        return Batch(inputs=torch.stack([values, markers], dim=-1), targets=target)

    def _sample_hs97(self, batch_size: int, steps: int, generator: torch.Generator) -> Batch:
        """HS97's form; X2's window uses ``T = min(steps, length)``, so that shorter
        training sequences (``train_min_length``) keep X2 in their first half."""
        low = self.hs97_low
        values = low + (1.0 - low) * torch.rand(batch_size, steps, generator=generator)
        first, second = hs97_positions(batch_size, min(steps, self.length), generator)
        rows = torch.arange(batch_size)
        values[rows[first == 0], 0] = self.hs97_neutral  # "we set X1 to ..." (HS97)
        markers = torch.zeros(batch_size, steps)
        markers[:, 0] = -1.0
        markers[:, -1] = -1.0
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = self.combine_hs97(values[rows, first], values[rows, second]).unsqueeze(1)
        return Batch(inputs=torch.stack([values, markers], dim=-1), targets=target)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.mse_loss(output, batch.targets)

    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        targets = [b.targets for b in batches]
        return regression_score(
            outputs,
            targets,
            self.tolerance,
            self.solved_error_rate,
            self.criterion,
            self.abs_tolerance,
        )


class LastStepClassificationTask(PascanuTask):
    """One class id per sequence, read at the last step: targets ``(B,)`` long,
    cross-entropy loss, wrong when the argmax differs."""

    head = "last_step"

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output, batch.targets)

    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        targets = [b.targets for b in batches]
        return classification_score(outputs, targets, solved_error_rate=self.solved_error_rate)
