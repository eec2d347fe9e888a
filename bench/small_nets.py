"""Small nets at full speed (issue 23): ms per training step on the Pascanu configuration.

    python bench/small_nets.py --quick          # T=100 only, about 20 s
    python bench/small_nets.py                  # T=100 and T=200, more rounds (1 min)
    python bench/small_nets.py --lengths 100 --rounds 9 --steps 40
    python bench/small_nets.py --setup latch    # LSTM 32 at lags 100 and 1000
    python bench/small_nets.py --setup seeds    # 5 seeds: one process each, or batched in one

The Pascanu 2013 setup (``experiment=pascanu2013``: 2-bit temporal order, Elman 50
tanh units, "smart tanh" init, batch 20, SGD, norm clipping at 1), timed in one process on
the same pre-drawn batches (lengths from ``[T, 1.1 T)``), one training step each: forward,
loss, backward, clipping, SGD step. The paths:

- ``bare nn.RNN``: what a user writes: ``torch.nn.RNN`` + ``nn.Linear`` head, cross-entropy
  at the last step, ``clip_grad_norm_``, ``SGD.step``; the baseline of every ratio;
- ``hand-written loop``: the same with the recurrence as a plain eager tanh loop;
- ``rnnexp none (general)``: rnnexp's ``GradientUpdate`` built from the real config with
  ``regularizer=none train.fast=false`` (torch's fused ``nn.RNN`` kernel);
- ``rnnexp pascanu (general)``: ``regularizer=pascanu train.fast=false`` (step by step, Ω);
- ``rnnexp none (fast)``, ``rnnexp pascanu (fast)``: the same with ``train.fast`` at its
  default, i.e. the fast path (:mod:`rnnexp.train.fast`).

Paths are timed in alternating rounds (every path once per round, ``--steps`` steps each)
so that all see the same background load. The table gives each path's median ms/step and
the median over rounds of its ratio to the bare loop *of the same round* (on a shared
machine the load changes from round to round; within a round it is nearly the same for
all paths). Before timing, the fast and general paths are checked to give the same loss,
gradients and Ω on one batch.

``--setup seeds`` asks how a sweep over seeds should share a machine (issue 23, item 2):
one process per seed and core, each running the fast path (what ``hydra/launcher=joblib``
does, one thread per job), or the seeds batched into one process, S nets trained side by
side as one batched recurrence (``bmm`` over a leading seed axis). On a core, the first
costs the fast path's ms/step per seed; the second its ms/step divided by S. The batched
path here is a bare prototype of the fast kernel with a seed axis (the same forward and
backward loops, ``baddbmm_`` for ``addmm_``, NumPy ``tanh``; per-seed norm clipping, SGD;
no Ω), so it bounds what batching could gain: its per-seed time beside the fast path's
without Ω is the comparison.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from rnnexp.config import build
from rnnexp.nn.model import build_model
from rnnexp.tasks.base import Batch
from rnnexp.train.updates import GradientUpdate, build_update

Step = Callable[[Batch], None]
BARE = "bare nn.RNN + SGD + clip (eager)"
BARE_LSTM = "bare nn.LSTM + Adam + clip (eager)"


DEVICE = torch.device("cpu")  # --device: where every path runs


SETUP = "pascanu"  # --setup: pascanu/seeds (Elman 50, T = task.length), latch (LSTM 32, task.lag)


def config(length: int, *overrides: str):
    """The real config of the setup at length (pascanu: ``task.length``; latch: ``task.lag``)."""
    setup = (
        ["experiment=pascanu2013", f"task.length={length}", "clip=norm"]
        if SETUP != "latch"
        else ["experiment=bengio1994_latch", "cell=lstm", f"task.lag={length}"]
    )
    with initialize_config_module(config_module="rnnexp.conf", version_base="1.3"):
        return compose(
            config_name="config", overrides=[*setup, f"train.device={DEVICE.type}", *overrides]
        )


def draw_batches(length: int, count: int, seed: int = 0) -> list[Batch]:
    """``count`` training batches of the Pascanu temporal-order task, lengths [T, 1.1 T)."""
    cfg = config(length)
    task = build(cfg.task, "task")
    task.setup()
    stream = task.train_stream(cfg.train.batch_size, seed)
    return [next(stream).to(DEVICE) for _ in range(count)]


def rnnexp_update(length: int, *overrides: str) -> GradientUpdate:
    """rnnexp's update for the config, built as ``train()`` builds it."""
    cfg = config(length, *overrides)
    torch.manual_seed(cfg.train.seed)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup()).to(DEVICE)
    model.train()
    update = build_update(cfg, model, task, None, DEVICE)
    assert isinstance(update, GradientUpdate)
    return update


