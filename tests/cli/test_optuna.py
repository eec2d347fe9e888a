"""Optuna sweeps (``hparams_search=...``): the direction follows the returned metric's mode,
and the study's best trial is the job with the best val metric."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import compose_config, read_metrics, run_cli, run_dirs, tiny
from hydra import compose, initialize_config_module
from hydra.utils import get_class
from omegaconf import OmegaConf

from rnnexp.cli import train as train_cli
from rnnexp.config import choices, sweep_direction
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import metric_mode

SENTIMENT = "rnnexp.tasks.sentiment.SentimentTask"
TIMER = "rnnexp.tasks.timer.TimerTask"
SWEEPER = "hydra_plugins.hydra_optuna_sweeper"  # the `optuna` extra


@pytest.mark.parametrize(
    ("target", "objective", "direction"),
    [
        (TIMER, None, "minimize"),  # nrmse
        (SENTIMENT, None, "maximize"),  # accuracy
        (SENTIMENT, "loss", "minimize"),
        (TIMER, "loss", "minimize"),
        (SENTIMENT, "macro_f1", "maximize"),
        ("rnnexp.tasks.latch.LatchTask", "error_rate_hs97", "minimize"),  # a variant's prefix
        ("rnnexp.tasks.ner.NerTask", None, "maximize"),  # f1
    ],
)
def test_direction_follows_the_metric_mode(target: str, objective: str | None, direction: str):
    assert sweep_direction(target, objective) == direction


def test_direction_refuses_unknown_metrics_and_targets() -> None:
    with pytest.raises(RnnexpError, match="acuracy is not a metric"):
        sweep_direction(SENTIMENT, "acuracy")
    with pytest.raises(RnnexpError, match="not one of rnnexp's tasks"):
        sweep_direction("os.system")
    assert metric_mode(get_class(SENTIMENT)) == "max"


@pytest.mark.parametrize(
    ("overrides", "direction"),
    [
        (["hparams_search=timer_optuna"], "minimize"),
        (["hparams_search=sentiment_optuna"], "maximize"),
        (["hparams_search=sentiment_optuna", "train.objective=loss"], "minimize"),
        (["hparams_search=timer_optuna", "task=sentiment"], "maximize"),  # the task given wins
    ],
)
def test_shipped_searches_resolve_their_direction(overrides: list[str], direction: str) -> None:
    pytest.importorskip(SWEEPER)
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == direction
    assert cfg.hydra.sweeper.params  # a search space
    assert "hparams_search" not in compose_config(*overrides)  # `# @package _global_`


def test_every_search_has_a_description() -> None:
    assert {"timer_optuna", "sentiment_optuna"} <= set(choices("hparams_search"))
    assert all(choices("hparams_search").values())


def write_history(run_dir: Path, rows: list[tuple[int, str, float]]) -> None:
    with open(run_dir / "history.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("step", "name", "value"), *rows])


def test_objective_value_is_the_best_over_the_run(tmp_path: Path) -> None:
    cfg = compose_config(*tiny("sentiment"))
    best = {"metric": "accuracy", "value": 0.8, "val": {"accuracy": 0.8, "loss": 0.6}}
    assert train_cli.objective_value(cfg, {"best": best}, tmp_path) == 0.8
    write_history(tmp_path, [(10, "val/loss", 0.5), (10, "train/loss", 0.1),
                             (20, "val/loss", 0.6)])  # fmt: skip
    cfg.train.objective = "loss"  # min: the lowest val loss, not the one at best accuracy
    assert train_cli.objective_value(cfg, {"best": best}, tmp_path) == 0.5
    cfg.train.objective = "f1"
    with pytest.raises(RnnexpError, match="not a val metric of task sentiment.*accuracy, loss"):
        train_cli.objective_value(cfg, {"best": best}, tmp_path)


def test_missing_sweeper_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(train_cli.importlib.util, "find_spec", lambda *args, **kwargs: None)
    with pytest.raises(RnnexpError, match=r"rnnexp\[optuna\]"):
        train_cli.check_extras(["debug=tiny", "hparams_search=timer_optuna"])
    train_cli.check_extras(["-m", "cell=elman,gru"])  # other sweeps need no plugin
    monkeypatch.setattr(train_cli.sys, "argv", ["rnnexp train", "hparams_search=timer_optuna"])
    with pytest.raises(SystemExit) as exited:
        train_cli.main()  # before Hydra: one line, the extra's brackets kept
    error = capsys.readouterr().err
    assert exited.value.code == 2 and len(error.strip().splitlines()) == 1
    assert "pip install 'rnnexp[optuna]'" in error


def test_unknown_objective_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip(SWEEPER)
    proc = run_cli("train", *tiny("timer"), "train.objective=acuracy", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "train.objective=acuracy is not a metric" in proc.stderr
    proc = run_cli(
        "train", "hparams_search=timer_optuna", *tiny("timer"), "train.objective=acuracy",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "train.objective=acuracy is not a metric" in proc.stderr


def test_maximize_sweep_picks_the_best_trial(tmp_path: Path) -> None:
    """Three trials of tiny sentiment (accuracy: max) with no direction given: the study's
    best is the job with the highest best val accuracy (a minimizing study would pick one
    of the others)."""
    pytest.importorskip(SWEEPER)
    # the study in SQLite, which works with the extra's pins only
    run_cli(
        "train", "hparams_search=sentiment_optuna", *tiny("sentiment"),
        "hydra.sweeper.n_trials=3", "hydra.sweep.dir=sweep",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db", cwd=tmp_path,
    )  # fmt: skip
    sweep = tmp_path / "sweep"
    assert (tmp_path / "study.db").is_file()
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    jobs = {}
    for job in run_dirs(sweep):
        metrics = read_metrics(job)
        assert metrics["status"] == "completed" and metrics["best"]["metric"] == "accuracy"
        params = dict(o.split("=", 1) for o in metrics["overrides"] if o.split("=")[0] in
                      result["best_params"])  # fmt: skip
        jobs[job.name] = (metrics["best"]["value"], params)
    values = [value for value, _ in jobs.values()]
    assert len(jobs) == 3 and max(values) > min(values)  # the trials differ: the test can fail
    assert result["best_value"] == pytest.approx(max(values))
    best_params = {key: str(value) for key, value in result["best_params"].items()}
    assert (max(values), best_params) in jobs.values()
