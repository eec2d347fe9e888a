"""The typed schema of the ``train`` and ``model`` config nodes, and the one check of a
config value against a type annotation.

``conf/config.yaml`` holds the defaults; :class:`TrainConfig` and :class:`ModelConfig`
hold each key's type and allowed range. :func:`check_config` runs before a run builds or
writes anything (``rnnexp.cli.train.run``), :func:`check_key` on each override that
``evaluate``, ``sample`` and ``predict`` apply to a saved config, and
:func:`check_value` also on the keyword arguments of rnnexp's own config targets
(:func:`rnnexp.config.check_arguments`). A bad value is one :class:`RnnexpError` line
naming the key, the value and the fix::

    train.max_steps=abc is not an integer; give a whole number >= 1

Values are checked as they are, not converted: OmegaConf's structured merge would accept
``"5"`` for an integer or ``yes`` for a boolean, and the loop reads the unconverted value.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import torch
import yaml
from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.errors import RnnexpError, print_error

# `conf/` at the top of the checkout ships as the package `rnnexp.conf` (pyproject.toml).
CONFIG_MODULE = "rnnexp.conf"
GROUPS = (
    "cell", "task", "optim", "sched", "clip", "regularizer", "memory", "callbacks", "experiment",
    "debug", "hparams_search",
)  # fmt: skip


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and one folder per config group."""
    return Path(str(files(CONFIG_MODULE)))


# what a value of each type is called: (it is not ..., give ...)
NOUNS: dict[type, tuple[str, str]] = {
    bool: ("true or false", "true or false"),
    int: ("an integer", "a whole number"),
    float: ("a number", "a number"),
    str: ("a string", "a string"),
    type(None): ("null", "null"),
}


def rule(check: Callable[[Any], bool], wanted: str, doc: str = "") -> Any:
    """A schema field without a default (``conf/config.yaml`` has it) whose value, unless
    null, must pass ``check``; ``wanted`` completes "give ...", ``doc`` says what it is."""
    return field(default=MISSING, metadata={"check": check, "wanted": wanted, "doc": doc})


def at_least(low: int, doc: str = "", nullable: bool = False) -> Any:
    """An integer field ``>= low`` (or null, with ``nullable``)."""
    wanted = f"a whole number >= {low}"
    return rule(lambda v: v >= low, f"null or {wanted}" if nullable else wanted, doc)


def fraction(doc: str = "") -> Any:
    """A float field in ``[0, 1)``: a dropout probability."""
    return rule(lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1), e.g. 0.1 (0: none)", doc)


def plain(doc: str = "", wanted: str | None = None) -> Any:
    """A field whose type is its only rule; ``wanted`` completes "give ..." if not the type."""
    return field(default=MISSING, metadata={"doc": doc, "wanted": wanted})


def is_device(name: str) -> bool:
    """Whether ``name`` is ``auto`` or a device torch can parse (``cpu``, ``cuda:1``, ...);
    whether that device exists is :func:`rnnexp.train.record.resolve_device`'s question."""
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


PATH = "null or a run folder or checkpoint path (in quotes if it looks like a number)"


