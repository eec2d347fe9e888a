"""How config nodes become objects, and what a saved config may build.

Where the configs live (:data:`GROUPS`, :func:`config_dir`) is :mod:`rnnexp.schema`'s,
re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnexp.errors import RnnexpError, print_error
from rnnexp.schema import (
    CONFIG_MODULE,
    GROUPS,
    SCHEMAS,
    check_key,
    check_value,
    config_dir,
)

CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
CONFIG_NAME = "config"
# The keys that make Hydra's `instantiate` import and call something.
SPECIAL_KEYS = ("_target_", "_args_", "_partial_", "_recursive_", "_convert_")


def choices(group: str) -> dict[str, str]:
    """``{option name: one-line description}`` for a config group, from the first comment
    line of each yaml."""
    if group not in GROUPS:
        raise RnnexpError(f"unknown config group {group!r}; choose one of: {', '.join(GROUPS)}")
    found = {}
    for path in sorted((config_dir() / group).glob("*.yaml")):
        comments = []  # the header comments, less Hydra's `# @package` directive
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            if not line.startswith("# @package"):
                comments.append(line.lstrip("# ").strip())
        found[path.stem] = comments[0] if comments else ""
    return found


def override_completions(incomplete: str) -> list[str]:
    """Shell completion of one ``rnnexp train`` override (the command's ``shell_complete``):
    ``ce`` -> ``cell=``; ``cell=g`` -> ``cell=gru``, ``cell=gru_minimal``; ``train.ma`` ->
    ``train.max_skipped=``, ``train.max_steps=``. Groups come from the shipped configs,
    keys from the ``train``/``model`` schema."""
    key, sep, value = incomplete.partition("=")
    if sep:
        options = choices(key) if key in GROUPS else {}
        return [f"{key}={option}" for option in options if option.startswith(value)]
    keys = [f"{group}=" for group in GROUPS]
    keys += [f"{section}.{f.name}=" for section, schema in SCHEMAS.items()
             for f in dataclasses.fields(schema)]  # fmt: skip
    return [key for key in keys if key.startswith(incomplete)]


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with one-line errors.

    ``what`` names the config group (``"task"``, ``"optim"``, ...) for the message. The
    node's keys are first checked against the target's annotations (:func:`check_arguments`).
    """
    check_arguments(node, what, skip=set(kwargs))
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, RnnexpError):
            raise cause from None
        if cause is None:
            raise RnnexpError(f"cannot build {what} from its config: {err}") from None
        raise _config_error(node, what, cause) from None


def build_with(node: DictConfig, what: str, *args: Any) -> Any:
    """Build a ``_partial_`` config node and call it with ``args`` (an optimizer with the
    parameters, a schedule with the optimizer); bad keys or values give one line."""
    factory = build(node, what)
    if not callable(factory):
        return factory
    try:
        return factory(*args)
    except (TypeError, ValueError) as err:
        raise _config_error(node, what, err, positional=len(args)) from None


def _config_error(
    node: DictConfig, what: str, cause: BaseException, positional: int = 0
) -> RnnexpError:
    """The one-line error for a config node whose target refused its arguments. A key the
    target does not take (``+task.calibrate=true`` on a task without it, a misspelt
    override) is named together with the keys it does take (all its keyword arguments but
    the first ``positional``, which :func:`build_with` passes)."""
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
    accepted = _arguments(node.get("_target_"))[positional:] if unexpected else []
    key = unexpected.group(1) if unexpected else ""
    if accepted and key not in accepted:
        return RnnexpError(
            f"{what}.{key} is not a key of {node._target_}: remove it (an override, or a "
            f"key an experiment config sets: ~{what}.{key}), or use one of "
            f"{', '.join(accepted)}"
        )
    return RnnexpError(f"cannot build {what} from its config: {type(cause).__name__}: {cause}")


def _arguments(target: Any) -> list[str]:
    """The keyword arguments ``target`` (a dotted path) takes; none when they are unknown
    (no such target, or a function that passes ``**kwargs`` on). A class whose
    ``__init__`` passes ``**settings`` on to its base's takes the base's keys too."""
    try:
        obj = get_object(str(target))
        inits = (
            [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)]
            if inspect.isclass(obj)
            else [obj]
        )
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names: list[str] = []
        for function in inits:
            parameters = list(inspect.signature(function).parameters.values())
            names += [p.name for p in parameters if p.kind in kinds and p.name not in names]
            if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
                return [name for name in names if name != "self"]
    except (ImportError, ValueError, TypeError, AttributeError):
        return []
    return []  # **kwargs all the way down: unknown


