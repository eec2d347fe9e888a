"""Data files: read a user's text file, or download a named data set into a cache.

Shared by the text tasks (``charlm``; any task that needs a file from the web). A download
goes to a temporary file beside its destination, is hashed while it streams in, and is
renamed into place only when its sha256 matches: an interrupted or corrupted download
leaves nothing behind, and a file found in the cache is one that passed the check.

The cache folder is ``cache_dir`` when given (e.g. ``task.data.cache_dir``), else
``$RNNEXP_CACHE``, else ``~/.cache/rnnexp``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rnnexp.errors import RnnexpError

CACHE_ENV = "RNNEXP_CACHE"
CHUNK = 1 << 16  # bytes per read while downloading


def cache_dir(override: str | Path | None = None) -> Path:
    """``override``, else ``$RNNEXP_CACHE``, else ``~/.cache/rnnexp`` (not created here)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "rnnexp"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, hint: str = "", progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through a temporary file, renamed only if the sha256 matches.

    Args:
        url: ``https://...`` or ``file://...`` (tests use the latter).
        dest: where the verified file goes; its folder is created.
        sha256: the expected hex digest.
        hint: how to do without the download, appended to the errors, e.g.
            ``"or pass task.data.path=FILE"``.
        progress: show a rich progress bar on stderr.

    Any failure (offline, HTTP error, wrong checksum) raises a one-line
    :class:`RnnexpError` and leaves neither ``dest`` nor a partial file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    suffix = f"; {hint}" if hint else ""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as handle:
            total = response.headers.get("Content-Length")
            bar = Progress(
                TextColumn("[bold]download[/] {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                disable=not progress,
                transient=True,
            )
            with bar:
                job = bar.add_task(dest.name, total=int(total) if total else None)
                while block := response.read(CHUNK):
                    handle.write(block)
                    digest.update(block)
                    bar.update(job, advance=len(block))
        if digest.hexdigest() != sha256:
            raise RnnexpError(
                f"checksum mismatch for {url}: sha256 {digest.hexdigest()}, expected {sha256}; "
                f"the file was not kept (retry, or check the URL){suffix}"
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise RnnexpError(
            f"cannot download {url} ({reason}): offline or blocked?{suffix}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def fetch(
    url: str,
    sha256: str,
    relative: str | Path,
    cache: str | Path | None = None,
    hint: str = "",
    progress: bool = True,
) -> Path:
    """The cached copy of ``url`` at ``<cache>/<relative>``, downloaded on first use.

    A file already in the cache is used as it is: it passed the checksum when it was
    downloaded. Delete it to download it again.
    """
    dest = cache_dir(cache) / relative
    if dest.is_file():
        return dest
    return download(url, dest, sha256, hint=hint, progress=progress)


def not_utf8(path: str | Path, key: str) -> RnnexpError:
    """The one-line error for a file that does not decode as UTF-8: the config ``key``, the
    file, and the line and byte of the first bad byte (found by decoding the raw bytes
    again, since a text reader's error offset counts from its current chunk)."""
    raw = Path(path).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        where = f": line {line} has byte 0x{raw[err.start]:02x} ({err.reason})"
    else:  # the whole decodes (the file changed since?): no line to name
        where = ""
    return RnnexpError(
        f"{key}={path} is not UTF-8 text{where}; convert it, e.g. "
        "iconv -f latin1 -t utf-8 FILE > NEW, or fix that line"
    )


def unreadable(path: str | Path, key: str, err: OSError) -> RnnexpError:
    """The one-line error for a file that exists but cannot be read (permissions, ...)."""
    return RnnexpError(f"{key}={path} cannot be read ({err.strerror or err})")


def read_text(path: str | Path, key: str = "task.data.path") -> str:
    """The whole of a UTF-8 text file; a missing or undecodable file is a one-line error
    naming the config ``key`` that gave the path."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise RnnexpError(f"{key}={path}: {what}; pass an existing UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise not_utf8(path, key) from None
    except OSError as err:
        raise unreadable(path, key, err) from None
