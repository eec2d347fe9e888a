"""The remedies for vanishing/exploding gradients side by side (issue 20): cost per update.

    python bench/remedies.py --quick        # 5 rounds, about 2 minutes on one thread
    python bench/remedies.py                # 9 rounds
    python bench/remedies.py --rounds 15 --steps 40 --hf-updates 3

One process, one thread (``--threads``), the adding problem at ``T = 100`` in Pascanu's form
(``experiment=pascanu2013 task=adding task.length=100``: lengths from ``[T, 1.1 T)``, batch
20) and the same pre-drawn batches for every remedy. Each remedy is the update the loop
builds from the real config (:func:`rnnexp.train.updates.build_update`, as ``train()``):

- ``SGD``: Elman 50 tanh units, ``clip=none`` (the baseline of every ratio);
- ``SGD + clip``: ``clip=norm`` (Pascanu 2013, Alg. 1);
- ``SGD + clip + Ω``: ``regularizer=pascanu`` (on the CPU: the fast path of
  :mod:`rnnexp.train.fast`);
- ``NAG + esn init``: ``optim=nesterov cell.init=esn clip=none`` (Sutskever et al. 2013);
- ``HF``: ``optim=hf`` with its shipped defaults, one Hessian-free update per call;
- ``LSTM + Adam``: ``cell=lstm optim=adam``, the same 50 units, ``clip=norm``;
- ``ESN + ridge``: ``cell=esn optim=ridge``, the same 50 units: one closed-form fit over
  ``--ridge-batches`` batches per call, reported per batch of data.

The remedies take turns within each round (``--steps`` updates each, ``--hf-updates`` for
HF, one fit for ridge), and the ratio column is the median over rounds of each remedy's
time per update divided by plain SGD's *in the same round*: the load of a shared machine
changes between rounds, hardly within one. HF's updates follow one another on successive
batches as in training (warm start, damping), so its CG iteration counts are those of a
run's first ``rounds × hf-updates`` updates. For HF the table adds its work per update:
CG iterations, loss evaluations (backtracking and line search), and its time in
*gradient-evaluation equivalents*: its time divided by that of one loss + gradient on the
same batch through HF's own network path (``HessianFreeUpdate.gradient``), timed in the
same round.

``optim.lr`` is set for every gradient remedy, since ``experiment=pascanu2013`` sets 0.03
for whatever optimizer is chosen (and ``~optim.lr`` removes it for ``hf`` and ``ridge``,
which take none); cost per update does not depend on it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table

from rnnexp.config import build
from rnnexp.nn.model import build_model
from rnnexp.tasks.base import Batch, eval_mode
from rnnexp.train.hf import HessianFreeUpdate, native_kernels
from rnnexp.train.updates import GradientUpdate, RidgeUpdate, StepResult, Update, build_update

BASE = "SGD"
LENGTH = 100
# name -> overrides on experiment=pascanu2013 task=adding task.length=100
REMEDIES: dict[str, tuple[str, ...]] = {
    BASE: ("clip=none",),
    "SGD + clip": ("clip=norm",),
    "SGD + clip + Ω (fast path)": ("clip=norm", "regularizer=pascanu"),
    "NAG + esn init": ("optim=nesterov", "cell.init=esn", "clip=none", "optim.lr=0.001"),
    "HF (optim=hf)": ("optim=hf", "~optim.lr"),
    "LSTM + Adam + clip": ("cell=lstm", "cell.init=default", "optim=adam", "optim.lr=0.003"),
    "ESN + ridge (per batch fitted)": ("cell=esn", "cell.init=default", "optim=ridge",
                                       "~optim.lr"),
}  # fmt: skip


def config(*overrides: str):
    """``experiment=pascanu2013 task=adding task.length=100`` + ``overrides``, composed."""
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["experiment=pascanu2013", "task=adding", f"task.length={LENGTH}",
                       "train.device=cpu", *overrides],
        )  # fmt: skip


def draw_batches(count: int, seed: int = 0) -> list[Batch]:
    """``count`` training batches of the adding problem (batch 20, lengths ``[T, 1.1 T)``)."""
    cfg = config()
    task = build(cfg.task, "task")
    task.setup()
    stream = task.train_stream(cfg.train.batch_size, seed)
    return [next(stream) for _ in range(count)]


def build_remedy(overrides: tuple[str, ...], batches: list[Batch], ridge_batches: int) -> Update:
    """The update ``train()`` builds for the config (ridge reads the cycled ``batches``)."""
    extra = (f"optim.batches={ridge_batches}",) if "optim=ridge" in overrides else ()
    cfg = config(*overrides, *extra)
    torch.manual_seed(cfg.train.seed)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    model.train()
    return build_update(cfg, model, task, itertools.cycle(batches), torch.device("cpu"))


@dataclass
class Remedy:
    """One remedy's update and what a round of it does; ``times`` holds ms per update."""

    name: str
    update: Update
    per_round: int  # updates per round (ridge: fits)
    per_call: int = 1  # batches of data that one call covers (ridge: optim.batches)
    times: list[float] = field(default_factory=list)
    steps: int = 0

    def run(self, chunk: Iterator[Batch]) -> None:
        start = time.perf_counter()
        for _ in range(self.per_round):
            self.steps += 1
            self.update.step(next(chunk), None, self.steps)
        elapsed = time.perf_counter() - start
        self.times.append(1000 * elapsed / (self.per_round * self.per_call))


