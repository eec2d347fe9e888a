"""Every option of every config group composes and builds its object."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, TINY_TASK, compose_config, tiny

from rnnexp.config import GROUPS, build, build_with, choices
from rnnexp.errors import RnnexpError
from rnnexp.model import build_model

# experiments pick their own task: test_every_experiment_runs_a_smoke_version covers them
OPTIONS = [(g, option) for g in GROUPS if g != "experiment" for option in choices(g)]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group: str, option: str) -> None:
    overrides = tiny(option) if group == "task" else [*TINY, f"{group}={option}"]
    cfg = compose_config(*overrides)
    task = build(cfg.task, "task")
    model = build_model(cfg, task)
    output, _ = model(next(task.train_stream(2, seed=0)).inputs)
    assert output.shape[-1] == task.output_size
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_with(cfg.optim, "optim", params)
    if isinstance(optimizer, torch.optim.Optimizer):  # optim=ridge is not one
        build_with(cfg.sched, "sched", optimizer)
    build(cfg.clip, "clip")


def test_memory_long_sets_each_gated_cells_own_bias() -> None:
    assert compose_config(*TINY, "cell=lstm", "memory=long").cell.forget_bias == 5.0
    assert compose_config(*TINY, "cell=gru", "memory=long").cell.update_bias == 3.0
    assert "update_bias" not in compose_config(*TINY, "cell=elman", "memory=long").cell
    assert compose_config(*TINY, "cell=lstm").cell.forget_bias == 1.0  # memory=default
    override = compose_config(*TINY, "cell=lstm", "memory=long", "cell.forget_bias=2")
    assert override.cell.forget_bias == 2.0  # the command line still wins


def test_every_task_has_tiny_test_settings() -> None:
    assert set(choices("task")) == set(TINY_TASK)


def test_every_group_has_options_with_descriptions() -> None:
    for group in ("cell", "task", "optim", "sched", "clip"):
        assert choices(group), group
        assert all(choices(group).values()), f"{group}: a yaml lacks its first-line comment"
    with pytest.raises(RnnexpError, match="unknown config group"):
        choices("nope")


def test_build_turns_config_errors_into_one_line() -> None:
    cfg = compose_config(*TINY, "task.max_duration=0")
    with pytest.raises(RnnexpError, match="max_duration"):
        build(cfg.task, "task")
    # a key the target does not take: named, with the keys it does take (not the params)
    cfg = compose_config(*TINY, "+optim.colour=red", "+task.calibrate=true")
    with pytest.raises(
        RnnexpError, match=r"optim.colour is not a key of torch.optim.Adam: .* one of lr, betas"
    ):
        build_with(cfg.optim, "optim", [torch.zeros(1, requires_grad=True)])
    with pytest.raises(
        RnnexpError, match=r"task.calibrate is not a key of \S+TimerTask: .*max_duration"
    ):
        build(cfg.task, "task")
    cfg = compose_config(*TINY, "optim.lr=-1")
    with pytest.raises(RnnexpError, match="Invalid learning rate"):
        build_with(cfg.optim, "optim", [torch.zeros(1, requires_grad=True)])


@pytest.mark.parametrize("experiment", sorted(choices("experiment")))
def test_every_experiment_runs_a_smoke_version(experiment: str, tmp_path) -> None:
    from rnnexp.runinfo import RunRecord
    from rnnexp.train import train

    cfg = compose_config(f"experiment={experiment}", "train.max_steps=3", "train.eval_every=3",
                         "task.num_val=8", "task.num_test=8", "model.hidden_size=8",
                         "train.progress=false", "train.device=cpu")  # fmt: skip
    assert train(cfg, tmp_path, RunRecord(tmp_path))["status"] == "completed"
