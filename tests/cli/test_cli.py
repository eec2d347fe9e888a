"""The CLI as users run it: subprocesses in a scratch folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_cli, run_dirs
from typer.testing import CliRunner

from rnnexp import __version__
from rnnexp.cli.main import app

METRICS_KEYS = {"status", "final", "best", "steps", "wall_time_s", "num_params", "cell", "task",
                "overrides", "git_commit"}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny timer run through `rnnexp train`, shared by the tests that read it."""
    cwd = tmp_path_factory.mktemp("train")
    run_cli("train", "cell=lstm", *TINY, cwd=cwd)
    (run_dir,) = run_dirs(cwd / "outputs")
    return run_dir


def test_train_writes_the_run_folder_contract(trained: Path) -> None:
    assert trained.parent.parent.name == "timer" and trained.parent.name == "lstm"
    assert len(trained.name.split("_")[1].split("-")) == 4  # time with microseconds
    metrics = read_metrics(trained)
    assert set(metrics) >= METRICS_KEYS
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert set(metrics["final"]) >= {"mse", "nrmse"} and metrics["best"]["metric"] == "nrmse"
    assert "cell=lstm" in metrics["overrides"] and metrics["num_params"] > 0
    assert (trained / ".hydra" / "config.yaml").is_file()
    assert list(trained.glob("events.out.tfevents.*"))
    assert (trained / "checkpoints" / "last.pt").is_file()
    assert (trained / "checkpoints" / "best.pt").is_file()
    assert (trained / "plots" / "timer.png").is_file()


def test_evaluate_prints_a_table_and_writes_metrics(trained: Path) -> None:
    proc = run_cli("evaluate", str(trained), cwd=trained)
    assert "nrmse" in proc.stdout and "test" in proc.stdout
    result = json.loads((trained / "checkpoints" / "best.test.json").read_text())
    best = read_metrics(trained)["best"]["step"]
    assert result["split"] == "test" and result["step"] == best
    if best == 20:  # the final model is the best one: same numbers as in metrics.json
        assert result["metrics"]["nrmse"] == pytest.approx(read_metrics(trained)["final"]["nrmse"])
    run_cli("evaluate", str(trained / "checkpoints" / "last.pt"), "split=val", cwd=trained)
    assert (trained / "checkpoints" / "last.val.json").is_file()


def test_multirun_gives_one_folder_per_cell(tmp_path: Path) -> None:
    run_cli("train", "-m", "cell=elman,lstm,gru", *TINY, "train.max_steps=3", cwd=tmp_path)
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    folders = run_dirs(sweep)
    # each job's folder says what it is: its number, then its overrides
    assert [f.name.split(",")[0] for f in folders] == ["0_cell=elman", "1_cell=lstm", "2_cell=gru"]
    assert sorted(read_metrics(f)["cell"] for f in folders) == ["elman", "gru", "lstm"]
    assert all(read_metrics(f)["status"] == "completed" for f in folders)


