"""The Pascanu-2013 tasks: adding, multiplication, temporal_order, permutation,
memorization. Shapes, targets, lengths, determinism, the success criterion."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks import memorization, pascanu, temporal_order
from rnnexp.tasks.adding import AddingTask
from rnnexp.tasks.base import Batch
from rnnexp.tasks.memorization import MemorizationTask
from rnnexp.tasks.multiplication import MultiplicationTask
from rnnexp.tasks.pascanu import (
    classification_score,
    draw_exact_length,
    draw_hs97_length,
    draw_length,
    hs97_positions,
    window,
)
from rnnexp.tasks.permutation import PermutationTask
from rnnexp.tasks.temporal_order import WINDOWS, TemporalOrderTask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits_for(targets: torch.Tensor, classes: int) -> torch.Tensor:
    """A perfect classifier's output."""
    return 10.0 * F.one_hot(targets, classes).float()


# --- shared protocol ---------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 5, 10, 50, 55, 200])
def test_lengths_are_drawn_from_t_to_1_1_t(length: int) -> None:
    generator = gen()
    drawn = {draw_length(length, generator) for _ in range(400)}
    assert min(drawn) >= length
    assert all(d < 1.1 * length for d in drawn) or drawn == {length}  # T < 10: just T
    if length == 50:
        assert drawn == {50, 51, 52, 53, 54}


def test_windows_are_integer_steps_in_fractions_of_the_length() -> None:
    assert window(50, 0.0, 0.1) == (0, 5)
    assert window(50, 0.1, 0.5) == (5, 25)
    assert window(55, 0.1, 0.5) == (6, 28)  # 5.5 <= p < 27.5
    assert window(3, 0.1, 0.2) == (1, 2)  # no integer in [0.3, 0.6): the single step 1


def test_batches_share_a_length_and_the_stream_varies_it() -> None:
    task = AddingTask(length=50)
    stream = task.train_stream(4, seed=0)
    lengths = {next(stream).inputs.shape[1] for _ in range(40)}
    assert lengths <= set(range(50, 55)) and len(lengths) > 1
    chunks = task.held_out("test")
    assert [c.inputs.shape[0] for c in chunks] == [250] * 4
    assert all(50 <= c.inputs.shape[1] < 55 and c.lengths is None for c in chunks)


EXACT = (TemporalOrderTask, PermutationTask, MemorizationTask)  # exact lengths by default


def blanks(task, batch) -> int:
    """A batch's length ``l``: its steps, less memorization's pattern and recall."""
    extra = 2 * task.n_pos if isinstance(task, MemorizationTask) else 0
    return batch.inputs.shape[1] - extra


@pytest.mark.parametrize(
    "cls", [AddingTask, MultiplicationTask, TemporalOrderTask, PermutationTask, MemorizationTask]
)
def test_train_min_length_mixes_shorter_training_sequences(cls) -> None:
    """As the paper's code with min_length < max_length: training batches draw their
    length from [train_min_length, 1.1 T) (exact lengths: [train_min_length, T), the
    code's [min_length, max_length)); val and test keep T's lengths."""
    variable = {} if cls not in EXACT else {"variable_length": True}
    for kwargs, train_range, held_out in (
        (variable, range(20, 44), range(40, 44)),  # ceil(44.0)
        ({"variable_length": False}, range(20, 40), range(40, 41)),
    ):
        if cls not in EXACT and kwargs is not variable:
            continue  # adding/multiplication always draw from [T, 1.1 T), as the code
        task = cls(
            length=40, train_min_length=20, num_val=64, num_test=64, eval_batch_size=8, **kwargs
        )
        stream = task.train_stream(2, seed=0)
        assert {blanks(task, next(stream)) for _ in range(300)} == set(train_range)
        for split in ("val", "test"):
            assert {blanks(task, c) for c in task.held_out(split)} <= set(held_out)
        assert min(blanks(task, c) for c in task.held_out("train")) < 40  # the training mix
        task = cls(length=40, **kwargs)
        stream = task.train_stream(2, seed=0)
        assert {blanks(task, next(stream)) for _ in range(50)} <= set(held_out)
    with pytest.raises(RnnexpError, match="task.train_min_length"):
        cls(length=40, train_min_length=41)


