"""``optim=nesterov``: Sutskever et al. 2013's momentum schedule against hand-computed values,
followed by the optimizer's parameter groups in a real run, logged as ``train/momentum``,
and continued exactly by ``train.resume``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.momentum import MomentumSchedule, NesterovSGD, sutskever_momentum
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import build_update

# eq. 5, 1 - 2^(-1 - log2(k)) with k = floor(t/250) + 1, worked out by hand: 1 - 1/(2k)
SUTSKEVER = [
    (0, 0.99, 0.5),  # k = 1: 1 - 2^-1
    (249, 0.99, 0.5),
    (250, 0.99, 0.75),  # k = 2: 1 - 2^-2
    (500, 0.99, 5 / 6),  # k = 3: 1 - 2^(-1 - log2 3) = 1 - 1/6
    (999, 0.99, 0.875),  # k = 4: 1 - 2^-3
    (1000, 0.9, 0.9),  # k = 5: 1 - 1/10 = 0.9, the cap
    (5000, 0.9, 0.9),  # k = 21: 0.976..., capped
    (12249, 0.99, 1 - 1 / 98),  # k = 49: 0.98979...
    (12250, 0.99, 0.99),  # k = 50: 1 - 1/100, reaches the cap
    (24749, 0.995, 1 - 1 / 198),  # k = 99
    (24750, 0.995, 0.995),  # k = 100
    (124749, 0.999, 1 - 1 / 998),  # k = 499
    (124750, 0.999, 0.999),  # k = 500
    (3000, 0.0, 0.0),  # μ_max = 0: plain SGD (the paper's "0" column)
]


@pytest.mark.parametrize(("t", "momentum_max", "want"), SUTSKEVER)
def test_sutskever_schedule_by_hand(t: int, momentum_max: float, want: float) -> None:
    assert sutskever_momentum(t, momentum_max) == pytest.approx(want, rel=1e-12)
    assert MomentumSchedule("sutskever", momentum_max)(t) == pytest.approx(want, rel=1e-12)


def test_rnn_constant_and_final_phase() -> None:
    rnn = MomentumSchedule("rnn", 0.995)  # §4.2: 0.9 for the first 1000 updates, then μ_0
    assert [rnn(t) for t in (0, 999, 1000, 49999)] == [0.9, 0.9, 0.995, 0.995]
    assert MomentumSchedule("constant", 0.98)(0) == MomentumSchedule("constant", 0.98)(10**6)
    # §3: μ lowered to 0.9 for the last updates (here from t = 20000), 0 stays 0
    final = MomentumSchedule("sutskever", 0.995, final_from=20000)
    assert final(19999) == pytest.approx(1 - 1 / 160)  # k = 80
    assert final(20000) == final(10**6) == 0.9
    assert MomentumSchedule("sutskever", 0.0, final_from=0)(5) == 0.0
    assert MomentumSchedule("sutskever", 0.99, final_from=0)(0) == 0.5  # lowered, never raised


def test_the_optimizer_sets_momentum_before_each_update_and_counts() -> None:
    """One parameter, constant gradient 1: torch's NAG form with μ_t from the schedule."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = NesterovSGD([weight], lr=0.1, schedule="rnn", momentum_max=0.5,
                            warmup_steps=2, warmup_momentum=0.9)  # fmt: skip
    assert optimizer.param_groups[0]["nesterov"] is True
    buffer, value = 0.0, 0.0
    for t, mu in enumerate([0.9, 0.9, 0.5, 0.5]):
        weight.grad = torch.ones(1)
        optimizer.step()
        buffer = 1.0 if t == 0 else mu * buffer + 1.0  # b_1 = g_1
        value -= 0.1 * (1.0 + mu * buffer)
        assert optimizer.param_groups[0]["momentum"] == mu
        assert optimizer.param_groups[0]["updates"] == t + 1
        assert weight.item() == pytest.approx(value, rel=1e-6)
    classical = NesterovSGD([torch.nn.Parameter(torch.zeros(1))], nesterov=False)
    assert classical.param_groups[0]["nesterov"] is False
    assert NesterovSGD([torch.nn.Parameter(torch.zeros(1))], momentum_max=0.0).param_groups[0][
        "nesterov"
    ] is False  # fmt: skip


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optim.momentum_max=1.0", r"optim\.momentum_max=1\.0 is a momentum coefficient"),
        ("optim.momentum_max=-0.1", r"optim\.momentum_max=-0\.1"),
        ("optim.final_momentum=2", r"optim\.final_momentum=2"),
        ("optim.final_from=-5", r"optim\.final_from=-5 must be >= 0"),
        ("optim.warmup_steps=-1", r"optim\.warmup_steps=-1"),
        ("optim.schedule=cosine", r"optim\.schedule"),
    ],
)
def test_bad_values_are_one_line(override: str, named: str) -> None:
    cfg = compose_config(*tiny("adding"), "optim=nesterov", override)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    with pytest.raises(RnnexpError, match=named) as err:
        build_update(cfg, model, task, None, torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_bad_value_on_the_command_line_exits_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("train", *tiny("adding"), "optim=nesterov", "optim.momentum_max=1.5",
                   cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: optim.momentum_max=1.5 is a momentum coefficient; give one in [0, 1), "
        "e.g. 0.9 or 0.99"
    ]


# schedule=rnn with short phases, so that a 20-step run crosses both switches: μ = 0.9 for
# t < 7, 0.98 up to t = 14, then the final phase at 0.5
RUN = ["optim=nesterov", "cell=elman", "cell.init=esn", "sched=constant", "optim.lr=0.01",
       "optim.schedule=rnn", "optim.warmup_steps=7", "optim.momentum_max=0.98",
       "optim.final_from=15", "optim.final_momentum=0.5", "train.eval_every=10"]  # fmt: skip
SCHEDULE = MomentumSchedule("rnn", 0.98, 7, 0.9, 15, 0.5)


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*tiny("adding"), *RUN, *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="adding", cell=cfg.cell.name))


