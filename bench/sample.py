"""Sampling speed: characters per second of ``rnnexp sample``'s stepper, batch 1, CPU.

The model is a char-rnn-sized LSTM language model (one-hot input, ``--layers`` x
``--hidden`` LSTM, linear head over ``--vocab`` symbols; random weights: speed does not
depend on them). Three ways to generate are timed in alternating rounds:

* ``rnnexp sample``: :func:`rnnexp.nn.generation.generate`, the command's path (the prompt once,
  then :class:`~rnnexp.nn.generation.LSTMStepper`, one token at a time, the weights laid out for
  batch 1, and the Gumbel-max draw);
* ``Stepper``: the same loop on :class:`~rnnexp.nn.generation.Stepper`, the path of every other
  cell (per-layer steps on the module's own weights, plain matmuls);
* ``fused per char``: the naive loop, calling the fused ``nn.LSTM`` on one character at a
  time with its state (it re-packs its weights every call), plus the same head and draw.

    python bench/sample.py                      # 2 x 512, default threads
    python bench/sample.py --threads 1 --chars 3000
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from rnnexp.cells import create
from rnnexp.data.vocab import Vocab
from rnnexp.nn.generation import Settings, Stepper, generate, stepper_for
from rnnexp.nn.model import OneHot, SequenceModel


def build(vocab: int, hidden: int, layers: int) -> SequenceModel:
    torch.manual_seed(0)
    rnn = create("lstm", vocab, hidden, num_layers=layers)
    head = torch.nn.Linear(hidden, vocab)
    return SequenceModel(OneHot(vocab), rnn, head, "every_step", False, 0.0).eval()


def stepper_rate(
    model: SequenceModel,
    vocab: Vocab,
    chars: int,
    stepper: Callable[[SequenceModel], Stepper] = stepper_for,
) -> float:
    """Characters per second of :func:`rnnexp.nn.generation.generate` with ``stepper`` (by
    default the command's choice, :func:`~rnnexp.nn.generation.stepper_for`)."""
    started = time.perf_counter()
    generate(model, vocab, "ROMEO:", chars, Settings(temperature=1.0), seed=0, stepper=stepper)
    return chars / (time.perf_counter() - started)


@torch.no_grad()
def fused_rate(model: SequenceModel, chars: int) -> float:
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(0)
    token, state = torch.zeros(1, 1, dtype=torch.long, device=device), None
    started = time.perf_counter()
    for _ in range(chars):
        logits, state = model(token, state)  # nn.LSTM on one step
        probs = F.softmax(logits[0, -1], dim=0)
        token = torch.multinomial(probs, 1, generator=generator).view(1, 1)
    return chars / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=65, help="symbols (tiny shakespeare: 65)")
    parser.add_argument("--chars", type=int, default=2000, help="characters per stepper round")
    parser.add_argument("--fused-chars", type=int, default=300, help="per fused round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args.vocab, args.hidden, args.layers).to(args.device)
    # "\n", then " " .. "_" (upper case, digits, punctuation: enough for the prompt "ROMEO:")
    vocab = Vocab(["\n"] + [chr(32 + k) for k in range(args.vocab - 1)], "char")
    stepper_rate(model, vocab, 200)  # warm-up: allocator, thread pool
    stepper_rate(model, vocab, 200, Stepper)
    fused_rate(model, 20)
    rates: dict[str, list[float]] = {"rnnexp sample": [], "Stepper": [], "fused per char": []}
    for _ in range(args.rounds):
        rates["rnnexp sample"].append(stepper_rate(model, vocab, args.chars))
        rates["Stepper"].append(stepper_rate(model, vocab, args.chars, Stepper))
        rates["fused per char"].append(fused_rate(model, args.fused_chars))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"{args.layers} x {args.hidden} LSTM, vocabulary {args.vocab}, batch 1, "
        f"{args.device}, {torch.get_num_threads()} thread(s), median of {args.rounds} rounds"
    )
    for name, values in rates.items():
        rounds = ", ".join(f"{r:.0f}" for r in values)
        print(f"  {name + ':':16s} {medians[name]:8.0f} chars/s  (rounds: {rounds})")
    sample, plain, fused = medians.values()
    print(f"  rnnexp sample / Stepper: {sample / plain:.2f}x; / fused per char: "
          f"{sample / fused:.1f}x  (target: >= 2000 chars/s)")  # fmt: skip


if __name__ == "__main__":
    main()