@dataclass
class TrainConfig:
    """The ``train`` node: the loop's settings (defaults in ``conf/config.yaml``)."""

    max_steps: int = at_least(1, "gradient steps in all")
    batch_size: int = at_least(1, "sequences per step")
    eval_every: int = at_least(1, "steps between evaluations and checkpoints")
    stop_at: float | None = plain("stop once val's task metric reaches this")
    patience: int | None = at_least(
        1, "evaluations without a better val metric before stopping", nullable=True
    )
    objective: str | None = plain(
        "the val metric a run returns to a sweeper (best over the run); null: the task's"
    )
    log_every: int = at_least(1, "steps between TensorBoard scalars")
    seed: int = at_least(0, "model init, dropout and training data")
    device: str = rule(is_device, "auto, cpu, cuda or cuda:N")
    num_threads: int | None = at_least(1, "CPU threads for torch", nullable=True)
    resume: str | None = plain("run folder or checkpoint to continue", PATH)
    init_from: str | None = plain("run folder or checkpoint whose weights a new run starts", PATH)
    ema_decay: float | None = rule(
        lambda v: 0.0 < v < 1.0, "null or a number in (0, 1), e.g. 0.999", "weight averaging"
    )
    on_nan: Literal["stop", "skip"] = plain("what to do when the loss or gradient is NaN/inf")
    max_skipped: int = at_least(1, "with on_nan=skip, consecutive skipped steps before stopping")
    washout: int = at_least(0, "optim=ridge: initial steps of each sequence left out")
    histograms: bool = plain("weight/gradient histograms at each evaluation")
    eigenvalues: bool = plain("the recurrent matrices' eigenvalues at each evaluation")
    diagnostics: bool | None = plain("gradient flow and spectral radius; null: the task's default")
    progress: bool = plain("rich progress bar")
    keep_checkpoints: int | None = at_least(
        0, "also keep step_<k>.pt of the last N evaluations; null: none", nullable=True
    )
    fast: bool | None = plain("null: the small-net fast path where it applies; false: never")


@dataclass
class ModelConfig:
    """The ``model`` node: the network around the cell (defaults in ``conf/config.yaml``)."""

    hidden_size: int = at_least(1, "units per layer and direction")
    num_layers: int = at_least(1, "stacked recurrent layers")
    dropout: float = fraction("between stacked layers and before the head")
    bidirectional: bool | None = plain("null: the task's default")
    embedding_size: int = at_least(1, "tasks with an embedding encoder")
    input_dropout: float = fraction("on the encoder's output before the first layer")
    weight_drop: float = fraction("DropConnect on W_hh while training")
    pooling: Literal["last", "mean", "max"] = plain("many-to-one heads")
    char_encoder: Literal["none", "cnn", "lstm"] = plain("a feature per word from its characters")
    char_embedding_size: int = at_least(1, "character embedding size")
    char_hidden_size: int = at_least(1, "char lstm: units per direction; char cnn: filters")
    crf: bool = plain("tagging tasks: CRF output layer")


SCHEMAS: dict[str, type] = {"train": TrainConfig, "model": ModelConfig}