def logged(run_dir: Path, name: str) -> dict[int, float]:
    """``train/<name>`` by step, from the TensorBoard events."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(f"train/{name}")}


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole")
    metrics = run(run_dir, "train.max_steps=20")
    assert metrics["status"] == "completed"
    return run_dir


def test_a_real_run_follows_the_schedule_and_logs_it(whole: Path) -> None:
    cfg = compose_config(*tiny("adding"), *RUN)
    assert cfg.optim._target_ == "rnnexp.train.momentum.NesterovSGD"  # the shipped config
    momentum = logged(whole, "momentum")  # the μ of each step's update (t = step - 1)
    assert momentum == pytest.approx({step: SCHEDULE(step - 1) for step in range(1, 21)})
    assert [momentum[1], momentum[8], momentum[16]] == pytest.approx([0.9, 0.98, 0.5])
    rows = list(csv.DictReader((whole / "history.csv").open()))
    in_csv = {int(r["step"]): float(r["value"]) for r in rows if r["name"] == "train/momentum"}
    assert in_csv == pytest.approx(momentum)
    saved = Checkpoint.load(whole / "checkpoints" / "last.pt")
    (group,) = saved.update["optimizer"]["param_groups"]
    assert group["updates"] == 20 and group["momentum"] == SCHEDULE(19)
    assert group["nesterov"] is True and group["dampening"] == 0


def test_resume_mid_schedule_is_exact(whole: Path, tmp_path: Path) -> None:
    """Stopped at step 10 (between the two switches) and resumed to 20: the same μ and the
    same losses, bit for bit."""
    run(tmp_path / "first", "train.max_steps=10")
    run(tmp_path / "rest", "train.max_steps=20", f"train.resume={tmp_path / 'first'}")
    for name in ("momentum", "loss"):
        first, rest = logged(tmp_path / "first", name), logged(tmp_path / "rest", name)
        assert sorted(rest) == list(range(11, 21))
        assert {**first, **rest} == logged(whole, name), name


def test_plain_sgd_logs_its_constant_momentum(tmp_path: Path) -> None:
    cfg = compose_config(*tiny("adding"), "optim=momentum", "sched=constant",
                         "train.max_steps=3")  # fmt: skip
    train(cfg, tmp_path, RunRecord(tmp_path, task="adding", cell=cfg.cell.name))
    assert logged(tmp_path, "momentum") == pytest.approx({1: 0.9, 2: 0.9, 3: 0.9})