def test_exact_lengths_as_the_code() -> None:
    """temporal_order, permutation, memorization: l = T by default (the code's generators
    take the length as given); task.variable_length=true: [T, 1.1 T)."""
    generator = gen()
    assert {draw_exact_length(50, generator) for _ in range(50)} == {50}
    assert {draw_exact_length(50, generator, 47) for _ in range(200)} == {47, 48, 49}
    assert {draw_exact_length(50, generator, 50) for _ in range(20)} == {50}
    for cls in EXACT:
        task = cls(length=30, num_val=40, num_test=40, eval_batch_size=8)
        assert not task.variable_length
        stream = task.train_stream(4, seed=0)
        assert {blanks(task, next(stream)) for _ in range(30)} == {30}
        assert {blanks(task, c) for s in ("val", "test") for c in task.held_out(s)} == {30}
        task = cls(length=30, variable_length=True, num_test=400, eval_batch_size=8)
        assert {blanks(task, c) for c in task.held_out("test")} == set(range(30, 33))


@pytest.mark.parametrize("cls", EXACT)
def test_val_lengths_train_draws_the_validation_set_as_the_training_batches(cls) -> None:
    """The code's validation set draws its lengths from the training range; the test set
    stays at T. val and test stay different sequences."""
    task = cls(length=40, train_min_length=20, val_lengths="train", num_val=400,
               num_test=80, eval_batch_size=4)  # fmt: skip
    val = {blanks(task, c) for c in task.held_out("val")}
    assert val == set(range(20, 40))  # 100 chunks over the code's [20, 40)
    assert {blanks(task, c) for c in task.held_out("test")} == {40}
    default = cls(length=40, train_min_length=20, num_val=40, eval_batch_size=4)
    assert {blanks(default, c) for c in default.held_out("val")} == {40}
    with pytest.raises(RnnexpError, match="task.val_lengths='all'"):
        cls(length=40, val_lengths="all")


@pytest.mark.parametrize("form", ["pascanu", "hs97"])
def test_marked_pairs_take_the_exact_length_on_request(form: str) -> None:
    """``variable_length=false``: every adding sequence has exactly ``T`` steps, in both
    forms; the default draws them as the form does."""
    exact = AddingTask(length=40, form=form, variable_length=False, num_test=80,
                       eval_batch_size=4)  # fmt: skip
    assert {c.inputs.shape[1] for c in exact.held_out("test")} == {40}
    drawn = AddingTask(length=40, form=form, num_test=400, eval_batch_size=4)
    assert len({c.inputs.shape[1] for c in drawn.held_out("test")}) > 1


@pytest.mark.parametrize("cls", [AddingTask, MultiplicationTask])
def test_marked_pairs_validate_over_the_training_range_on_request(cls) -> None:
    """Adding and multiplication: ``val_lengths=train`` draws the validation chunks from the
    training range ``[train_min_length, 1.1 T)``, as the code's validation does; the test
    set keeps ``[T, 1.1 T)``."""
    task = cls(length=40, train_min_length=20, val_lengths="train", num_val=800,
               num_test=80, eval_batch_size=4)  # fmt: skip
    assert {c.inputs.shape[1] for c in task.held_out("val")} == set(range(20, 44))
    assert {c.inputs.shape[1] for c in task.held_out("test")} <= set(range(40, 44))
    default = cls(length=40, train_min_length=20, num_val=80, eval_batch_size=4)
    assert {c.inputs.shape[1] for c in default.held_out("val")} <= set(range(40, 44))
    with pytest.raises(RnnexpError, match="task.val_lengths='all'"):
        cls(length=40, val_lengths="all")


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: AddingTask(length=20, seed=seed, num_test=64, eval_batch_size=16),
        lambda seed: TemporalOrderTask(length=20, seed=seed, num_test=64, eval_batch_size=16),
        lambda seed: PermutationTask(length=20, seed=seed, num_test=64, eval_batch_size=16),
        lambda seed: MemorizationTask(length=20, seed=seed, num_test=64, eval_batch_size=16),
    ],
    ids=["adding", "temporal_order", "permutation", "memorization"],
)
def test_determinism_by_seed(make) -> None:
    a, b, other = make(3), make(3), make(4)
    torch.testing.assert_close(a.sample(8, gen(5)).inputs, b.sample(8, gen(5)).inputs)
    for x, y in zip(a.held_out("test"), b.held_out("test"), strict=True):
        torch.testing.assert_close(x.inputs, y.inputs)
        torch.testing.assert_close(x.targets, y.targets)
    x, z = a.held_out("test")[0], other.held_out("test")[0]
    assert x.inputs.shape != z.inputs.shape or not torch.equal(x.inputs, z.inputs)
    val, test = a.held_out("val")[0], a.held_out("test")[0]
    assert val.inputs.shape != test.inputs.shape or not torch.equal(val.inputs, test.inputs)


