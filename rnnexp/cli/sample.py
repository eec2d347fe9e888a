"""``rnnexp sample``: restore a language model's checkpoint and write generated text.

The model comes back through :func:`rnnexp.train.checkpoint.restore` (the same path as ``rnnexp
evaluate``; the vocabulary is in the checkpoint, no data file is read); the text comes
from :func:`rnnexp.nn.generation.generate` (steppers, O(1) work a token, and the seeded draw).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import TextIO

from rnnexp.errors import RnnexpError
from rnnexp.nn.generation import Settings, generate, prompt_ids
from rnnexp.tasks.base import Generates
from rnnexp.train.checkpoint import restore

__all__ = ["SEPARATOR", "Settings", "generate", "sample_run"]  # rnnexp.nn.generation's own two

SEPARATOR = "\n---------------\n"  # between samples, as nanoGPT prints them


def sample_run(
    run: str | Path,
    which: str = "best",
    prime: str = "",
    length: int = 500,
    settings: Settings | None = None,
    seed: int | None = None,
    num_samples: int = 1,
    device: str = "cpu",
    output: Path | None = None,
    stream: bool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> list[str]:
    """``rnnexp sample``: restore the checkpoint, generate, write the text.

    Text goes to ``output`` (a file, UTF-8) or to ``out`` (stdout). ``stream`` writes each
    piece as it comes (default: when ``out`` is a terminal); otherwise each sample is
    written whole. Without ``seed`` a random one is drawn and reported on ``err``.
    """
    out, err = out or sys.stdout, err or sys.stderr
    restored = restore(run, which, overrides=[f"train.device={device}"])
    if not isinstance(restored.task, Generates):
        raise RnnexpError(
            f"{restored.path} is a {restored.cfg.task.name} model; rnnexp sample needs a "
            "language model (task=charlm)"
        )
    vocab = restored.task.token_vocab()  # from the checkpoint: no data file is read
    prompt_ids(vocab, prime)  # a bad prompt fails before anything is written
    try:
        target = open(output, "w", encoding="utf-8") if output else out  # noqa: SIM115
    except OSError as error:  # a missing or read-only folder, a folder named like the file
        raise RnnexpError(
            f"cannot write {output}: {error.strerror or error}; give --output a file "
            "in a writable folder"
        ) from None
    if seed is None:
        seed = secrets.randbelow(2**31)
        print(f"seed {seed} (repeat with --seed {seed})", file=err)
    if stream is None:
        stream = output is None and out.isatty()

    started = [False] * num_samples

    def emit(k: int, piece: str) -> None:
        if k and not started[k]:
            target.write(SEPARATOR)
        started[k] = True
        target.write(piece)
        target.flush()

    try:
        texts = generate(restored.model, vocab, prime, length, settings, seed=seed,
                         num_samples=num_samples, emit=emit if stream else None)  # fmt: skip
        if not stream:
            target.write(SEPARATOR.join(texts))
        target.write("\n")
        target.flush()
    finally:
        if output:
            target.close()
    if output:
        print(f"wrote {num_samples} sample(s) to {output}", file=err)
    return texts
