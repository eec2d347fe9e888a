"""Shared test helpers: compose the real config and shrink it, run the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

# Tiny models gain nothing from threads, and OpenMP threads slow to a crawl when another
# process shares the 2 cores: one thread in this process and in every subprocess.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

# Tiny settings per task (a run of about a second), and for the model and the loop.
TINY_TASK = {
    "timer": ["task.max_duration=5", "task.seq_len=30", "task.num_plot=2"],
    "latch": ["task.lag=5", "task.eval_batch_size=16"],
    "adding": ["task.length=20", "task.eval_batch_size=8"],
    "multiplication": ["task.length=20", "task.eval_batch_size=8"],
    "temporal_order": ["task.length=20", "task.eval_batch_size=8"],
    "permutation": ["task.length=20", "task.num_symbols=10", "task.eval_batch_size=8"],
    "memorization": ["task.length=10", "task.n_pos=3", "task.eval_batch_size=8"],
}
TINY_TRAIN = [
    "task.num_val=16",
    "task.num_test=16",
    "model.hidden_size=8",
    "train.batch_size=4",
    "train.max_steps=20",
    "train.eval_every=10",
    "train.log_every=1",
    "train.progress=false",
    "train.device=cpu",
]
TINY = TINY_TASK["timer"] + TINY_TRAIN  # the default task, timer


def tiny(task: str) -> list[str]:
    """Overrides for a one-second run of ``task``."""
    return [f"task={task}", *TINY_TASK[task], *TINY_TRAIN]


def compose_config(*overrides: str) -> DictConfig:
    """The real config (``conf/``) with overrides, through Hydra's Compose API."""
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """``rnnexp ARGS`` in a subprocess (``python -m rnnexp``), as a user would run it."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnexp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"rnnexp {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def run_dirs(root: Path) -> list[Path]:
    """Run folders (those holding a metrics.json) under ``root``."""
    return sorted(p.parent for p in root.rglob("metrics.json"))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())
