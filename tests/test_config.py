"""Every option of every config group composes and builds its object."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import TINY, compose_config, tiny

from rnnexp.config import (
    GROUPS,
    _special_keys,
    build,
    build_with,
    check_arguments,
    choices,
    config_dir,
)
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRFScores
from rnnexp.nn.model import build_model
from rnnexp.schema import check_config

# experiments pick their own task: test_every_experiment_runs_a_smoke_version covers them;
# debug options: test_every_debug_option_composes_with_every_task
OPTIONS = [(g, option) for g in GROUPS if g not in ("experiment", "debug") for option in choices(g)]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(group: str, option: str) -> None:
    overrides = tiny(option) if group == "task" else [*TINY, f"{group}={option}"]
    cfg = compose_config(*overrides)
    task = build(cfg.task, "task")
    spec = task.setup()
    model = build_model(cfg, spec)
    output, _ = model(next(task.train_stream(2, seed=0)).inputs)
    scores = output.emissions if isinstance(output, CRFScores) else output  # ner: the CRF's
    assert scores.shape[-1] == spec.output_size
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


DEBUG = [(debug, task) for debug in choices("debug") for task in choices("task")]


@pytest.mark.parametrize(("debug", "task"), DEBUG, ids=[f"{d}-{t}" for d, t in DEBUG])
def test_every_debug_option_composes_with_every_task(debug: str, task: str) -> None:
    cfg = compose_config(f"task={task}", f"debug={debug}")
    check_config(cfg)  # the schema's types and ranges; no new top-level key
    assert set(cfg) == set(compose_config(f"task={task}"))
    check_arguments(cfg.task, "task")  # the per-task sizes are keys of the task
    assert not cfg.train.progress and cfg.train.max_steps <= 20


def test_debug_options_are_plain_values_the_command_line_overrides() -> None:
    cfg = compose_config("task=timer", "debug=tiny", "train.max_steps=7")
    assert (cfg.task.max_duration, cfg.model.hidden_size, cfg.train.max_steps) == (5, 8, 7)
    # after an experiment in the defaults list: it shrinks the experiment's model too
    assert compose_config("experiment=timer_esn", "debug=tiny").model.hidden_size == 8
    assert compose_config("task=timer", "debug=fdr").model.hidden_size == 64
    for path in (config_dir() / "debug").glob("*.yaml"):
        assert path.read_text().startswith("# @package _global_\n"), path
    debug_task = sorted((config_dir() / "debug_task").glob("*.yaml"))
    assert debug_task, "conf/debug_task/ holds debug=tiny's per-task sizes"
    names = {f"{d}_{t}" for d in choices("debug") for t in choices("task")}
    for path in debug_task:  # <debug>_<task>.yaml: a renamed task leaves no stale file
        assert path.stem in names, path
        assert path.read_text().startswith("# @package _global_\n"), path
    for path in [*(config_dir() / "debug").glob("*.yaml"), *debug_task]:
        assert not _special_keys(yaml.safe_load(path.read_text()), ""), path  # nothing built


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
    # a task that passes **settings on to its base: the base's keys are named too
    cfg = compose_config("task=adding", "+task.colour=red")
    with pytest.raises(RnnexpError, match=r"task.colour is not a key of \S+AddingTask: .*form.*"
                       r"train_min_length"):  # fmt: skip
        build(cfg.task, "task")
    cfg = compose_config(*TINY, "optim.lr=-1")
    with pytest.raises(RnnexpError, match="Invalid learning rate"):
        build_with(cfg.optim, "optim", [torch.zeros(1, requires_grad=True)])


@pytest.mark.parametrize("experiment", sorted(choices("experiment")))
def test_every_experiment_runs_a_smoke_version(experiment: str, tmp_path) -> None:
    from rnnexp.train.loop import train
    from rnnexp.train.record import RunRecord

    cfg = compose_config(f"experiment={experiment}", "train.max_steps=3", "train.eval_every=3",
                         "task.num_val=8", "task.num_test=8", "model.hidden_size=8",
                         "train.progress=false", "train.device=cpu")  # fmt: skip
    assert train(cfg, tmp_path, RunRecord(tmp_path))["status"] == "completed"