def test_cfg_job_prints_the_config_without_training(tmp_path: Path) -> None:
    proc = run_cli("train", "cell=lstm", "model.hidden_size=7", "--cfg", "job", cwd=tmp_path)
    assert "name: lstm" in proc.stdout and "hidden_size: 7" in proc.stdout
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("override", "listed"),
    [("cell=nope", "lstm"), ("task=nope", "timer"), ("optim=nope", "rmsprop")],
)
def test_unknown_choice_lists_the_valid_ones(tmp_path: Path, override: str, listed: str) -> None:
    proc = run_cli("train", override, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Available options" in proc.stderr and listed in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path, trained: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((trained / "checkpoints" / "last.pt").read_bytes()[:2000])
    cases = {
        str(tmp_path / "missing.pt"): "checkpoint not found",
        str(tmp_path): "no checkpoint at",
        str(corrupt): "corrupt",
    }
    for target, message in cases.items():
        proc = run_cli("evaluate", target, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("evaluate", str(trained), "model.hidden_size=99", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "does not fit the model" in proc.stderr


def test_malicious_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "x", "hook": _Exploit(str(marker))}, evil)
    proc = run_cli("evaluate", str(evil), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "refusing to load" in proc.stderr
    assert not marker.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_failed_run_records_the_error(tmp_path: Path) -> None:
    proc = run_cli("train", *TINY, "train.device=cuda:7", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "error:" in proc.stderr and "Traceback" not in proc.stderr
    (run_dir,) = run_dirs(tmp_path / "outputs")
    assert read_metrics(run_dir)["status"] == "failed"


def test_version_help_and_ls() -> None:
    runner = CliRunner()
    assert __version__ in runner.invoke(app, ["--version"]).stdout
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and all(c in result.stdout for c in ("train", "evaluate", "ls"))
    result = runner.invoke(app, ["ls", "cells", "--hidden-size", "4"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "gru" in result.stdout and "Cho" in result.stdout
    result = runner.invoke(app, ["ls", "optim"], env={"COLUMNS": "200"})
    assert "rmsprop" in result.stdout and "char-rnn" in result.stdout
    result = runner.invoke(app, ["ls", "debug"], env={"COLUMNS": "200"})
    assert "tiny" in result.stdout and "Fast dev run" in result.stdout


def test_debug_tiny_runs_a_text_task_in_seconds(tmp_path: Path) -> None:
    # the users' command, on the tiny CoNLL files of the text_data fixture
    run_cli("train", "task=ner", "debug=tiny", cwd=tmp_path)
    (run_dir,) = run_dirs(tmp_path / "outputs")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert metrics["overrides"] == ["task=ner", "debug=tiny"] and metrics["device"] == "cpu"
    assert metrics["wall_time_s"] < 60


def test_every_cell_trains_five_steps_from_the_cli(tmp_path: Path) -> None:
    from rnnexp.cells import available

    names = available()
    run_cli("train", "-m", f"cell={','.join(names)}", *TINY, "train.max_steps=5",
            "train.eval_every=5", cwd=tmp_path)  # fmt: skip
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    results = {read_metrics(d)["cell"]: read_metrics(d) for d in run_dirs(sweep)}
    assert sorted(results) == names
    for name, metrics in results.items():
        assert metrics["status"] == "completed", name
        assert metrics["steps"] == 5 and metrics["final"]["nrmse"] < 10, name


def test_joblib_launcher_runs_jobs_in_other_processes(tmp_path: Path) -> None:
    run_cli("train", "-m", "cell=elman,gru", *TINY, "train.max_steps=3",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path)  # fmt: skip
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert sorted(read_metrics(d)["cell"] for d in run_dirs(sweep)) == ["elman", "gru"]
    assert all(read_metrics(d)["status"] == "completed" for d in run_dirs(sweep))
    # train.num_threads=null: two jobs at once share the cores, no oversubscription
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(read_metrics(d)["torch_threads"] == threads for d in run_dirs(sweep))
    # the jobs' log lines interleave: each says which job it is from
    for job in run_dirs(sweep):
        lines = (job / "train.log").read_text().splitlines()
        num = job.name.partition("_")[0]
        assert lines and all(f"[job {num}] " in line for line in lines)


def test_shell_completion_offers_subcommands_groups_options_and_keys(tmp_path: Path) -> None:
    from rnnexp.config import override_completions

    assert override_completions("cell=gr") == ["cell=gru", "cell=gru_minimal"]
    assert "task=" in override_completions("ta")
    assert "train.max_steps=" in override_completions("tr")
    assert override_completions("nonsense=") == []

    def complete(*words: str) -> list[str]:
        line = " ".join(["rnnexp", *words])
        env = {**os.environ, "_RNNEXP_COMPLETE": "complete_bash", "COMP_WORDS": line,
               "COMP_CWORD": str(len(words))}  # fmt: skip
        # the console script: the shell's completion calls the program by that name
        script = shutil.which("rnnexp", path=str(Path(sys.executable).parent)) or "rnnexp"
        proc = subprocess.run([script], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=60)  # fmt: skip
        return proc.stdout.split()

    assert complete("sa") == ["sample"]
    assert complete("train", "optim=ad") == ["optim=adagrad", "optim=adam"]
    assert "train.patience=" in complete("train", "train.pa")
    assert complete("train", "optim", "=", "ad") == ["adagrad", "adam"]  # bash splits at =
