"""Sweeps: jobs that never started, signals that stop every job, one exit-code rule."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import TINY, read_metrics, run_cli
from rich.console import Console

from rnnexp.report import aggregate, load, render
from rnnexp.train import sweep

BASIC = load.BASIC_SWEEPER


def write_multirun(folder: Path, overrides: list[str], sweeper: dict | None = None) -> None:
    """A ``multirun.yaml`` as Hydra writes it (only the keys the report reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    hydra = {
        "mode": "MULTIRUN",
        "sweeper": sweeper or {"_target_": BASIC, "max_batch_size": None, "params": None},
        "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": overrides},
    }
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "train": {}}))


def write_job(folder: Path, num: int, overrides: list[str], metrics: dict) -> None:
    job = folder / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "metrics.json").write_text(json.dumps({**metrics, "overrides": overrides}))


def test_a_sweep_stopped_in_job_0_lists_the_jobs_that_never_started(tmp_path: Path) -> None:
    overrides = ["cell=elman,gru,lstm", "train.seed=range(2)", "train.max_steps=50"]
    write_multirun(tmp_path, overrides)
    write_job(tmp_path, 0, ["cell=elman", "train.seed=0", "train.max_steps=50"],
              {"status": "interrupted"})  # fmt: skip
    report = aggregate.build_report(tmp_path)
    assert [job.name for job in report.jobs] == [str(i) for i in range(6)]
    assert [job.state for job in report.jobs] == ["unfinished"] + ["missing"] * 5
    assert report.swept == ["cell", "train.seed"]  # from the jobs asked for, not the one that ran
    assert report.constants == {"train.max_steps": "50"}
    problems = [line for _, line in render.problem_jobs(report)]
    assert problems[0] == "job 0 (cell=elman train.seed=0): unfinished: status interrupted"
    assert problems[5] == (
        "job 5 (cell=lstm train.seed=1): missing: never started (listed in multirun.yaml)"
    )
    assert render.jobs_text(report) == "6 jobs"
    counts = {s.key: s.counts["missing"] for s in report.summaries}
    assert counts == {("elman",): 1, ("gru",): 2, ("lstm",): 2}


def test_a_sweep_stopped_before_any_job_started(tmp_path: Path) -> None:
    write_multirun(tmp_path, ["optim.lr=0.1,0.01"])
    report = aggregate.build_report(tmp_path)
    assert [(job.state, job.overrides) for job in report.jobs] == [
        ("missing", {"optim.lr": "0.1"}),
        ("missing", {"optim.lr": "0.01"}),
    ]


def test_expand_sweep_as_hydras_basic_sweeper_does() -> None:
    jobs = load.expand_sweep(["train.seed=range(2)", "optim.lr=choice(0.1,0.01)", "task=timer"])
    assert jobs == [
        ["train.seed=0", "optim.lr=0.1", "task=timer"],
        ["train.seed=0", "optim.lr=0.01", "task=timer"],
        ["train.seed=1", "optim.lr=0.1", "task=timer"],
        ["train.seed=1", "optim.lr=0.01", "task=timer"],
    ]
    # hydra.sweeper.params come first; a command-line override of the same key wins
    jobs = load.expand_sweep(["cell=gru", "train.progress=false"], {"cell": "elman,lstm", "x": "1"})
    assert jobs == [["cell=gru", "x=1", "train.progress=False"]]
    cells = load.expand_sweep(["cell=glob(lstm_n*)"])  # over rnnexp's own config group
    assert cells and all(job[0].startswith("cell=lstm_n") for job in cells)


def test_a_sweep_from_multirun_yaml_matches_its_job_folders(tmp_path: Path) -> None:
    """What Hydra writes for `rnnexp train -m` (params included) expands to each job's
    own overrides.yaml, so the report can tell which jobs ran."""
    sweeper = {"_target_": BASIC, "max_batch_size": None, "params": {"train.seed": "0,1"}}
    write_multirun(tmp_path, ["cell=elman,gru", "train.progress=false"], sweeper)
    plan = load.read_plan(tmp_path)
    assert plan is not None and plan.sweeper == "BasicSweeper" and plan.note() == ""
    assert plan.jobs is not None and len(plan.jobs) == 4
    assert plan.jobs[3] == ["train.seed=1", "cell=gru", "train.progress=False"]


def test_another_sweeper_leaves_the_count_unknown(tmp_path: Path) -> None:
    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    write_multirun(tmp_path, ["optim.lr=interval(0.001,0.1)"], optuna)
    write_job(tmp_path, 0, ["optim.lr=0.01"], {"status": "completed", "final": {"mse": 1.0}})
    report = aggregate.build_report(tmp_path)
    assert len(report.jobs) == 1 and report.plan is not None and report.plan.jobs is None
    assert render.jobs_text(report) == (
        "1 jobs (expected number of jobs unknown: OptunaSweeper chooses them as it runs)"
    )
    assert "expected number of jobs unknown" in render.to_markdown(report)


