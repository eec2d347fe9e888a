"""Where the configs live and how config nodes become objects."""

from __future__ import annotations

import inspect
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from rnnexp.errors import RnnexpError

# `conf/` at the top of the checkout ships as the package `rnnexp.conf` (pyproject.toml).
CONFIG_MODULE = "rnnexp.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
CONFIG_NAME = "config"
GROUPS = ("cell", "task", "optim", "sched", "clip", "regularizer", "memory", "experiment")


def config_dir() -> Path:
    """The folder holding ``config.yaml`` and one folder per config group."""
    return Path(str(files(CONFIG_MODULE)))


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


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with one-line errors.

    ``what`` names the config group (``"task"``, ``"optim"``, ...) for the message.
    """
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
            f"{what}.{key} is not a key of {node._target_}: remove that override, or use "
            f"one of {', '.join(accepted)}"
        )
    return RnnexpError(f"cannot build {what} from its config: {type(cause).__name__}: {cause}")


def _arguments(target: Any) -> list[str]:
    """The keyword arguments ``target`` (a dotted path) takes; none when they are unknown
    (no such target, or it passes ``**kwargs`` on)."""
    try:
        parameters = inspect.signature(get_object(str(target))).parameters.values()
    except (ImportError, ValueError, TypeError, AttributeError):
        return []
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in kinds]
