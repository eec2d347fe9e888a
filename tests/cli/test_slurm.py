"""SLURM through submitit: the ``hydra/launcher=slurm`` preset, and a job stopped by its time
limit or a preemption that is requeued continues from ``last.pt`` in its own folder, its
record the same as that of a run that was never stopped (tried with ``submitit_local``)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_cli
from omegaconf import OmegaConf

from rnnexp.cli.train import check_extras
from rnnexp.errors import RnnexpError
from rnnexp.report.load import find_job_dirs
from rnnexp.train import sweep

SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_submitit = pytest.mark.skipif(not SUBMITIT, reason="needs rnnexp[slurm]")
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def hydra_cfg(launcher: str, mode: str = "MULTIRUN") -> OmegaConf:
    from hydra.types import RunMode

    return OmegaConf.create({"mode": RunMode[mode], "launcher": {"_target_": launcher}})


def unfinished_run(folder: Path, status: str = "running", last: bool = True) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"status": status, "steps": 50}))
    if last:
        (folder / "checkpoints" / "last.pt").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("launcher", "mode", "status", "last", "continues"),
    [
        (LOCAL, "MULTIRUN", "running", True, True),  # killed (SIGKILL, node failure)
        (LOCAL, "MULTIRUN", "interrupted", True, True),  # stopped by the requeue signal
        (LOCAL, "MULTIRUN", "running", False, False),  # no checkpoint yet: starts afresh
        (LOCAL, "MULTIRUN", "completed", True, False),
        (LOCAL, "MULTIRUN", "failed", True, False),
        (JOBLIB, "MULTIRUN", "interrupted", True, False),  # only submitit requeues
        (LOCAL, "RUN", "interrupted", True, False),
    ],
)
def test_which_job_continues_from_its_last_checkpoint(
    tmp_path: Path, launcher: str, mode: str, status: str, last: bool, continues: bool
) -> None:
    run_dir = unfinished_run(tmp_path / "0_cell=gru", status, last)
    found = sweep.requeued_checkpoint(hydra_cfg(launcher, mode), run_dir)
    assert found == (run_dir / "checkpoints" / "last.pt" if continues else None)


def test_a_first_start_or_an_unreadable_record_does_not_continue(tmp_path: Path) -> None:
    assert sweep.requeued_checkpoint(hydra_cfg(LOCAL), tmp_path / "new") is None
    run_dir = unfinished_run(tmp_path / "run")
    (run_dir / "metrics.json").write_text("{not json")
    assert sweep.requeued_checkpoint(hydra_cfg(LOCAL), run_dir) is None


def test_rewind_history_keeps_the_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    rows = ["step,name,value"] + [f"{s},train/loss,{1 / s:.8g}" for s in range(1, 8)]
    path.write_text("\n".join([*rows[:6], "5,val/mse,0.25", *rows[6:]]) + "\n")
    sweep.rewind_history(path, 5)
    assert path.read_text().splitlines() == [*rows[:6], "5,val/mse,0.25"]
    sweep.rewind_history(tmp_path / "none.csv", 5)  # no history (callbacks.history off)
    assert not (tmp_path / "none.csv").exists()


def test_a_missing_launcher_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if "submitit" in name else real(name)
    )
    for launcher in ("slurm", "submitit_local"):
        with pytest.raises(RnnexpError, match=r"pip install 'rnnexp\[slurm\]'"):
            check_extras(["-m", f"hydra/launcher={launcher}", "cell=gru"])
    check_extras(["-m", "hydra/launcher=joblib"])  # not submitit's: nothing to say


@needs_submitit
def test_the_slurm_preset_composes_with_its_placeholders(tmp_path: Path) -> None:
    proc = run_cli("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gres=gpu:1", "--cfg", "hydra", "-p", "hydra.launcher",
                   cwd=tmp_path)  # fmt: skip
    launcher = OmegaConf.create(proc.stdout)
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gres, launcher.cpus_per_task) == ("gpu", "gpu:1", 4)
    assert launcher.timeout_min == 60 and launcher.max_num_timeout > 0  # requeues allowed


def _descendants(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout  # fmt: skip
    found = []
    for line in out.splitlines():
        child, _, args = line.strip().partition(" ")
        found += [(int(child), args), *_descendants(int(child))]
    return found


def _steps(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "metrics.json").read_text()).get("steps") or 0)
    except (OSError, ValueError):  # not there yet, or being replaced
        return 0


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a scalar as TensorBoard shows it (purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@needs_submitit
@pytest.mark.slow  # about 45 s: the sweep, submitit and its job (twice) and a whole run start torch
def test_a_requeued_job_continues_from_last_pt_in_its_folder(tmp_path: Path) -> None:
    """USR2 (what SLURM sends before the time limit, and submitit_local too) after the
    first checkpoint: submitit requeues the job, which continues from last.pt in the same
    folder; history.csv, TensorBoard's scalars and the final metrics are those of the
    same run never stopped, and metrics.json says where it continued from."""
    overrides = [*TINY, "train.max_steps=300", "train.eval_every=50", "train.num_threads=1"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnexp", "train", "-m", "hydra/launcher=submitit_local",
         "hydra.sweep.dir=sweep", *overrides],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = [p.parent for p in tmp_path.glob("sweep/*/metrics.json")]
            if jobs and _steps(jobs[0]) >= 50:
                break
            time.sleep(0.05)
        (task,) = [pid for pid, args in _descendants(proc.pid) if "submitit.core._submit" in args]
        os.kill(task, signal.SIGUSR2)
        _, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    (job,) = find_job_dirs(tmp_path / "sweep")  # the requeued job ran in the same folder
    metrics = read_metrics(job)
    assert metrics["status"] == "completed" and metrics["steps"] == 300
    assert metrics["requeues"] == 1 and metrics["resumed_from"]["step"] >= 50
    assert metrics["resumed_from"]["checkpoint"] == str(job.resolve() / "checkpoints" / "last.pt")
    log = (job / "train.log").read_text()
    assert "stopped by the scheduler and requeued" in log and "requeued: continuing" in log

    run_cli("train", *overrides, "hydra.run.dir=whole", cwd=tmp_path)  # never stopped
    whole = tmp_path / "whole"
    assert (job / "history.csv").read_text() == (whole / "history.csv").read_text()
    assert metrics["final"] == read_metrics(whole)["final"]
    assert metrics["best"] == read_metrics(whole)["best"]
    for tag in ("train/loss", "val/nrmse"):
        assert _scalars(job, tag) == _scalars(whole, tag)