def test_exit_code_of_an_interrupt() -> None:
    assert sweep.exit_code(sweep.Interrupted(signal.SIGTERM)) == 143
    assert sweep.exit_code(sweep.Interrupted(signal.SIGINT)) == 130
    assert sweep.exit_code(KeyboardInterrupt()) == 130
    assert "signal 15" in str(sweep.Interrupted(signal.SIGTERM))


def test_job_signals_raise_once_and_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / sweep.RUNNING).mkdir()
    monkeypatch.setenv(sweep.JOBS_ENV, str(tmp_path))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    job = sweep.JobSignals.start(tmp_path / "run")
    assert job is not None
    (registration,) = (tmp_path / sweep.RUNNING).iterdir()
    assert registration.name.startswith(f"{os.getpid()}.")
    try:
        with pytest.raises(sweep.Interrupted) as caught:
            signal.raise_signal(signal.SIGTERM)
        assert caught.value.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # a repeat right after: the same request, ignored
    finally:
        job.restore()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not registration.exists()


def test_sweep_exit_code_counts_the_jobs_of_the_sweep(tmp_path: Path) -> None:
    folder, runs = tmp_path / "jobs", tmp_path / "sweep"
    (folder / sweep.SWEEPS).mkdir(parents=True)
    (folder / sweep.SWEEPS / "1.1").write_text(str(runs))
    write_multirun(runs, ["cell=elman,gru,lstm"])
    write_job(runs, 0, ["cell=elman"], {"status": "completed", "final": {}})
    write_job(runs, 1, ["cell=gru"], {"status": "failed", "error": "bad value"})
    console = Console(record=True, width=200)
    assert sweep.sweep_exit_code(folder, console) == 1
    lines = console.export_text().splitlines()
    assert lines == [
        f"sweep {runs}: 1 of 3 jobs completed, 2 did not (exit code 1); summary: rnnexp "
        f"report {runs}",
        "  job 1: failed: bad value",
        "  job 2: missing: never started (listed in multirun.yaml)",
    ]
    write_job(runs, 2, ["cell=lstm"], {"status": "completed", "final": {}})
    (runs / "1" / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert sweep.sweep_exit_code(folder, Console(record=True)) == 0
    (folder / sweep.SWEEPS / "1.1").unlink()  # no sweep (a single run): 0
    assert sweep.sweep_exit_code(folder, Console(record=True)) == 0


def test_a_failing_job_lets_the_sweep_run_on_and_exit_1(tmp_path: Path) -> None:
    """The documented rule: every job runs; exit 1 when one failed; its metrics.json says
    failed with the error, in one line, and the report lists it."""
    proc = run_cli("train", "-m", *TINY, "train.max_steps=2", "train.on_nan=bad,stop",
                   "hydra.sweep.dir=sweep", cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    jobs = load.find_job_dirs(tmp_path / "sweep")
    assert [job.name for job in jobs] == [  # each job's folder says what it ran
        "0_debug=tiny,train.max_steps=2,train.on_nan=bad",
        "1_debug=tiny,train.max_steps=2,train.on_nan=stop",
    ]
    failed, completed = map(read_metrics, jobs)
    assert failed["status"] == "failed" and "train.on_nan" in failed["error"]
    assert completed["status"] == "completed"
    assert "1 of 2 jobs completed, 1 did not (exit code 1)" in proc.stderr
    out = run_cli("report", "sweep", cwd=tmp_path).stdout
    assert "job 0 (train.on_nan=bad): failed: train.on_nan" in out


def _start_sweep(cwd: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnexp", "train", "-m", "cell=elman,gru,lstm", *TINY,
         "train.max_steps=1000000", "train.eval_every=5", "train.num_threads=1",
         "hydra.sweep.dir=sweep", *overrides],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_running(folder: Path, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = []
        for path in folder.glob("*/metrics.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):  # being written
                statuses.append(json.loads(path.read_text())["status"])
        if statuses.count("running") >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} jobs of {folder} did not start")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by its new parent, is not)."""
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return bool(out.stdout.strip()) and not out.stdout.strip().startswith("Z")


@pytest.mark.parametrize(
    "launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)]
)  # about 4 and 6 s: the joblib one starts worker processes
def test_sigterm_stops_every_job_of_a_sweep(tmp_path: Path, launcher: str) -> None:
    """SIGTERM to `rnnexp train -m`: each running job (in the command's process, or in a
    loky worker) records interrupted, no worker goes on, the exit code is 143."""
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = _start_sweep(tmp_path, *extra)
    running = 2 if launcher == "joblib" else 1
    try:
        _wait_running(tmp_path / "sweep", running)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    time.sleep(0.5)
    assert not [pid for pid in workers if _alive(pid)]
    statuses = [
        read_metrics(p.parent)["status"] for p in (tmp_path / "sweep").glob("*/metrics.json")
    ]
    assert statuses == ["interrupted"] * running
    report = aggregate.build_report(tmp_path / "sweep")
    assert [job.state for job in report.jobs].count("missing") == 3 - running