def test_bad_settings() -> None:
    with pytest.raises(RnnexpError, match="task.length"):
        AddingTask(length=1)
    with pytest.raises(RnnexpError, match="task.length"):
        TemporalOrderTask(length=9)
    with pytest.raises(RnnexpError, match="task.bits"):
        TemporalOrderTask(bits=4)
    with pytest.raises(RnnexpError, match="n_values"):
        MemorizationTask(n_values=1)
    with pytest.raises(RnnexpError, match="num_symbols"):
        PermutationTask(num_symbols=2)


# --- adding and multiplication -----------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "combine"),
    [(AddingTask, lambda a, b: (a + b) / 2), (MultiplicationTask, lambda a, b: a * b)],
    ids=["adding", "multiplication"],
)
def test_marked_pair_inputs_and_targets(cls, combine) -> None:
    task = cls(length=50)
    assert (task.input_size, task.output_size, task.head) == (2, 1, "last_step")
    batch = task.sample(200, gen(1))
    n, steps, channels = batch.inputs.shape
    assert n == 200 and 50 <= steps < 55 and channels == 2 and batch.targets.shape == (200, 1)
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert torch.all(markers.sum(1) == 2)
    for seq in range(n):  # recompute each target from its markers
        first, second = markers[seq].nonzero().flatten().tolist()
        assert 0 <= first < 0.1 * steps <= second < 0.5 * steps
        expected = combine(values[seq, first], values[seq, second])
        torch.testing.assert_close(batch.targets[seq, 0], expected)


def test_hand_built_adding_example() -> None:
    task = AddingTask(length=10)
    batch = task.sample(1, gen(7))
    inputs = batch.inputs[0]
    marked = inputs[inputs[:, 1] == 1, 0]
    assert batch.inputs.shape[1] == 10  # [10, 11) holds only 10
    torch.testing.assert_close(batch.targets[0, 0], marked.mean())


@pytest.mark.parametrize("cls", [AddingTask, MultiplicationTask])
def test_regression_success_criterion(cls) -> None:
    task = cls(length=20, num_test=500, eval_batch_size=200)  # chunks 200, 200, 100
    batches = task.held_out("test")
    targets = [b.targets for b in batches]
    perfect = task.score(targets, batches)
    assert perfect == {
        "loss": 0.0,
        "error_rate": 0.0,
        "accuracy": 1.0,
        "solved": 1.0,
        "error_rate_pascanu": 0.0,
        "error_rate_hs97": 0.0,
    }
    close = task.score([t + 0.19 for t in targets], batches)  # squared error 0.0361
    assert close["error_rate"] == 0.0 and close["solved"] == 1.0
    assert close["error_rate_hs97"] == 1.0  # |error| 0.19: wrong under HS97's rule
    off = task.score([t - 0.21 for t in targets], batches)  # squared error 0.0441
    assert off["error_rate"] == 1.0 and off["solved"] == 0.0
    constant = task.score([torch.full_like(t, 0.5) for t in targets], batches)
    assert constant["error_rate"] > 0.1 and constant["solved"] == 0.0
    assert constant["accuracy"] == pytest.approx(1 - constant["error_rate"])


def hand_made(errors: list[float], target: float = 0.5) -> tuple[list, list[Batch]]:
    """One chunk: ``len(errors)`` sequences with ``target``, predictions ``target + e``."""
    targets = torch.full((len(errors), 1), target)
    batch = Batch(inputs=torch.zeros(len(errors), 3, 2), targets=targets)
    return [targets + torch.tensor(errors).unsqueeze(1)], [batch]