@dataclass
class HFCounts:
    """HF's work per update: CG iterations, loss evaluations, gradient-evaluation times."""

    cg: list[int] = field(default_factory=list)
    losses: list[int] = field(default_factory=list)
    gradient_ms: list[float] = field(default_factory=list)


def count_hf(update: HessianFreeUpdate, counts: HFCounts) -> None:
    """Wrap the update's ``step`` and its network's ``loss`` to record the work per update."""
    loss, step = update.net.loss, update.step
    calls = [0]

    def counted_loss(*args: Any, **kwargs: Any) -> float:
        calls[0] += 1
        return loss(*args, **kwargs)

    def counted_step(*args: Any, **kwargs: Any) -> StepResult:
        before, calls[0] = update.cg_iterations, 0
        result = step(*args, **kwargs)
        counts.cg.append(update.cg_iterations - before)
        counts.losses.append(calls[0])
        return result

    update.net.loss = counted_loss  # type: ignore[method-assign]
    update.step = counted_step  # type: ignore[method-assign]


def time_gradient(update: HessianFreeUpdate, batch: Batch, repeats: int) -> float:
    """ms of one loss + gradient on ``batch`` through HF's own network path (as its update
    runs it: eval mode, torch's native kernels)."""
    theta = update.net.vector()
    start = time.perf_counter()
    with eval_mode(update.model), native_kernels():
        for _ in range(repeats):
            update.gradient(theta, batch, None)
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 9")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    parser.add_argument(
        "--steps", type=int, default=20, help="updates per gradient remedy and round"
    )
    parser.add_argument("--hf-updates", type=int, default=2, help="HF updates per round")
    parser.add_argument("--ridge-batches", type=int, default=8, help="batches per ridge fit")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (5 if args.quick else 9)
    batches = draw_batches(64)
    remedies = []
    for name, overrides in REMEDIES.items():
        update = build_remedy(overrides, batches, args.ridge_batches)
        if isinstance(update, HessianFreeUpdate):
            remedies.append(Remedy(name, update, args.hf_updates))
        elif isinstance(update, RidgeUpdate):
            remedies.append(Remedy(name, update, 1, per_call=args.ridge_batches))
        else:
            assert isinstance(update, GradientUpdate)
            remedies.append(Remedy(name, update, args.steps))
    hf = next(r.update for r in remedies if isinstance(r.update, HessianFreeUpdate))
    counts = HFCounts()
    for remedy in remedies:  # warm-up: allocator, kernels (HF: not counted below)
        if remedy.update is not hf:
            remedy.run(itertools.cycle(batches[:3]))
            remedy.times.clear()
    count_hf(hf, counts)
    for r in range(rounds):
        offset = r * args.steps
        for remedy in remedies:
            remedy.run(batches[(offset + i) % len(batches)] for i in itertools.count())
            # every remedy sees the same batches in a round
        counts.gradient_ms.append(time_gradient(hf, batches[offset % len(batches)], 5))

    base = next(r for r in remedies if r.name == BASE)
    cfg = config()
    table = Table(
        title=f"adding T={LENGTH} (lengths [{LENGTH}, {-(-11 * LENGTH // 10)})), Pascanu config "
        f"(50 units, batch {cfg.train.batch_size}), {rounds} rounds, cpu, "
        f"{torch.get_num_threads()} thread(s)"
    )
    columns = ("remedy", "updates/round", "ms/update (median)", "range",
               "vs SGD (median of rounds)", "ratio range")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "remedy" else "right")
    for remedy in remedies:
        ratios = sorted(t / b for t, b in zip(remedy.times, base.times, strict=True))
        table.add_row(
            remedy.name,
            str(remedy.per_round),
            f"{statistics.median(remedy.times):.2f}",
            f"{min(remedy.times):.2f}-{max(remedy.times):.2f}",
            f"{statistics.median(ratios):.1f}x",
            f"{ratios[0]:.1f}-{ratios[-1]:.1f}",
        )
    console = Console(width=160)
    console.print(table)
    hf_times = next(r.times for r in remedies if r.update is hf)
    equivalents = sorted(t / g for t, g in zip(hf_times, counts.gradient_ms, strict=True))
    cg = sorted(counts.cg)
    console.print(
        f"HF, {len(cg)} updates: CG iterations per update median {statistics.median(cg):g} "
        f"(range {cg[0]}-{cg[-1]}, max {hf.settings.max_cg_iterations}); loss evaluations per "
        f"update median {statistics.median(counts.losses):g}; one loss + gradient through HF's "
        f"path {statistics.median(counts.gradient_ms):.2f} ms; an HF update = "
        f"{statistics.median(equivalents):.0f} gradient evaluations of the batch by time "
        f"(range {equivalents[0]:.0f}-{equivalents[-1]:.0f}); curvature batch "
        f"{max(1, round(hf.settings.curvature_fraction * cfg.train.batch_size))} of "
        f"{cfg.train.batch_size} sequences"
    )
    esn = next(r for r in remedies if isinstance(r.update, RidgeUpdate))
    console.print(
        f"ESN + ridge: one fit over {esn.per_call} batches = "
        f"{statistics.median(esn.times) * esn.per_call:.1f} ms (reservoir forward of each batch, "
        "then one solve); the ridge readout is the whole of ESN training"
    )


if __name__ == "__main__":
    main()
