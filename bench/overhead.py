"""Runner overhead: rnnexp's training step against a bare PyTorch loop, same process.

Both train the same network (the configured cell + a linear head) on the same task's
batches with the same optimizer and clipping. The runner's step time comes from
``metrics.json`` (``step_time_ms``: batch, forward, loss, backward, clip, optimizer and
schedule step, TensorBoard scalars and the progress bar; evaluations excluded). The two
are measured alternately, several rounds, and the medians compared.

    python bench/overhead.py                       # gru on the timer, default sizes
    python bench/overhead.py cell=lstm model.hidden_size=256 --steps 100
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from rnnexp.config import build
from rnnexp.nn.model import build_model
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord


def bare_loop_step_ms(cfg, steps: int) -> float:
    """The loop one would write by hand: sample, forward, loss, backward, clip, step."""
    torch.manual_seed(cfg.train.seed)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    optimizer = build(cfg.optim, "optim")(model.parameters())
    generator = torch.Generator().manual_seed(cfg.train.seed)
    started = time.perf_counter()
    for _ in range(steps):
        batch = task.sample(cfg.train.batch_size, generator)
        output, _ = model(batch.inputs)
        loss = task.loss(output, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip.max_norm)
        optimizer.step()
    return 1000 * (time.perf_counter() - started) / steps


def runner_step_ms(cfg, steps: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        metrics = train(cfg, Path(folder), RunRecord(Path(folder)))
    assert metrics["steps"] == steps
    return metrics["step_time_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. cell=lstm")
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measurements")
    args = parser.parse_args()
    overrides = [
        "clip=norm",
        f"train.max_steps={args.steps}",
        f"train.eval_every={10 * args.steps}",  # only the final evaluation, excluded anyway
        "train.histograms=false",
        "train.device=cpu",
        "task.num_val=32",
        "task.num_test=32",
        *args.overrides,
    ]
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)

    bare_loop_step_ms(cfg, 5)  # warm-up: thread pools, oneDNN primitives, allocator
    bare, runner = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop_step_ms(cfg, args.steps))
        runner.append(runner_step_ms(cfg, args.steps))
    bare_ms, runner_ms = statistics.median(bare), statistics.median(runner)

    title = (
        f"runner overhead: {cfg.cell.name} on {cfg.task.name}, H={cfg.model.hidden_size}, "
        f"batch {cfg.train.batch_size}, {args.steps} steps x {args.rounds} rounds, "
        f"{torch.get_num_threads()} threads"
    )
    table = Table(title=title)
    table.add_column("loop")
    table.add_column("median step (ms)", justify="right")
    table.add_column("all rounds (ms)")
    table.add_row("bare PyTorch", f"{bare_ms:.2f}", " ".join(f"{v:.1f}" for v in bare))
    table.add_row("rnnexp train", f"{runner_ms:.2f}", " ".join(f"{v:.1f}" for v in runner))
    console = Console()
    console.print(table)
    console.print(f"ratio rnnexp / bare = {runner_ms / bare_ms:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
