"""``train.resume`` continues the same run (changed settings are refused); ``train.init_from``
starts a new run from a checkpoint's weights with new settings, and its record says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config

from rnnexp.errors import RnnexpError
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.resume import changed_keys, flatten, resume_command

COMMON = ["sched=constant", "train.max_steps=10", "train.eval_every=5"]


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*TINY, *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cfg.cell.name))


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 10-step run with a constant schedule, and its overrides on record."""
    run_dir = tmp_path_factory.mktemp("first")
    run(run_dir, *COMMON)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["overrides"] = [*TINY, *COMMON]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_flatten_and_changed_keys() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    before, after = {"optim": {"lr": 1e-3}, "x": 1}, {"optim": {"lr": 0.5}, "y": 2}
    assert changed_keys(before, after) == {
        "optim.lr": (1e-3, 0.5),
        "x": (1, "<absent>"),
        "y": ("<absent>", 2),
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["optim.lr=0.5"], r"optim\.lr \(0\.003 -> 0\.5\)"),
        (["cell=lstm"], r"changes cell \('gru' -> 'lstm'\);"),  # the group, not its keys
        (["sched=cosine"], r"changes sched \('ConstantLR' -> 'CosineAnnealingLR'\)"),
        (["train.seed=3"], r"train\.seed"),
        (["model.hidden_size=16"], r"model\.hidden_size"),
    ],
)
def test_resume_refuses_a_changed_setting_in_one_line(
    first: Path, tmp_path: Path, overrides: list[str], named: str
) -> None:
    with pytest.raises(RnnexpError, match=named) as err:
        run(tmp_path, *COMMON, "train.max_steps=20", f"train.resume={first}", *overrides)
    message = str(err.value)
    assert "\n" not in message
    assert f"train.init_from={first}" in message  # the remedy
    assert "sched=constant" in message  # the run's own overrides, to repeat
    assert not (tmp_path / "checkpoints").exists()  # refused before anything was written


def test_extending_a_cosine_run_is_refused_with_the_remedy(tmp_path: Path) -> None:
    run(tmp_path / "cosine", "train.max_steps=10", "train.eval_every=5")
    with pytest.raises(RnnexpError, match=r"planned for 10 steps .* train\.init_from="):
        run(tmp_path / "more", "train.max_steps=20", f"train.resume={tmp_path / 'cosine'}")


def test_resume_with_allowed_changes_records_its_source_and_keeps_best(
    first: Path, tmp_path: Path
) -> None:
    stale = first / "checkpoints" / ".last.pt.999999999.tmp"  # from a writer killed with -9
    stale.write_bytes(b"partial")
    metrics = run(
        tmp_path, *COMMON, "train.max_steps=12", "train.eval_every=100", "train.log_every=3",
        f"train.resume={first}",
    )  # fmt: skip
    assert metrics["status"] == "completed" and metrics["steps"] == 12
    assert metrics["resumed_from"] == {"checkpoint": str(first / "checkpoints" / "last.pt"),
                                       "step": 10}  # fmt: skip
    # best.pt of the new folder: the source's best, or a later improvement
    best = Checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best.step == metrics["best"]["step"]
    assert not stale.exists()  # the source's folder is cleaned when it is resumed


def test_init_from_starts_a_new_run_from_the_weights_with_new_settings(
    first: Path, tmp_path: Path
) -> None:
    # lr 0: the weights stay those of the source's best.pt, so they must have been loaded
    metrics = run(
        tmp_path, "sched=constant", "optim=sgd", "optim.lr=0.0", "train.max_steps=5",
        "train.eval_every=5", f"train.init_from={first}",
    )  # fmt: skip
    source = Checkpoint.load(first / "checkpoints" / "best.pt")
    trained = Checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert trained.step == 5  # a new run: its own step count
    for name, tensor in source.model.items():
        assert torch.equal(tensor, trained.model[name]), name
    record = metrics["init_from"]
    assert record["checkpoint"] == str(first / "checkpoints" / "best.pt")
    assert record["step"] == source.step
    assert record["changed"]["optim.lr"] == [0.003, 0.0]
    assert "train.init_from" not in record["changed"]
    assert trained.config["optim"]["lr"] == 0.0  # what is recorded is what ran


def test_init_from_a_model_that_does_not_fit_is_one_line(first: Path, tmp_path: Path) -> None:
    with pytest.raises(RnnexpError, match="does not fit the model"):
        run(tmp_path, "model.hidden_size=16", f"train.init_from={first}")


def test_resume_and_init_from_together_are_refused(first: Path, tmp_path: Path) -> None:
    with pytest.raises(RnnexpError, match="give only one of them"):
        run(tmp_path, *COMMON, f"train.resume={first}", f"train.init_from={first}")


def test_resume_command_drops_the_old_source_and_quotes() -> None:
    command = resume_command(["cell=lstm", "train.resume=old", "+x='a b'"], Path("out/run"))
    assert command == "rnnexp train cell=lstm '+x='\"'\"'a b'\"'\"'' train.resume=out/run"


def test_a_run_saved_before_a_key_existed_keeps_its_old_behaviour(tmp_path: Path) -> None:
    """A temporal-order checkpoint saved before ``task.variable_length`` existed (it ran
    ``[T, 1.1 T)``; exact lengths are the default now) loads with ``variable_length=true``;
    resuming it with today's default is refused in one line naming the key, and with the
    old value it continues."""
    overrides = ["task=temporal_order", "debug=tiny", "train.max_steps=10", "train.eval_every=5",
                 "sched=constant", "task.variable_length=true"]  # fmt: skip
    cfg = compose_config(*overrides)
    old = tmp_path / "old"
    train(cfg, old, RunRecord(old, task="temporal_order", cell=cfg.cell.name))
    last = old / "checkpoints" / "last.pt"
    saved = Checkpoint.load(last)
    for key in ("variable_length", "val_lengths"):  # as a checkpoint of 2026-11-28 holds it
        del saved.config["task"][key]
    del saved.config["clip"]["fallback"], saved.config["clip"]["fallback_above"]
    saved.save(last)
    loaded = Checkpoint.load(last)
    assert loaded.config["task"]["variable_length"] is True
    assert loaded.config["task"]["val_lengths"] == "test"
    assert loaded.config["clip"]["fallback"] is None
    today = [o for o in overrides if o != "task.variable_length=true"]
    with pytest.raises(RnnexpError, match=r"task\.variable_length \(True -> False\)"):
        refused = tmp_path / "a"
        train(
            compose_config(*today, "train.max_steps=20", f"train.resume={old}"),
            refused,
            RunRecord(refused, task="temporal_order", cell=cfg.cell.name),
        )
    rest = tmp_path / "b"
    metrics = train(
        compose_config(*overrides, "train.max_steps=20", f"train.resume={old}"),
        rest,
        RunRecord(rest, task="temporal_order", cell=cfg.cell.name),
    )
    assert metrics["status"] == "completed" and metrics["steps"] == 20
