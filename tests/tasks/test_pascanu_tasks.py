"""The Pascanu-2013 tasks: adding, multiplication, temporal_order, permutation,
memorization. Shapes, targets, lengths, determinism, the success criterion."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.adding import AddingTask
from rnnexp.tasks.memorization import MemorizationTask
from rnnexp.tasks.multiplication import MultiplicationTask
from rnnexp.tasks.pascanu import classification_score, draw_length, window
from rnnexp.tasks.permutation import PermutationTask
from rnnexp.tasks.temporal_order import TemporalOrderTask


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


@pytest.mark.parametrize(
    "cls", [AddingTask, MultiplicationTask, TemporalOrderTask, PermutationTask, MemorizationTask]
)
def test_train_min_length_mixes_shorter_training_sequences(cls) -> None:
    """As the paper's code with min_length < max_length: training batches draw their
    length from [train_min_length, 1.1 T); val and test keep [T, 1.1 T)."""
    task = cls(length=40, train_min_length=20, num_val=64, num_test=64, eval_batch_size=8)
    extra = 2 * task.n_pos + 1 if cls is MemorizationTask else 0  # pattern, cue, recall

    def length(batch) -> int:
        return batch.inputs.shape[1] - extra

    stream = task.train_stream(2, seed=0)
    assert {length(next(stream)) for _ in range(300)} == set(range(20, 44))  # ceil(44.0)
    for split in ("val", "test"):
        assert {length(c) for c in task.held_out(split)} <= set(range(40, 44))
    assert min(length(c) for c in task.held_out("train")) < 40  # the training mix
    stream = cls(length=40).train_stream(2, seed=0)
    assert {length(next(stream)) for _ in range(50)} <= set(range(40, 44))
    with pytest.raises(RnnexpError, match="task.train_min_length"):
        cls(length=40, train_min_length=41)


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
    assert perfect == {"loss": 0.0, "error_rate": 0.0, "accuracy": 1.0, "solved": 1.0}
    close = task.score([t + 0.19 for t in targets], batches)  # squared error 0.0361
    assert close["error_rate"] == 0.0 and close["solved"] == 1.0
    off = task.score([t - 0.21 for t in targets], batches)  # squared error 0.0441
    assert off["error_rate"] == 1.0 and off["solved"] == 0.0
    constant = task.score([torch.full_like(t, 0.5) for t in targets], batches)
    assert constant["error_rate"] > 0.1 and constant["solved"] == 0.0
    assert constant["accuracy"] == pytest.approx(1 - constant["error_rate"])


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
    assert batch.inputs.shape == (300, steps, 6) and 50 <= steps < 55
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
    assert batch.inputs.shape == (200, steps, 100) and 50 <= steps < 55
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


def test_memorization_layout() -> None:
    task = MemorizationTask(length=20, n_values=2, n_pos=5)
    assert (task.input_size, task.output_size, task.head) == (4, 3, "every_step")
    batch = task.sample(50, gen(4))
    n, total, _ = batch.inputs.shape
    blanks = total - 2 * 5 - 1
    assert 20 <= blanks < 22 and batch.targets.shape == (50, total)
    symbols = batch.inputs.argmax(-1)
    assert torch.all(batch.inputs.sum(-1) == 1)
    pattern = symbols[:, :5]
    assert pattern.max() <= 1
    assert torch.all(symbols[:, 5 : 5 + blanks] == task.blank)
    assert torch.all(symbols[:, 5 + blanks] == task.go)  # the cue at step l + n_pos
    assert torch.all(symbols[:, 6 + blanks :] == task.blank)
    assert torch.all(batch.targets[:, :-5] == task.blank)
    assert torch.equal(batch.targets[:, -5:], pattern)  # the pattern after the cue


def test_memorization_20_bit_setting() -> None:
    task = MemorizationTask(length=10, n_values=5, n_pos=10)
    assert (task.input_size, task.output_size) == (7, 6)
    batch = task.sample(100, gen(0))
    assert batch.inputs.shape[1] == 10 + 2 * 10 + 1
    assert set(batch.targets[:, -10:].unique().tolist()) == set(range(5))


def test_memorization_success_criterion() -> None:
    task = MemorizationTask(length=8, n_pos=3, num_test=200, eval_batch_size=64)
    batches = task.held_out("test")
    assert len({b.inputs.shape[1] for b in batches}) >= 1
    perfect = [logits_for(b.targets, 3) for b in batches]
    assert task.score(perfect, batches)["solved"] == 1.0
    blank = [logits_for(torch.full_like(b.targets, task.blank), 3) for b in batches]
    assert task.score(blank, batches)["error_rate"] == 1.0  # no pattern step right
    one_off = [p.clone() for p in perfect]
    one_off[0][0, -1] = one_off[0][0, -1].roll(1)  # one pattern step of one sequence wrong
    assert task.score(one_off, batches)["error_rate"] == pytest.approx(1 / 200)
    early = [p.clone() for p in perfect]
    early[0][:, 0] = early[0][:, 0].roll(1, dims=-1)  # wrong on a blank step: not counted
    assert task.score(early, batches)["error_rate"] == 0.0


def test_classification_score_handles_chunks_of_different_lengths() -> None:
    targets = [torch.zeros(2, 4, dtype=torch.long), torch.ones(3, 7, dtype=torch.long)]
    outputs = [logits_for(t, 2) for t in targets]
    outputs[1][2, 3] = logits_for(torch.tensor(0), 2)  # sequence 5 of 5 wrong at one step
    result = classification_score(outputs, targets)
    assert result["error_rate"] == pytest.approx(1 / 5) and result["solved"] == 0.0


# --- end to end --------------------------------------------------------------------


@pytest.mark.parametrize("task", ["adding", "temporal_order", "memorization"])
def test_trains_end_to_end(task: str, tmp_path) -> None:
    from conftest import compose_config, tiny

    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(*tiny(task), "cell=elman")
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed"
    assert set(metrics["final"]) >= {"loss", "error_rate", "accuracy", "solved"}
    assert metrics["best"]["metric"] == "error_rate"
