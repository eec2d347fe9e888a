"""The Update seam (:mod:`rnnexp.train.updates`): a closure optimizer (``optim=lbfgs``) trains
the timer, the closed form needs no optimizer, and an update's state goes through the
checkpoint under the old keys."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import compose_config, tiny

from rnnexp.config import build
from rnnexp.nn.model import build_model
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import GradientUpdate, RidgeUpdate, StepResult, Update, build_update


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*tiny("timer"), *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cfg.cell.name))


def untrained(*overrides: str) -> dict[str, float]:
    """The test scores of the weights a run starts from (step 0): the same seed, task and
    model build as :func:`rnnexp.train.loop.train`."""
    cfg = compose_config(*tiny("timer"), *overrides)
    torch.manual_seed(cfg.train.seed)
    task = build(cfg.task, "task")
    return task.evaluate(build_model(cfg, task.setup()), "test", torch.device("cpu"))


def test_lbfgs_trains_the_timer_through_a_closure(tmp_path: Path) -> None:
    before = untrained("optim=lbfgs")["nrmse"]
    metrics = run(tmp_path, "optim=lbfgs", "train.max_steps=20")
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert metrics["final"]["nrmse"] < 0.8 * before  # about 0.53 from 0.98
    saved = Checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved.update["optimizer"]["state"][0]["func_evals"] > 20  # re-evaluated within steps


def test_lbfgs_resumes_exactly(tmp_path: Path) -> None:
    common = ["optim=lbfgs", "sched=constant"]
    whole = run(tmp_path / "whole", *common, "train.max_steps=20")
    run(tmp_path / "first", *common, "train.max_steps=10")
    rest = run(tmp_path / "rest", *common, "train.max_steps=20",
               f"train.resume={tmp_path / 'first'}")  # fmt: skip
    assert rest["final"] == whole["final"]


def test_the_optim_config_picks_the_update() -> None:
    cfg = compose_config(*tiny("timer"), "optim=lbfgs")
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    stream = task.train_stream(4, seed=0)
    update = build_update(cfg, model, task, stream, torch.device("cpu"))
    assert isinstance(update, GradientUpdate) and update.needs_closure
    assert not build_update(compose_config(*tiny("timer")), model, task, stream,
                            torch.device("cpu")).needs_closure  # fmt: skip
    cfg = compose_config(*tiny("timer"), "cell=esn", "optim=ridge")
    model = build_model(cfg, task.setup())
    update = build_update(cfg, model, task, stream, torch.device("cpu"))
    assert isinstance(update, RidgeUpdate) and update.total_steps(1500) == 1


def test_ridge_checkpoint_has_no_optimizer_state(tmp_path: Path) -> None:
    metrics = run(tmp_path, "cell=esn", "optim=ridge")
    assert metrics["steps"] == 1
    saved = Checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved.update == {"ema": None, "optimizer": None, "scheduler": None}


class PlainSGD:
    """Stands in for Hessian-free: an ``optim`` target that builds its own update and
    runs its own forward and backward passes (:class:`rnnexp.train.updates.MakesUpdate`)."""

    def __init__(self, lr: float = 0.1) -> None:
        self.lr = lr

    def make_update(self, model, task, stream, train, device) -> Update:
        lr = self.lr

        class Step(Update):
            def step(self, batch, state, step: int) -> StepResult:
                output, _ = model(batch.inputs, None, batch.lengths)
                loss = task.loss(output, batch)
                params = [p for p in model.parameters() if p.requires_grad]
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p -= lr * g
                return StepResult(loss.item(), None)

        return Step(model)


def test_an_update_of_its_own_plugs_in_without_touching_the_loop(tmp_path: Path) -> None:
    metrics = run(tmp_path, "~optim", "+optim._target_=test_updates.PlainSGD", "+optim.lr=0.5")
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert metrics["final"]["nrmse"] < untrained()["nrmse"]
