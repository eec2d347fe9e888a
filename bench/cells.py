"""Throughput of every registered cell: tokens/s of forward + backward + Adam step.

    python bench/cells.py                # H 256/512, 1/2 layers, batch 32/64, T = 100
    python bench/cells.py --quick        # H 256, 1 layer, batch 32 only
    python bench/cells.py --cells lstm,lstm_peephole,esn

Each cell is timed on random input (input size = H) with a loss on all outputs, as the
ratio to ``torch.nn.LSTM`` measured in the same run (and for lstm/gru/elman also to their
own torch module). The best of ``--repeats`` timing windows is reported, which filters out
noise from other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from rich.console import Console
from rich.table import Table

from rnnexp import cells

TORCH = {"torch.nn.LSTM": torch.nn.LSTM, "torch.nn.GRU": torch.nn.GRU, "torch.nn.RNN": torch.nn.RNN}
OWN = {"lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU", "elman": "torch.nn.RNN"}


def build(name: str, hidden: int, layers: int) -> torch.nn.Module:
    if name in TORCH:
        return TORCH[name](hidden, hidden, layers, batch_first=True)
    return cells.create(name, hidden, hidden, num_layers=layers, dropout=0.0)


def make_iteration(module, batch, steps):
    """One training iteration (forward, backward, Adam step) on fixed random input."""
    x = torch.randn(batch, steps, module.input_size)
    params = [p for p in module.parameters() if p.requires_grad]
    x.requires_grad_(not params)  # ESN: no trainable tensors, time the backward into x
    opt = torch.optim.Adam(params or [x], lr=1e-4)

    def iteration():
        opt.zero_grad(set_to_none=True)
        out, _ = module(x)
        out.pow(2).mean().backward()
        opt.step()

    iteration()  # warm-up
    return iteration


def rate(iteration, tokens, window) -> float:
    count, start = 0, time.perf_counter()
    while True:
        iteration()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= window:
            return count * tokens / elapsed


def paired_rates(cell_iter, base_iter, tokens, window, repeats) -> tuple[float, float]:
    """Best rate of the cell and of the baseline, measured in alternating windows so that
    both see the same background load."""
    cell_best = base_best = 0.0
    for _ in range(repeats):
        base_best = max(base_best, rate(base_iter, tokens, window))
        cell_best = max(cell_best, rate(cell_iter, tokens, window))
    return cell_best, base_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="H=256, 1 layer, batch 32 only")
    parser.add_argument("--cells", default="", help="comma-separated cell names (default: all)")
    parser.add_argument("--steps", type=int, default=100, help="sequence length T")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per timing window")
    parser.add_argument("--repeats", type=int, default=2, help="timing windows per cell")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    names = [n for n in args.cells.split(",") if n] or cells.available()
    configs = (
        [(256, 1, 32)] if args.quick else list(itertools.product((256, 512), (1, 2), (32, 64)))
    )
    console = Console()
    torch.manual_seed(0)
    for hidden, layers, batch in configs:
        table = Table(
            title=f"H={hidden}, layers={layers}, batch={batch}, T={args.steps}, "
            f"threads={torch.get_num_threads()}"
        )
        for col in ("cell", "params", "tokens/s", "vs nn.LSTM", "vs own torch module"):
            table.add_column(col, justify="left" if col == "cell" else "right")
        tokens = batch * args.steps
        iters = {n: make_iteration(build(n, hidden, layers), batch, args.steps) for n in TORCH}
        rates = {}
        for name in [*TORCH, *names]:
            module = build(name, hidden, layers)
            cell_iter = iters.get(name) or make_iteration(module, batch, args.steps)
            rates[name], base = paired_rates(
                cell_iter, iters["torch.nn.LSTM"], tokens, args.window, args.repeats
            )
            ratio = rates[name] / base
            own = ""
            if name in OWN:
                mine, theirs = paired_rates(
                    cell_iter, iters[OWN[name]], tokens, args.window, args.repeats
                )
                own = f"{mine / theirs:.2f}x"
            table.add_row(
                name,
                f"{cells.count_parameters(module):,}",
                f"{rates[name]:,.0f}",
                f"{ratio:.2f}x",
                own,
            )
        console.print(table)


if __name__ == "__main__":
    main()
