"""``train.resume`` continues the *same* run; ``train.init_from`` starts a new one from its weights.

A resumed run restores the model, optimizer, schedule, data stream and RNG states of the
checkpoint, so every setting that shaped them must be the run's own: :func:`check_same_run`
compares the composed config with the config saved in the checkpoint and refuses, in one
line, any difference outside :data:`RESUMABLE` (how long to train, how often to evaluate
and log, where the data lies, which device) and the ``callbacks.*`` keys (:data:`LOGGING`).
What is recorded (``.hydra/config.yaml``, ``metrics.json``) then equals what runs.

To change a setting, start a new run from the weights with ``train.init_from=RUN_OR_CKPT``
(char-rnn's ``-init_from``, nanoGPT's ``init_from``): the model's weights (and, for the
same task, its vocabularies) come from the checkpoint; the optimizer, schedule, step count
and RNG start afresh with the new settings, and ``metrics.json`` records the source and the
settings that differ from it (:func:`changed_keys`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from rnnexp.errors import RnnexpError
from rnnexp.report.load import METRICS_FILE, read_metrics

# The keys train.resume may change: they do not touch the state being restored.
RESUMABLE = frozenset(
    {
        "train.max_steps",  # train for longer (a schedule planned over it is checked below)
        "train.eval_every",
        "train.log_every",
        "train.progress",
        "train.histograms",
        "train.eigenvalues",
        "train.diagnostics",
        "train.stop_at",
        "train.patience",
        "train.objective",  # what the run returns to a sweeper: nothing of its state
        "train.keep_checkpoints",  # which checkpoints to keep as well: nothing restored
        "train.max_skipped",
        "train.device",
        "train.num_threads",
        "train.resume",
        "train.init_from",
    }
)
# Where the data lie may differ between machines (the files are the same: a text task
# checks its vocabulary against the checkpoint's).
DATA_LOCATION = re.compile(r"task\.(data\.(\w+_)?(path|dir)|embeddings\.path)")
# What watches the run (conf/callbacks/: logging, figures, progress) may change too; a
# checkpoint written before the callbacks group existed lacks these keys.
LOGGING = re.compile(r"callbacks\..+")


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` for a tree of plain dicts (lists and scalars are leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (value before, value after)}`` for every leaf that differs between two
    configs; a key one side lacks has the value ``"<absent>"`` there."""
    old, new = flatten(before), flatten(after)
    absent = "<absent>"
    return {
        key: (old.get(key, absent), new.get(key, absent))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, absent) != new.get(key, absent)
    }


def _fixed(key: str, values: tuple[Any, Any]) -> bool:
    """Whether a change of ``key`` would make the resumed run differ from the saved one.
    A key the saved config lacks (one added to rnnexp since) is harmless at ``null``."""
    if key in RESUMABLE or DATA_LOCATION.fullmatch(key) or LOGGING.fullmatch(key):
        return False
    return not (values[0] == "<absent>" and values[1] is None)


def check_same_run(saved: dict[str, Any], current: dict[str, Any], source: str | Path) -> None:
    """Refuse, in one line, a resume whose config changes the model, task, optimizer,
    schedule or anything else outside :data:`RESUMABLE`; the message names the keys, the
    run's own overrides (from its ``metrics.json``) and ``train.init_from``."""
    changed = {key: v for key, v in changed_keys(saved, current).items() if _fixed(key, v)}
    if not changed:
        return
    shown = ", ".join(
        f"{key} ({a!r} -> {b!r})" for key, (a, b) in list(collapse(changed).items())[:6]
    )
    more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
    remedy = "repeat the run's own settings"
    overrides = run_overrides(source)
    if overrides is not None:
        remedy += f" ({' '.join(map(shlex.quote, overrides)) or 'no overrides'})"
    if "sched.T_max" in changed:
        remedy = (
            f"the schedule was planned for {changed['sched.T_max'][0]} steps "
            "(sched.T_max follows train.max_steps) and cannot be stretched; " + remedy
        )
    raise RnnexpError(
        f"train.resume continues the same run, but this command changes {shown}{more}; "
        f"{remedy} and change only train.max_steps, train.eval_every or logging keys, or "
        f"start a new run from its weights with train.init_from={source}"
    )


def collapse(changed: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """A group swapped for another option (``sched=constant`` on a cosine run: its
    ``_target_`` changed; ``cell=lstm`` on a gru run: its ``name``) as one entry, ``sched``
    (``'CosineAnnealingLR' -> 'ConstantLR'``), ``cell`` (``'gru' -> 'lstm'``), instead of
    every key of both options; other keys as they are."""
    swapped: dict[str, tuple[Any, Any]] = {}
    for key, values in changed.items():
        group, _, leaf = key.partition(".")
        if leaf in ("name", "_target_") and group not in swapped:
            swapped[group] = tuple(str(v).rpartition(".")[2] for v in values)
    kept = {
        key: values
        for key, values in changed.items()
        if not any(key.startswith(f"{group}.") for group in swapped)
    }
    return {**swapped, **kept}


def run_overrides(source: str | Path) -> list[str] | None:
    """The command-line overrides a run was started with (its ``metrics.json``), less
    ``train.resume``/``train.init_from``; ``None`` for a bare checkpoint file."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent.parent  # <run>/checkpoints/last.pt
    try:
        metrics = read_metrics(folder / METRICS_FILE)
    except ValueError:  # unreadable, or not a JSON object
        return None
    overrides = None if metrics is None else metrics.get("overrides")
    if not isinstance(overrides, list):
        return None
    return [
        str(o) for o in overrides if not str(o).startswith(("train.resume=", "train.init_from="))
    ]


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The command that continues ``run_dir`` (printed when a run is interrupted)."""
    kept = [o for o in overrides if not o.startswith(("train.resume=", "train.init_from="))]
    return shlex.join(["rnnexp", "train", *kept, f"train.resume={run_dir}"])