@pytest.mark.parametrize("cls", [AddingTask, MultiplicationTask])
def test_both_criteria_on_a_hand_made_batch(cls) -> None:
    """Pascanu: wrong when e^2 > 0.04 (|e| > 0.2); HS97: correct only when |e| < 0.04.
    The errors are exact binary fractions, so the comparisons are exact."""
    outputs, batches = hand_made([0.0, 0.03125, -0.0625, 0.1875, -0.25, 0.5, -0.015625, 0.125])
    pascanu_wrong, hs97_wrong = 2 / 8, 5 / 8  # |e| > 0.2: 0.25, 0.5; |e| >= 0.04: five
    for criterion, expected in (("pascanu", pascanu_wrong), ("hs97", hs97_wrong)):
        task = cls(length=20, criterion=criterion)
        got = task.score(outputs, batches)
        assert got["error_rate"] == expected and got["accuracy"] == 1 - expected
        assert got["solved"] == 0.0
        assert got["error_rate_pascanu"] == pascanu_wrong
        assert got["error_rate_hs97"] == hs97_wrong
        assert got["loss"] == pytest.approx(
            sum(e * e for e in [0.03125, 0.0625, 0.1875, 0.25, 0.5, 0.015625, 0.125]) / 8
        )
    # the form chooses the rule unless task.criterion says otherwise
    assert cls(length=20).criterion == "pascanu"
    assert cls(length=20, form="hs97").criterion == "hs97"
    assert cls(length=20, form="hs97", criterion="pascanu").criterion == "pascanu"


def test_criteria_on_the_borderline() -> None:
    """Exactly at the bound: HS97's |e| < tol is strict (|e| = tol is wrong), Pascanu's
    e^2 > tol is strict (e^2 = tol is correct). tol = 1/16 and its square are exact."""
    outputs, batches = hand_made([0.0625, -0.0625, 0.0625 - 2**-20])
    task = AddingTask(length=20, tolerance=0.0625**2, abs_tolerance=0.0625)
    got = task.score(outputs, batches)
    assert got["error_rate_hs97"] == pytest.approx(2 / 3)  # the last one is just inside
    assert got["error_rate_pascanu"] == 0.0  # e^2 == tolerance is not above it
    outputs, batches = hand_made([0.0625 + 2**-20])
    assert task.score(outputs, batches)["error_rate_pascanu"] == 1.0
    # the default bounds: 0.039 passes HS97's rule, 0.041 fails it; both pass Pascanu's
    outputs, batches = hand_made([0.039, -0.039, 0.041, -0.041])
    got = AddingTask(length=20, form="hs97").score(outputs, batches)
    assert got["error_rate"] == 0.5 and got["error_rate_pascanu"] == 0.0


# --- HS97's form (task.form=hs97) ------------------------------------------------


def test_hs97_lengths_are_drawn_from_t_to_t_plus_t_over_10() -> None:
    generator = gen()
    assert {draw_hs97_length(100, generator) for _ in range(600)} == set(range(100, 111))
    assert {draw_hs97_length(55, generator) for _ in range(300)} == set(range(55, 61))
    assert {draw_hs97_length(9, generator) for _ in range(20)} == {9}
    assert {draw_hs97_length(50, generator, 20) for _ in range(600)} == set(range(20, 56))
    task = AddingTask(length=50, form="hs97", num_test=80, eval_batch_size=4)
    stream = task.train_stream(2, seed=0)
    assert {next(stream).inputs.shape[1] for _ in range(200)} == set(range(50, 56))
    assert {c.inputs.shape[1] for c in task.held_out("test")} <= set(range(50, 56))


def test_hs97_positions_follow_the_x1_and_x2_rules() -> None:
    """X1 uniform over the first 10 pairs; X2 uniform over the first T/2 - 1 pairs other
    than X1 (T = 50: 24 candidates, among steps 0..24)."""
    first, second = hs97_positions(100_000, 50, gen(2))
    assert set(first.tolist()) == set(range(10)) and torch.all(first != second)
    counts = torch.bincount(first, minlength=10).float() / 100_000
    assert torch.all((counts - 0.1).abs() < 0.005)
    for x1 in (0, 5, 9):  # given X1, X2 covers exactly the 24 other steps 0..24, uniformly
        x2 = second[first == x1]
        assert set(x2.tolist()) == set(range(25)) - {x1}
        share = torch.bincount(x2, minlength=25).float()[torch.arange(25) != x1] / len(x2)
        assert torch.all((share - 1 / 24).abs() < 0.015)


