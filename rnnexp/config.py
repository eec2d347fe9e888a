"""Where the configs live and how config nodes become objects."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
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
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        raise RnnexpError(f"cannot build {what} from its config: {detail}") from None


def build_with(node: DictConfig, what: str, *args: Any) -> Any:
    """Build a ``_partial_`` config node and call it with ``args`` (an optimizer with the
    parameters, a schedule with the optimizer); bad keys or values give one line."""
    factory = build(node, what)
    if not callable(factory):
        return factory
    try:
        return factory(*args)
    except (TypeError, ValueError) as err:
        raise RnnexpError(f"cannot build {what} from its config: {err}") from None
