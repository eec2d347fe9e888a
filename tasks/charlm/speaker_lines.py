"""Where a play-text model's held-out loss comes from: speaker lines against the rest.

    python tasks/charlm/speaker_lines.py outputs/charlm/lstm/<run> [more runs] \
        [--data ../shared/data/tinyshakespeare/input.txt] [--checkpoint best] [--uncalibrated]

In tiny shakespeare a speech starts with a line holding only the speaker's name and a
colon, after a blank line ("\\n\\nPROSPERO:\\n"). For val and test, this prints the loss of
the run's model (with its calibration, if any) on the characters of those lines (their
newline included) and on the rest, and the same for the speaker lines whose name never
occurs in the training text ("their part": what those lines add to the split's mean
loss). The model reads each split as one stream, `seq_len` steps at a time with the
state carried, so the totals are within 0.003 of `rnnexp evaluate`'s (which reads 32
streams side by side).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from rnnexp.train.checkpoint import Restored, restore

SPEAKER_LINE = re.compile(r"(?<=\n\n)[A-Z][A-Za-z' ]*:\n")


def character_losses(restored: Restored, split: str) -> torch.Tensor:
    """The loss of every prediction of ``split`` in text order (nats): ``(N - 1,)``.
    The task's own evaluation pass, read as one stream."""
    task = restored.task
    task.eval_batch_size = 1  # one stream: the chunks follow the text
    task.limits[split] = None  # all of it, whatever task.num_val/num_test say
    with torch.no_grad():
        return torch.cat([
            F.cross_entropy(logits, targets, reduction="none")
            for logits, targets in task.predictions(restored.model, split, restored.device)
        ]).cpu()  # fmt: skip


def split_losses(restored: Restored, split: str) -> dict[str, float]:
    """The mean loss of ``split``, and the share and mean loss of its speaker lines, of
    those whose name the training text lacks (``unseen``), and of the rest."""
    task = restored.task
    training_text = task.vocab.decode(task.split("train").tolist())
    tokens = task.split(split)
    text = task.vocab.decode(tokens.tolist())
    losses = character_losses(restored, split)  # losses[i]: text[i + 1]
    speaker = torch.zeros(len(text), dtype=torch.bool)
    unseen = torch.zeros(len(text), dtype=torch.bool)
    for line in SPEAKER_LINE.finditer(text):
        speaker[line.start() : line.end()] = True
        if f"\n{line.group()}" not in training_text:
            unseen[line.start() : line.end()] = True
    speaker, unseen = speaker[1:], unseen[1:]  # aligned with the predictions
    nan = float("nan")
    return {
        "loss": losses.mean().item(),
        "speaker_share": speaker.float().mean().item(),
        "speaker_loss": losses[speaker].mean().item() if speaker.any() else nan,
        "unseen_share": unseen.float().mean().item(),
        "unseen_loss": losses[unseen].mean().item() if unseen.any() else nan,
        "unseen_part": (losses[unseen].sum() / len(losses)).item(),  # of the split's mean
        "other_loss": losses[~speaker].mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders or checkpoint files")
    parser.add_argument("--data", help="the text file, if not where the run read it")
    parser.add_argument("--checkpoint", default="best", help="best or last (default: best)")
    parser.add_argument(
        "--uncalibrated", action="store_true", help="leave out a task.calibrate temperature"
    )
    args = parser.parse_args()
    table = Table("run", "split", "loss", "speaker lines: share", "loss there",
                  "unseen names: share", "loss there", "their part", "loss elsewhere",
                  title="held-out loss (nats/char) by kind of line")  # fmt: skip
    for run in args.runs:
        overrides = [f"task.data.path={args.data}"] if args.data else []
        restored = restore(run, args.checkpoint, overrides)
        if args.uncalibrated:  # the read-out's temperature back to 1: the trained weights
            restored.model.temperature.fill_(1.0)
        for split in ("val", "test"):
            m = split_losses(restored, split)
            table.add_row(
                Path(run).name, split, f"{m['loss']:.4f}",
                f"{m['speaker_share']:.1%}", f"{m['speaker_loss']:.3f}",
                f"{m['unseen_share']:.1%}", f"{m['unseen_loss']:.3f}",
                f"{m['unseen_part']:.3f}", f"{m['other_loss']:.4f}",
            )  # fmt: skip
    Console(width=max(Console().width, 150)).print(table)


if __name__ == "__main__":
    main()