@pytest.mark.parametrize(
    ("cls", "low", "neutral", "combine"),
    [
        (AddingTask, -1.0, 0.0, lambda a, b: 0.5 + (a + b) / 4),
        (MultiplicationTask, 0.0, 1.0, lambda a, b: a * b),
    ],
    ids=["adding", "multiplication"],
)
def test_hs97_inputs_markers_and_targets(cls, low, neutral, combine) -> None:
    task = cls(length=50, form="hs97")
    batch = task.sample(4000, gen(3))
    n, steps, _ = batch.inputs.shape
    assert 50 <= steps <= 55
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert values.min() >= low and values[:, 1:].max() < 1  # U[-1, 1] (adding) or U[0, 1]
    assert values.mean().item() == pytest.approx((low + 1) / 2, abs=0.01)
    assert set(markers.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.all((markers == 1).sum(1) == 2) and torch.all(markers[:, -1] == -1)
    first_marked = markers[:, 0] == 1
    assert torch.all(markers[~first_marked, 0] == -1)  # -1 on the first pair unless marked
    assert torch.all((markers == -1).sum(1) == 2 - first_marked.long())
    assert torch.all((markers[:, 1:-1] == -1).sum(1) == 0)
    marked = [row.nonzero().flatten().tolist() for row in markers == 1]
    assert all(a < 10 and b <= 50 // 2 - 1 for a, b in marked)  # X1 first ten, X2 <= T/2-1
    for seq in range(n):  # each target from its two marked values, as the net sees them
        a, b = marked[seq]
        torch.testing.assert_close(batch.targets[seq, 0], combine(values[seq, a], values[seq, b]))
    # X1 := neutral when X1 is the first pair (P = 1/10), never otherwise: the values are
    # continuous, so an exact neutral value marks those sequences
    neutral_first = first_marked & (values[:, 0] == neutral)
    assert 0.08 < neutral_first.float().mean() < 0.12
    assert torch.all(values[:, 1:] != neutral)


@pytest.mark.parametrize(
    ("cls", "neutral", "target"),
    [(AddingTask, 0.0, 0.5 + (0.0 + 0.75) / 4), (MultiplicationTask, 1.0, 1.0 * 0.75)],
    ids=["adding", "multiplication"],
)
def test_hs97_hand_built_sequence(cls, neutral, target, monkeypatch) -> None:
    """X1 on the first pair and X2 on step 5 (positions fixed by hand): the first pair's
    marker is 1 and its value HS97's neutral one; the target uses X2 = the value at 5."""

    def fixed(batch_size: int, length: int, generator: torch.Generator):
        del length, generator
        return torch.zeros(batch_size, dtype=torch.long), torch.full((batch_size,), 5)

    monkeypatch.setattr(pascanu, "hs97_positions", fixed)
    task = cls(length=12, form="hs97")
    batch = task.sample_length(1, 12, gen(4))
    batch.inputs[0, 5, 0] = 0.75  # a hand-chosen X2; recompute the target
    values, markers = batch.inputs[0, :, 0], batch.inputs[0, :, 1]
    assert markers.tolist() == [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0, -1.0]
    assert values[0] == neutral
    assert task.combine_hs97(values[0], values[5]).item() == pytest.approx(target)
    # and unpatched positions with X2 on step 5 only: X1 elsewhere, -1 on the first pair
    monkeypatch.setattr(
        pascanu, "hs97_positions", lambda b, t, g: (torch.full((b,), 3), torch.full((b,), 5))
    )
    batch = task.sample_length(1, 13, gen(4))
    markers = batch.inputs[0, :, 1]
    assert markers.tolist() == [-1.0, 0, 0, 1.0, 0, 1.0, 0, 0, 0, 0, 0, 0, -1.0]
    a, b = batch.inputs[0, 3, 0], batch.inputs[0, 5, 0]
    torch.testing.assert_close(batch.targets[0, 0], task.combine_hs97(a, b))


def test_hs97_settings() -> None:
    with pytest.raises(RnnexpError, match="task.form"):
        AddingTask(form="hs98")
    with pytest.raises(RnnexpError, match="task.criterion"):
        MultiplicationTask(criterion="mse")
    with pytest.raises(RnnexpError, match="task.form=hs97 needs task.length"):
        AddingTask(length=10, form="hs97")
    with pytest.raises(RnnexpError, match="task.form=hs97 needs task.length"):
        AddingTask(length=40, form="hs97", train_min_length=8)
    AddingTask(length=10)  # the Pascanu form has no such bound


def test_hs97_x2_window_on_shorter_training_sequences(monkeypatch) -> None:
    """With train_min_length, a training sequence of l < T steps takes X2 from its own
    first l/2 - 1 pairs (T/2 - 1 from l = T on, the held-out sequences)."""
    seen: list[tuple[int, int]] = []

    def spy(batch_size: int, length: int, generator: torch.Generator):
        seen.append((length, steps_now[0]))
        return hs97_positions(batch_size, length, generator)

    steps_now = [0]
    real = MultiplicationTask.sample_length

    def sample_length(self, batch_size, steps, generator):
        steps_now[0] = steps
        return real(self, batch_size, steps, generator)

    monkeypatch.setattr(pascanu, "hs97_positions", spy)
    monkeypatch.setattr(MultiplicationTask, "sample_length", sample_length)
    task = MultiplicationTask(length=40, form="hs97", train_min_length=11)
    stream = task.train_stream(2, seed=0)
    for _ in range(100):
        next(stream)
    assert {steps for _, steps in seen} == set(range(11, 45))
    assert all(length == min(steps, 40) for length, steps in seen)


# --- temporal order ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "windows"),
    [(2, [(0.1, 0.2), (0.5, 0.6)]), (3, [(0.1, 0.2), (0.3, 0.4), (0.6, 0.7)])],
)
def test_temporal_order_symbols_and_classes(bits: int, windows) -> None:
    task = TemporalOrderTask(length=50, bits=bits)
    assert (task.input_size, task.output_size, task.head) == (6, 2**bits, "last_step")
    batch = task.sample(300, gen(2))
    n, steps, _ = batch.inputs.shape
    assert batch.inputs.shape == (300, 50, 6)  # exactly T, as the code
    assert batch.targets.shape == (300,) and batch.targets.dtype == torch.long
    assert torch.all(batch.inputs.sum(-1) == 1)  # one-hot
    symbols = batch.inputs.argmax(-1)
    assert set(batch.targets.tolist()) == set(range(2**bits))
    for seq in range(n):
        where = (symbols[seq] < 2).nonzero().flatten().tolist()  # the A/B steps
        assert len(where) == bits
        for p, (start, stop) in zip(where, windows, strict=True):
            assert start * steps <= p < stop * steps
        values = symbols[seq, where].tolist()  # A = 0, B = 1
        assert batch.targets[seq] == sum(v << i for i, v in enumerate(values))


def test_temporal_order_hand_inspected_example() -> None:
    batch = TemporalOrderTask(length=10, bits=2).sample(1, gen(0))
    symbols = batch.inputs[0].argmax(-1).tolist()
    # length 10: the relevant steps are 1 (window [1, 2)) and 5 (window [5, 6))
    assert all(s >= 2 for i, s in enumerate(symbols) if i not in (1, 5))
    assert batch.targets[0] == symbols[1] + 2 * symbols[5]


def code_window(steps: int, start: float) -> tuple[int, int]:
    """The paper's code's window for a relevant symbol: ``int(start l)`` plus
    ``randint(int(0.1 l))``, i.e. ``[floor(start l), floor(start l) + floor(l / 10))``."""
    return int(steps * start), int(steps * start) + int(steps * 0.1)


@pytest.mark.parametrize("bits", [2, 3])
def test_temporal_order_windows_match_the_code_at_multiples_of_ten(bits: int) -> None:
    """tempOrder.py / tempOrder3bit.py: the same windows for every l = 10, 20, ...;
    in between rnnexp's [ceil(a l), ceil(b l)) may sit one step later (the README says so)."""
    windows = WINDOWS[bits]
    for steps in range(10, 1001, 10):
        assert [window(steps, a, b) for a, b in windows] == [
            code_window(steps, a) for a, _ in windows
        ]
    assert window(55, 0.1, 0.2) == (6, 11) and code_window(55, 0.1) == (5, 10)


def test_three_bit_temporal_order_as_the_code_at_length_100() -> None:
    """8 classes, each 1/8 of the sequences; A/B at [10, 20), [30, 40), [60, 70) exactly
    (tempOrder3bit.py at l = 100); class v0 + 2 v1 + 4 v2."""
    task = TemporalOrderTask(length=100, bits=3)
    assert (task.output_size, task.input_size) == (8, 6)
    batch = task.sample(16_000, gen(9))
    assert batch.inputs.shape == (16_000, 100, 6)
    share = torch.bincount(batch.targets, minlength=8).float() / 16_000
    assert torch.all((share - 1 / 8).abs() < 0.012), share
    symbols = batch.inputs.argmax(-1)
    where = (symbols < 2).nonzero()  # (sequence, step) pairs, three per sequence
    steps = where[:, 1].view(16_000, 3)
    for i, (a, _) in enumerate(WINDOWS[3]):
        assert set(steps[:, i].tolist()) == set(range(*code_window(100, a)))
    values = symbols.gather(1, steps)  # A = 0, B = 1 in window order
    assert torch.equal(batch.targets, values[:, 0] + 2 * values[:, 1] + 4 * values[:, 2])
    assert set(symbols[symbols >= 2].unique().tolist()) == {2, 3, 4, 5}


def test_temporal_order_hand_built_three_bit_sequence(monkeypatch) -> None:
    """Relevant steps fixed by hand at 1, 3, 6 of a length-10 sequence: B, A, B is class
    1 + 0 + 4 = 5."""
    fixed = iter([torch.tensor([1]), torch.tensor([3]), torch.tensor([6])])
    monkeypatch.setattr(temporal_order, "window_positions", lambda *args: next(fixed))
    real_randint = torch.randint

    def randint(low, high=None, size=None, generator=None):
        if high == 2:  # the A/B draw: B, A, B
            return torch.tensor([[1, 0, 1]])
        return real_randint(low, high, size, generator=generator)

    monkeypatch.setattr(temporal_order.torch, "randint", randint)
    batch = TemporalOrderTask(length=10, bits=3).sample_length(1, 10, gen(0))
    symbols = batch.inputs[0].argmax(-1).tolist()
    assert [symbols[i] for i in (1, 3, 6)] == [1, 0, 1]
    assert all(s >= 2 for i, s in enumerate(symbols) if i not in (1, 3, 6))
    assert batch.targets.tolist() == [5]


def test_temporal_order_success_criterion() -> None:
    task = TemporalOrderTask(length=20, bits=3, num_test=400, eval_batch_size=150)
    batches = task.held_out("test")
    perfect = task.score([logits_for(b.targets, 8) for b in batches], batches)
    assert perfect["error_rate"] == 0.0 and perfect["solved"] == 1.0 and perfect["loss"] < 1e-3
    constant = task.score([torch.zeros(len(b.targets), 8) for b in batches], batches)
    assert constant["error_rate"] > 0.7 and constant["solved"] == 0.0  # argmax: class 0
    assert constant["loss"] == pytest.approx(torch.log(torch.tensor(8.0)).item())


# --- permutation -------------------------------------------------------------------


def test_permutation_symbols_and_target() -> None:
    task = PermutationTask(length=50)
    assert (task.input_size, task.output_size, task.head) == (100, 2, "last_step")
    batch = task.sample(200, gen(3))
    _, steps, _ = batch.inputs.shape
    assert batch.inputs.shape == (200, 50, 100)  # exactly T, as the code
    assert torch.all(batch.inputs.sum(-1) == 1)
    symbols = batch.inputs.argmax(-1)
    assert torch.equal(symbols[:, 0], batch.targets)
    assert set(batch.targets.tolist()) == {0, 1}
    assert symbols[:, 1:].min() >= 2 and symbols[:, 1:].max() <= 99


def test_permutation_success_criterion() -> None:
    task = PermutationTask(length=10, num_test=300, eval_batch_size=100)
    batches = task.held_out("test")
    perfect = task.score([logits_for(b.targets, 2) for b in batches], batches)
    assert perfect["error_rate"] == 0.0 and perfect["solved"] == 1.0
    constant = task.score(
        [torch.tensor([[1.0, 0.0]]).expand(len(b.targets), 2) for b in batches], batches
    )
    assert 0.3 < constant["error_rate"] < 0.7 and constant["solved"] == 0.0


# --- memorization ------------------------------------------------------------------


def test_memorization_layout_as_the_code() -> None:
    """memorization.py: l + 2 n_pos steps; the cue at n_pos + l; the pattern is the
    target from the cue step on (the cue step names the first symbol)."""
    task = MemorizationTask(length=20, n_values=2, n_pos=5)
    assert (task.input_size, task.output_size, task.head) == (4, 3, "every_step")
    batch = task.sample(50, gen(4))
    assert batch.inputs.shape == (50, 20 + 2 * 5, 4) and batch.targets.shape == (50, 30)
    symbols = batch.inputs.argmax(-1)
    assert torch.all(batch.inputs.sum(-1) == 1)
    pattern = symbols[:, :5]
    assert pattern.max() <= 1
    assert torch.all(symbols[:, 5:25] == task.blank)
    assert torch.all(symbols[:, 25] == task.go)  # the cue at step l + n_pos
    assert torch.all(symbols[:, 26:] == task.blank)
    assert torch.all(batch.targets[:, :25] == task.blank)
    assert torch.equal(batch.targets[:, 25:], pattern)  # from the cue step on


def test_memorization_hand_built_sequence(monkeypatch) -> None:
    """Pattern 1 0 1 (n_pos 3, n_values 2), l = 2: inputs 1 0 1 _ _ G _ _ and targets
    _ _ _ _ _ 1 0 1 (_ blank = 2, G go = 3): recall starts on the cue step."""
    real_randint = torch.randint
    monkeypatch.setattr(
        memorization.torch,
        "randint",
        lambda low, high, size, generator=None: (
            torch.tensor([[1, 0, 1]])
            if size == (1, 3)
            else real_randint(low, high, size, generator=generator)
        ),
    )
    batch = MemorizationTask(length=2, n_pos=3).sample_length(1, 2, gen(0))
    assert batch.inputs[0].argmax(-1).tolist() == [1, 0, 1, 2, 2, 3, 2, 2]
    assert batch.targets[0].tolist() == [2, 2, 2, 2, 2, 1, 0, 1]


def test_memorization_20_bit_setting() -> None:
    task = MemorizationTask(length=10, n_values=5, n_pos=10)
    assert (task.input_size, task.output_size) == (7, 6)
    batch = task.sample(100, gen(0))
    assert batch.inputs.shape[1] == 10 + 2 * 10
    assert set(batch.targets[:, -10:].unique().tolist()) == set(range(5))


def test_memorization_scores_every_step_as_the_code() -> None:
    """RNN.py's report='all': a sequence is wrong when any step is, blank targets too."""
    task = MemorizationTask(length=8, n_pos=3, num_test=200, eval_batch_size=64)
    batches = task.held_out("test")
    perfect = [logits_for(b.targets, 3) for b in batches]
    assert task.score(perfect, batches)["solved"] == 1.0
    blank = [logits_for(torch.full_like(b.targets, task.blank), 3) for b in batches]
    assert task.score(blank, batches)["error_rate"] == 1.0  # no pattern step right
    one_off = [p.clone() for p in perfect]
    one_off[0][0, -1] = one_off[0][0, -1].roll(1)  # one pattern step of one sequence wrong
    assert task.score(one_off, batches)["error_rate"] == pytest.approx(1 / 200)
    cue = [p.clone() for p in perfect]
    cue[0][1, 8 + 3] = cue[0][1, 8 + 3].roll(1)  # the cue step: the first pattern symbol
    assert task.score(cue, batches)["error_rate"] == pytest.approx(1 / 200)
    early = [p.clone() for p in perfect]
    early[0][:, 0] = early[0][:, 0].roll(1, dims=-1)  # a blank step of 64 sequences wrong
    assert task.score(early, batches)["error_rate"] == pytest.approx(64 / 200)


def test_classification_score_handles_chunks_of_different_lengths() -> None:
    targets = [torch.zeros(2, 4, dtype=torch.long), torch.ones(3, 7, dtype=torch.long)]
    outputs = [logits_for(t, 2) for t in targets]
    outputs[1][2, 3] = logits_for(torch.tensor(0), 2)  # sequence 5 of 5 wrong at one step
    result = classification_score(outputs, targets)
    assert result["error_rate"] == pytest.approx(1 / 5) and result["solved"] == 0.0


# --- end to end --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        ("adding", []),
        ("adding", ["task.form=hs97"]),
        ("multiplication", ["task.form=hs97", "task.criterion=pascanu"]),
        ("temporal_order", []),
        ("memorization", []),
    ],
    ids=["adding", "adding-hs97", "multiplication-hs97", "temporal_order", "memorization"],
)
def test_trains_end_to_end(task: str, extra: list[str], tmp_path) -> None:
    from conftest import compose_config, tiny

    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(*tiny(task), "cell=elman", *extra)
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed"
    assert set(metrics["final"]) >= {"loss", "error_rate", "accuracy", "solved"}
    assert metrics["best"]["metric"] == "error_rate"
    if task in ("adding", "multiplication"):  # both rules, whichever one is chosen
        assert {"error_rate_pascanu", "error_rate_hs97"} <= set(metrics["final"])