@functools.cache
def buildable() -> dict[str, frozenset[Any]]:
    """rnnexp's registry of what may be built: ``{key path: values}`` for every special key
    (``_target_``, ``_partial_``, ...) in the shipped configs, at the place the config
    puts it, e.g. ``{"task._target_": {"rnnexp.tasks.timer.TimerTask", ...},
    "optim._partial_": {True}}``. The config folder is the registry."""
    found: dict[str, set[Any]] = {}
    for path in sorted(config_dir().rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        package = re.search(r"^# @package (\S+)", text, re.MULTILINE)
        relative = path.parent.relative_to(config_dir()).parts
        prefix = package.group(1) if package else ".".join(relative)
        prefix = "" if prefix == "_global_" else prefix
        for key, value in _special_keys(yaml.safe_load(text), prefix):
            found.setdefault(key, set()).add(value)
    return {key: frozenset(values) for key, values in found.items()}


def sweep_direction(target: str, objective: str | None = None) -> str:
    """The resolver ``${rnnexp.direction:${task._target_},${train.objective}}``, which the
    shipped ``conf/hparams_search/`` configs give ``hydra.sweeper.direction``: ``maximize``
    or ``minimize``, from the mode of the metric that the task function returns
    (``train.objective``; null: the task's own, :func:`rnnexp.tasks.base.metric_mode`).
    Only the task classes that rnnexp's configs name (:func:`buildable`) are imported."""
    from rnnexp.tasks.base import metric_mode  # tasks build with this module: import late

    allowed = buildable().get("task._target_", frozenset())
    if target not in allowed:
        raise RnnexpError(
            f"rnnexp.direction: task._target_={target!r} is not one of rnnexp's tasks "
            f"({', '.join(sorted(allowed))}); set hydra.sweeper.direction yourself"
        )
    mode = metric_mode(get_class(target), objective)
    return "maximize" if mode == "max" else "minimize"


def _direction(target: str, objective: str | None = None) -> str:
    """:func:`sweep_direction` as a resolver: an error is one line and exit code 1 (Hydra
    would print a traceback for an error raised while it resolves the sweeper's config)."""
    try:
        return sweep_direction(target, objective)
    except RnnexpError as err:
        print_error(err)
        raise SystemExit(1) from None


# Hydra resolves the sweeper's config (hydra.sweeper.direction) with the composed config
# before the first job, in the process that imported this module to find the config.
OmegaConf.register_new_resolver("rnnexp.direction", _direction, replace=True)


def _special_keys(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """``(key path, value)`` of every special key in a tree of dicts and lists."""
    if isinstance(node, list):
        return [hit for i, x in enumerate(node) for hit in _special_keys(x, f"{prefix}[{i}]")]
    if not isinstance(node, dict):
        return []
    hits = []
    for key, value in node.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key in SPECIAL_KEYS:
            hits.append((where, value if isinstance(value, str | bool | int) else repr(value)))
        else:
            hits.extend(_special_keys(value, where))
    return hits


def _interpolations(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(key path, string)`` of every key or string value holding ``${...}``."""
    if isinstance(node, list):
        return [hit for i, x in enumerate(node) for hit in _interpolations(x, f"{prefix}[{i}]")]
    if isinstance(node, dict):
        hits = []
        for key, value in node.items():
            where = f"{prefix}.{key}" if prefix else str(key)
            hits.extend([(where, str(key))] if "${" in str(key) else _interpolations(value, where))
        return hits
    return [(prefix, node)] if isinstance(node, str) and "${" in node else []


def check_saved_config(config: Any, source: str | Path) -> None:
    """Refuse, in one line, a config saved in a checkpoint that could make rnnexp call
    something the checkpoint chose rather than one of rnnexp's own classes.

    Every special key (``_target_``, ``_args_``, ``_partial_``, ``_recursive_``,
    ``_convert_``), at any depth and inside lists, must stand where the shipped configs put
    one and hold one of the values they give it (:func:`buildable`): ``task._target_`` one
    of ``conf/task/*.yaml``'s targets, and so on. Strings with ``${...}`` are refused too:
    saved configs are resolved, and a resolver can read the environment. Call this before
    the config reaches OmegaConf or Hydra."""
    tail = "; the checkpoint was not written by rnnexp or was altered"
    if not isinstance(config, dict):
        raise RnnexpError(f"refusing to load {source}: its config is not a mapping{tail}")
    registry = buildable()
    for where, value in _special_keys(config, ""):
        allowed = registry.get(where)
        if allowed is None:
            raise RnnexpError(
                f"refusing to load {source}: its config names {where}={value!r}, and rnnexp's "
                f"configs have no {where.rpartition('.')[2]} there{tail}"
            )
        if (type(value), value) not in {(type(v), v) for v in allowed}:  # True is not 1
            choices = ", ".join(sorted(map(str, allowed)))
            what = "buildable classes" if where.endswith("_target_") else "values for it"
            raise RnnexpError(
                f"refusing to load {source}: its config names {where}={value!r}, which is not "
                f"one of rnnexp's {what} ({choices}){tail}"
            )
    for where, text in _interpolations(config):
        raise RnnexpError(
            f"refusing to load {source}: its config holds the interpolation {where}={text!r}, "
            f"which resolved configs never hold{tail}"
        )


OVERRIDE = re.compile(r"(?P<prefix>\+\+|\+|~)?(?P<key>[^=]*)(?:=(?P<value>.*))?", re.DOTALL)


@dataclass(frozen=True)
class Override:
    """One command-line override, Hydra's grammar at its top level: ``[+|++|~]key[=value]``
    (``+`` adds a key, ``++`` adds or changes, ``~`` deletes). ``value`` is the text after
    the first ``=`` (``None`` without one); the value's own grammar is left to the reader."""

    prefix: str
    key: str
    value: str | None

    @property
    def adding(self) -> bool:
        return self.prefix in ("+", "++")


def parse_override(text: str) -> Override:
    """The one reader of ``key=value`` overrides (``rnnexp evaluate``'s, a job's
    ``.hydra/overrides.yaml`` for ``rnnexp report``)."""
    match = OVERRIDE.fullmatch(str(text))
    assert match is not None  # every string matches: each part is optional
    return Override(match["prefix"] or "", match["key"], match["value"])


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """``key=value`` overrides (:func:`parse_override`) onto a saved config; ``+key=value``
    adds a new key. None may name a special key such as ``_target_``
    (:func:`check_override`); ``train.*`` and ``model.*`` values are checked against the
    schema."""
    for override in overrides:
        parsed = parse_override(override)
        key = parsed.key
        if parsed.value is None or not key or parsed.prefix == "~":
            raise RnnexpError(f"override {override!r} is not of the form key=value")
        if not parsed.adding and OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise RnnexpError(
                f"unknown config key {key!r} in override {override!r}; "
                f"use +{override} to add a new key"
            )
        value = OmegaConf.from_dotlist([f"{key}={parsed.value}"])
        check_override(override, OmegaConf.to_container(value))
        cfg = OmegaConf.merge(cfg, value)
        check_key(cfg, key)  # train.* and model.*: the schema's type and range
    return cfg


def check_override(override: str, value: Any) -> None:
    """Refuse an override (``key=value`` given to ``evaluate``) that would make Hydra
    build or call something: a special key in its key path, or in its value (a dict)."""
    key = parse_override(override).key
    named = [part for part in re.split(r"[.\[\]]", key) if part in SPECIAL_KEYS]
    named += [where.rpartition(".")[2] for where, _ in _special_keys(value, key)]
    if named:
        raise RnnexpError(
            f"override {override!r} sets {named[0]}: overrides of a saved run may change "
            "values, not what is built"
        )
    if _interpolations(value):
        raise RnnexpError(
            f"override {override!r} holds an interpolation ${{...}}: give the value itself"
        )


def check_arguments(node: DictConfig, what: str, skip: set[str] | None = None) -> None:
    """Check the keyword arguments that ``node`` gives one of rnnexp's own targets (a task,
    a clipping rule, a regularizer, ...) against its constructor's annotations, so that
    ``task.num_test=abc`` is one line naming the key (:func:`rnnexp.schema.check_value`).
    Keys in ``skip`` (passed by the caller), special keys, nested nodes and arguments
    without a checkable annotation are left to the target."""
    target = node.get("_target_")
    if not isinstance(target, str) or not target.startswith("rnnexp."):
        return
    hints = _annotations(target)
    for key in node:
        if key in hints and key not in (skip or set()) and not str(key).startswith("_"):
            try:
                value = node[key]  # resolves interpolations
            except OmegaConfBaseException:
                continue  # instantiate says what is wrong with it
            if not isinstance(value, DictConfig | ListConfig):
                check_value(f"{what}.{key}", value, hints[key])


def _annotations(target: str) -> dict[str, Any]:
    """``{argument: annotation}`` of a target (a dotted path): a function's, or a class's
    ``__init__``'s together with those of the base classes it passes ``**kwargs`` on to."""
    try:
        obj = get_object(target)
    except (ImportError, ValueError, AttributeError):
        return {}
    if isinstance(obj, type):
        inits = [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__]
    else:  # a function (rnnexp.cells.create) has no __mro__
        inits = [obj]
    hints: dict[str, Any] = {}
    for init in inits:
        try:
            found = get_type_hints(init)
        except (NameError, TypeError):
            break
        hints = {**found, **hints}  # a subclass's annotation wins
        parameters = inspect.signature(init).parameters.values()
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    hints.pop("return", None)
    return hints