def rnnexp_step(update: GradientUpdate) -> Step:
    def step(batch: Batch) -> None:
        update.step(batch, None, 1)

    return step


def bare_step(inputs: int, hidden: int, classes: int, lr: float, loop: bool) -> Step:
    """The loop a user writes, with ``nn.RNN`` or (``loop``) a hand-written tanh loop."""
    torch.manual_seed(0)
    rnn = nn.RNN(inputs, hidden, batch_first=True).to(DEVICE)
    head = nn.Linear(hidden, classes).to(DEVICE)
    params = [*rnn.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr)

    def recur(x: torch.Tensor) -> torch.Tensor:  # (B, T, I) -> h_T (B, H)
        if not loop:
            return rnn(x)[0][:, -1]
        xw = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0).unbind(1)
        h = x.new_zeros(x.shape[0], hidden)
        for xw_t in xw:
            h = torch.tanh(torch.addmm(xw_t, h, rnn.weight_hh_l0.t()))
        return h

    return clipped_step(recur, head, F.cross_entropy, params, optimizer)


def clipped_step(
    recur: Callable[[torch.Tensor], torch.Tensor],
    head: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
) -> Step:
    """One user-written training step: ``loss_fn(head(recur(x)), y)``, backward,
    ``clip_grad_norm_`` at 1, the optimizer's step."""

    def step(batch: Batch) -> None:
        loss = loss_fn(head(recur(batch.inputs)), batch.targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def bare_lstm_step(inputs: int, hidden: int, lr: float, forget_bias: float, loop: bool) -> Step:
    """The latch loop a user writes: ``nn.LSTM`` (or, ``loop``, an eager LSTM step loop) +
    ``nn.Linear`` head, MSE at the last step, ``clip_grad_norm_``, ``Adam.step``; the
    forget gate's bias starts at ``forget_bias`` as rnnexp's ``memory=long`` does."""
    torch.manual_seed(0)
    rnn = nn.LSTM(inputs, hidden, batch_first=True).to(DEVICE)
    with torch.no_grad():
        rnn.bias_ih_l0[hidden : 2 * hidden] = forget_bias
        rnn.bias_hh_l0[hidden : 2 * hidden] = 0.0
    head = nn.Linear(hidden, 1).to(DEVICE)
    params = [*rnn.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)

    def recur(x: torch.Tensor) -> torch.Tensor:  # (B, T, I) -> h_T (B, H)
        if not loop:
            return rnn(x)[0][:, -1]
        xw = F.linear(x, rnn.weight_ih_l0, rnn.bias_ih_l0 + rnn.bias_hh_l0).unbind(1)
        h = c = x.new_zeros(x.shape[0], hidden)
        for xw_t in xw:
            i, f, g, o = torch.addmm(xw_t, h, rnn.weight_hh_l0.t()).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h

    return clipped_step(recur, head, F.mse_loss, params, optimizer)


def latch_paths(length: int, batches: list[Batch]) -> dict[str, Step]:
    """The latch configuration's paths: the fast path does not apply to an LSTM, whose
    fused kernel (``torch.nn.LSTM``, what rnnexp's ``cell=lstm`` is) is the fast one."""
    cfg = config(length)
    inputs, hidden = batches[0].inputs.shape[-1], cfg.model.hidden_size
    lr, bias = cfg.optim.lr, cfg.cell.forget_bias
    update = rnnexp_update(length)
    assert update.fast is None  # an LSTM: the general path, torch's fused kernel
    return {
        BARE_LSTM: bare_lstm_step(inputs, hidden, lr, bias, False),
        "hand-written LSTM loop (eager)": bare_lstm_step(inputs, hidden, lr, bias, True),
        "rnnexp cell=lstm (fused nn.LSTM)": rnnexp_step(update),
    }


class SeedsElman(torch.autograd.Function):
    """S independent tanh Elman layers as one recurrence (a seed axis in front of the batch):
    ``xw`` ``(T, S, B, H)``, ``h0`` ``(S, B, H)``, ``weight`` ``(S, H, H)`` -> ``h_1 .. h_T``
    ``(T, S, B, H)``. The fast kernel's loops (:class:`rnnexp.cells.fused.ElmanOmega`
    without Ω or hook) with ``baddbmm_`` in place of ``addmm_``."""

    @staticmethod
    def forward(ctx, xw, h0, weight):
        hs = torch.empty((xw.shape[0] + 1, *h0.shape))  # h_0 .. h_T
        hs[0].copy_(h0)
        hs[1:].copy_(xw)
        arrays, wt = hs.numpy(), weight.transpose(1, 2)
        for t in range(1, hs.shape[0]):
            hs[t].baddbmm_(hs[t - 1], wt)  # (S, B, H): xw_t + h_{t-1} W^T, per seed
            np.tanh(arrays[t], out=arrays[t])
        ctx.save_for_backward(hs, weight)
        return hs[1:]

    @staticmethod
    def backward(ctx, grad_hs):
        hs, weight = ctx.saved_tensors
        steps, seeds, batch, hidden = hs[1:].shape
        slopes = torch.mul(hs[1:], hs[1:]).neg_().add_(1.0)  # φ'_t, then a_t in place
        raw = grad_hs.contiguous().clone()  # g_t, then δ_t = g_t + a_{t+1} W
        raw_arrays, slope_arrays = raw.numpy(), slopes.numpy()
        slopes[-1].mul_(raw[-1])
        for t in range(steps - 2, -1, -1):
            raw[t].baddbmm_(slopes[t + 1], weight)
            np.multiply(slope_arrays[t], raw_arrays[t], out=slope_arrays[t])
        grad_h0 = torch.bmm(slopes[0], weight)
        a = slopes.permute(1, 3, 0, 2).reshape(seeds, hidden, steps * batch)
        before = hs[:-1].permute(1, 0, 2, 3).reshape(seeds, steps * batch, hidden)
        return slopes, grad_h0, torch.bmm(a, before)  # Σ_t a_t^T h_{t-1}, per seed


def batched_seeds_step(seeds: int, inputs: int, hidden: int, classes: int, lr: float) -> Step:
    """``seeds`` Elman nets (with heads) trained side by side in one process: cross-entropy
    at the last step, each seed's gradient norm-clipped at 1 on its own, one ``SGD.step``.
    Every seed gets the batch it is called with (the timing does not depend on the data)."""
    torch.manual_seed(0)
    scale = hidden**-0.5
    shapes = [(inputs, hidden), (1, hidden), (hidden, hidden), (hidden, classes), (1, classes)]
    params = [nn.Parameter((torch.rand(seeds, *s) * 2 - 1) * scale) for s in shapes]
    weight_ih, bias, weight_hh, weight_out, bias_out = params
    optimizer = torch.optim.SGD(params, lr=lr)

    def step(batch: Batch) -> None:
        x = batch.inputs.expand(seeds, *batch.inputs.shape)  # (S, B, T, I)
        _, size, steps, _ = x.shape
        xw = torch.baddbmm(bias, x.reshape(seeds, size * steps, inputs), weight_ih)
        xw = xw.view(seeds, size, steps, hidden).permute(2, 0, 1, 3)  # (T, S, B, H)
        hs = SeedsElman.apply(xw, x.new_zeros(seeds, size, hidden), weight_hh)
        logits = torch.baddbmm(bias_out, hs[-1], weight_out)  # (S, B, C)
        targets = batch.targets.repeat(seeds)
        loss = F.cross_entropy(logits.reshape(seeds * size, classes), targets) * seeds
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # the sum of the seeds' mean losses: each seed's own gradient
        norms = torch.stack([p.grad.view(seeds, -1).norm(dim=1) for p in params]).norm(dim=0)
        factor = (1.0 / (norms + 1e-6)).clamp_max(1.0)  # clip_grad_norm_'s rule, per seed
        for p in params:
            p.grad.mul_(factor.view(seeds, *[1] * (p.dim() - 1)))
        optimizer.step()

    return step


SEEDS = (1, 2, 5, 10)  # --setup seeds: how many seeds one process trains side by side


def batched_name(seeds: int) -> str:
    """The table's name of the path that trains ``seeds`` seeds in one process."""
    return f"{seeds} seeds batched, no Ω (per seed)"


def seeds_paths(length: int, batches: list[Batch]) -> dict[str, Step]:
    """One seed per process (rnnexp fast, bare) against ``S`` seeds batched in one process."""
    cfg = config(length)
    inputs, classes = batches[0].inputs.shape[-1], 2**cfg.task.bits
    hidden, lr = cfg.model.hidden_size, cfg.optim.lr
    return {  # the first path is the ratios' baseline: one seed, fast path, no Ω
        "rnnexp regularizer=none, fast (one seed)": rnnexp_step(
            rnnexp_update(length, "regularizer=none")
        ),
        BARE: bare_step(inputs, hidden, classes, lr, False),
        "rnnexp regularizer=pascanu, fast (one seed)": rnnexp_step(
            rnnexp_update(length, "regularizer=pascanu")
        ),
        **{batched_name(s): batched_seeds_step(s, inputs, hidden, classes, lr) for s in SEEDS},
    }


def check_same_numbers(length: int, batch: Batch) -> float:
    """Largest relative difference of loss and gradients, fast vs general path, Ω on."""
    fast = rnnexp_update(length, "regularizer=pascanu")
    general = rnnexp_update(length, "regularizer=pascanu", "train.fast=false")
    general.model.load_state_dict(copy.deepcopy(fast.model.state_dict()))
    assert fast.fast is not None and general.fast is None
    worst = 0.0
    loss_f, _, _ = fast.forward_backward(batch, None, 1)
    loss_g, _, _ = general.forward_backward(batch, None, 1)
    pairs = [(loss_f, loss_g)] + [
        (p.grad, q.grad)
        for p, q in zip(fast.model.parameters(), general.model.parameters(), strict=True)
    ]
    for a, b in pairs:
        worst = max(worst, ((a - b).norm() / b.norm().clamp_min(1e-30)).item())
    omega_f, omega_g = fast.regularizer.last_value, general.regularizer.last_value
    return max(worst, abs(omega_f - omega_g) / max(abs(omega_g), 1e-30))


def synchronize() -> None:
    """Wait for the GPU's queued work (a no-op on a CPU), so a timer sees it done."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def time_paths(
    paths: dict[str, Step], batches: list[Batch], steps: int, rounds: int
) -> dict[str, list[float]]:
    """Every round's ms/step of each path; the paths take turns within each round."""
    for step in paths.values():  # warm-up: allocator, thread pool, kernels
        for batch in batches[:3]:
            step(batch)
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for r in range(rounds):
        chunk = [batches[(r * steps + i) % len(batches)] for i in range(steps)]
        for name, step in paths.items():
            start = time.perf_counter()
            for batch in chunk:
                step(batch)
            synchronize()
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return times


def pascanu_paths(length: int, batches: list[Batch]) -> dict[str, Step]:
    """The Pascanu configuration's paths: bare, hand-written, rnnexp general and fast."""
    cfg = config(length)
    inputs, classes = batches[0].inputs.shape[-1], 2**cfg.task.bits
    hidden, lr = cfg.model.hidden_size, cfg.optim.lr
    return {
        BARE: bare_step(inputs, hidden, classes, lr, False),
        "hand-written tanh loop (eager)": bare_step(inputs, hidden, classes, lr, True),
        "rnnexp regularizer=none, general": rnnexp_step(
            rnnexp_update(length, "regularizer=none", "train.fast=false")
        ),
        "rnnexp regularizer=pascanu, general": rnnexp_step(
            rnnexp_update(length, "regularizer=pascanu", "train.fast=false")
        ),
        "rnnexp regularizer=none, fast": rnnexp_step(rnnexp_update(length, "regularizer=none")),
        "rnnexp regularizer=pascanu, fast": rnnexp_step(
            rnnexp_update(length, "regularizer=pascanu")
        ),
    }


def title(length: int, steps: int, rounds: int) -> str:
    cfg = config(length)
    run = f"{steps} steps x {rounds} rounds, {DEVICE.type}, {torch.get_num_threads()} thread(s)"
    if SETUP == "latch":
        return (
            f"latch config: lstm H={cfg.model.hidden_size}, batch {cfg.train.batch_size}, "
            f"{cfg.task.info_steps} + {length} steps, clip=norm, Adam; {run}"
        )
    return (
        f"Pascanu config: elman H={cfg.model.hidden_size}, batch {cfg.train.batch_size}, "
        f"T in [{length}, {-(-11 * length // 10)}), clip=norm, SGD; {run}"
    )


def print_table(console: Console, every: dict[str, list[float]], heading: str) -> None:
    """Each path's median ms/step, and the median of its per-round ratio to the first
    path (the baseline) of the same round: load changes between rounds cancel."""
    bare = next(iter(every))
    base = every[bare]
    table = Table(title=heading)
    table.add_column("path")
    table.add_column("ms/step (median)", justify="right")
    table.add_column("range", justify="right")
    table.add_column(f"vs {bare.split(' +')[0].split(' (')[0]} (median of rounds)", justify="right")
    table.add_column("ratio range", justify="right")
    for name, times in every.items():
        ratios = sorted(t / b for t, b in zip(times, base, strict=True))
        table.add_row(
            name,
            f"{statistics.median(times):.2f}",
            f"{min(times):.2f}-{max(times):.2f}",
            f"{statistics.median(ratios):.2f}x",
            f"{ratios[0]:.2f}-{ratios[-1]:.2f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one length, 15 rounds of 20 steps")
    parser.add_argument(
        "--setup",
        choices=["pascanu", "latch", "seeds"],
        default="pascanu",
        help="pascanu: Elman 50, T 100 and 200; latch: LSTM 32, lags 100 and 1000; "
        "seeds: Elman 50 at T 100, one seed per process against seeds batched",
    )
    parser.add_argument("--lengths", default=None, help="comma-separated T or lags")
    parser.add_argument("--steps", type=int, default=None, help="steps per path and round")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    global DEVICE, SETUP
    DEVICE, SETUP = torch.device(args.device), args.setup
    torch.set_num_threads(args.threads)
    lengths = {"pascanu": [100, 200], "latch": [100, 1000], "seeds": [100]}[SETUP]
    lengths = [100] if args.quick else lengths
    if args.lengths:
        lengths = [int(v) for v in args.lengths.split(",")]
    steps = args.steps or (20 if args.quick else 30)
    rounds = args.rounds or (15 if args.quick else 21)
    console = Console(width=150)
    for length in lengths:
        batches = draw_batches(length, 64)
        if SETUP == "latch":
            print_table(console, time_paths(latch_paths(length, batches), batches, steps, rounds),
                        title(length, steps, rounds))  # fmt: skip
            continue
        if SETUP == "seeds":
            every = time_paths(seeds_paths(length, batches), batches, steps, rounds)
            for seeds in SEEDS:  # a batched step trains S seeds: per seed
                every[batched_name(seeds)] = [t / seeds for t in every[batched_name(seeds)]]
            print_table(console, every, title(length, steps, rounds) + ", ms per seed")
            continue
        worst = check_same_numbers(length, batches[0])
        every = time_paths(pascanu_paths(length, batches), batches, steps, rounds)
        print_table(console, every, title(length, steps, rounds))
        console.print(
            f"fast vs general path (Ω on, one batch): largest relative difference of loss, "
            f"gradients and Ω = {worst:.1e}"
        )


if __name__ == "__main__":
    main()