def top_level_keys() -> set[str]:
    """The keys a composed config may have at its top: the config groups, ``model`` and
    ``train``, and the helper keys that shipped experiments define (``hidden_by_cell``).
    ``experiment``, ``debug`` and ``hparams_search`` are not keys: their options are
    ``# @package _global_``."""
    known = {*GROUPS, *SCHEMAS} - {"experiment", "debug", "hparams_search"}
    for group in ("experiment", "debug", "debug_task"):  # `# @package _global_` configs
        for path in (config_dir() / group).glob("*.yaml"):
            known |= set(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return known - {"defaults", "hydra"}


def check_config(cfg: DictConfig) -> None:
    """Check every key of ``cfg.train`` and ``cfg.model``: each known to the schema, none
    missing, each of its type and in its range; and that the top level holds no unknown
    key (``+trian.max_steps=5``). Raises one :class:`RnnexpError` line."""
    known = top_level_keys()
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            keys = ", ".join(sorted(known))
            hint = f"did you mean {close[0]}?" if close else f"use one of {keys}"
            raise RnnexpError(f"{key} is not a config key; {hint}")
    for section, schema in SCHEMAS.items():
        values = _plain(cfg, section)
        if not isinstance(values, dict):
            raise RnnexpError(f"{section} is not a config node; remove the override that set it")
        for key, value in values.items():
            _check_field(section, schema, str(key), value)
        for name in _fields(schema):
            if name not in values:
                raise RnnexpError(
                    f"{section}.{name} is missing; give it a value, e.g. {section}.{name}=..."
                )


def check_key(cfg: DictConfig, key: str) -> None:
    """Check one dotted key of ``cfg`` after an override set it: a ``train.*`` or
    ``model.*`` key against the schema; anything else is left to the object it builds
    (:func:`rnnexp.config.check_arguments`)."""
    section, _, name = key.partition(".")
    if section not in SCHEMAS:
        return
    if not name:
        check_config(cfg)
        return
    top = name.split(".")[0].split("[")[0]
    value = _plain(cfg, f"{section}.{top}")
    _check_field(section, SCHEMAS[section], top, value)


def check_value(key: str, value: Any, annotation: Any, wanted: str | None = None) -> None:
    """Check ``value`` against a type ``annotation`` built from ``bool``, ``int``,
    ``float``, ``str``, ``None``, ``Literal`` and unions of them (``int | None``);
    annotations of other kinds are not checked. ``key`` names the value in the message,
    ``wanted`` overrides what it asks for."""
    allowed = _members(annotation)
    if allowed is None or any(_fits(value, member) for member in allowed):
        return
    literals = [a for m in allowed if get_origin(m) is Literal for a in get_args(m)]
    nouns = [NOUNS[m] for m in allowed if m in NOUNS]
    if literals:
        choices = ", ".join(map(_show, literals))
        raise RnnexpError(f"{key}={_show(value)} is not a choice; give one of: {choices}")
    what = " or ".join(n[0] for n in nouns)
    asked = wanted or " or ".join(n[1] for n in nouns)
    raise RnnexpError(f"{key}={_show(value)} is not {what}; give {asked}")


def _check_field(section: str, schema: type, name: str, value: Any) -> None:
    """One key of a schema node: known, of its type, within its rule."""
    fields = _fields(schema)
    key = f"{section}.{name}"
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        fix = (
            f"did you mean {section}.{close[0]}?"
            if close
            else f"remove it; the keys are {', '.join(fields)}"
        )
        raise RnnexpError(f"{key} is not a key of {section}; {fix}")
    spec = fields[name]
    annotation = get_type_hints(schema)[name]
    check_value(key, value, annotation, spec.metadata.get("wanted"))
    check = spec.metadata.get("check")
    if value is not None and check is not None and not check(value):
        raise RnnexpError(f"{key}={_show(value)} is not allowed; give {spec.metadata['wanted']}")


def _fields(schema: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _plain(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` with interpolations resolved, as plain Python data."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as err:
        raise RnnexpError(f"{key}: {str(err).splitlines()[0]}") from None
    return value


def _members(annotation: Any) -> list[Any] | None:
    """The members of a union (or the annotation alone); ``None`` when any member is of
    a kind this check does not know."""
    members = (
        list(get_args(annotation))
        if get_origin(annotation) in (Union, types.UnionType)
        else [annotation]
    )
    known = all(m in NOUNS or get_origin(m) is Literal for m in members)
    return members if known else None


def _fits(value: Any, member: Any) -> bool:
    if get_origin(member) is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(member))
    if member is float:  # an integer is a number; a boolean is not
        return isinstance(value, int | float) and not isinstance(value, bool)
    if member is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, member)


def _show(value: Any) -> str:
    """A value as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class CheckOutputFolder(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): before Hydra creates
    the run's folder (or the sweep's), make sure it can, so that an unwritable path, a file
    in the way or a full disk is one line and exit code 1, not Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_folder(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_folder(config, "hydra.sweep.dir")


def _check_folder(config: DictConfig, key: str) -> None:
    """Write a nameless temporary file in the deepest folder of ``key``'s path that exists
    (the path itself may hold the time, which changes until Hydra resolves it)."""
    folder = Path(str(OmegaConf.select(config, key)))
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file, not a folder", str(existing))
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = (
            "free space on that disk, or give another folder" if full else "give a writable folder"
        )
        message = (
            f"{key}={folder} cannot be created ({existing}: {err.strerror or err}); "
            f"{fix}, e.g. {key}=/tmp/rnnexp-runs"
        )
        print_error(message)
        raise SystemExit(1) from None
