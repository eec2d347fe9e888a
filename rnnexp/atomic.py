"""The one atomic file writer: readers see the old file or the new one, never a part.

:func:`atomic_write` writes a temporary file ``.{name}.{pid}.tmp`` in the target's folder,
flushes it to disk and renames it over the target. A signal (SIGINT, SIGTERM) that arrives
meanwhile is held back until the file is in place, so an interrupt or a preemption never
leaves a half-written file; a temporary file left by a writer that was killed (``kill -9``)
is removed at the next write of the same target. Checkpoints, ``metrics.json``, evaluation
results and figures are all written through it.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rnnexp.errors import RnnexpError

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_ELSEWHERE = "write elsewhere (for a run: hydra.run.dir=...)"
FIXES = {
    errno.ENOSPC: f"free space on that disk, or {_ELSEWHERE}",
    errno.EDQUOT: f"free space within your quota, or {_ELSEWHERE}",
    errno.EACCES: f"the folder is not writable: make it writable, or {_ELSEWHERE}",
    errno.EPERM: f"the folder is not writable: make it writable, or {_ELSEWHERE}",
    errno.EROFS: f"the file system is read-only: {_ELSEWHERE}",
    errno.ENOTDIR: f"a file stands where a folder is needed: {_ELSEWHERE}",
    errno.EEXIST: f"a file stands where a folder is needed: {_ELSEWHERE}",
    errno.EISDIR: f"a folder stands where the file goes: remove it, or {_ELSEWHERE}",
}


def temporary_path(path: Path, pid: int | None = None) -> Path:
    """The temporary file that process ``pid`` (default: this one) writes ``path`` through."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path``.

    SIGINT and SIGTERM are deferred until the file is in place (then delivered), stale
    temporary files of ``path`` from dead writers are removed, and an ``OSError`` (full
    disk, read-only folder, ...) becomes a one-line :class:`RnnexpError` naming ``path``
    and the fix; the temporary file never stays behind.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with deferred_signals():
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(path)
            try:
                raw = _File(tmp, "w")
                try:
                    with io.BufferedWriter(raw) as handle:
                        write(handle)
                        handle.flush()
                        os.fsync(handle.fileno())
                except Exception:
                    if raw.error is not None:  # torch.save turns it into a RuntimeError
                        raise raw.error from None
                    raise
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as err:
        reason = err.strerror or str(err)
        fix = FIXES.get(err.errno, _ELSEWHERE)
        raise RnnexpError(f"cannot write {path}: {reason}; {fix}") from None
    return path


class _File(io.FileIO):
    """A file that keeps its first write error: some writers (``torch.save``) report
    it as another exception, or not at all."""

    error: OSError | None = None

    def write(self, data: Any) -> int | None:
        try:
            return super().write(data)
        except OSError as err:
            self.error = self.error or err
            raise


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` (``.{name}.<pid>.tmp``) whose writer is no
    longer running; the removed files."""
    prefix, removed = f".{path.name}.", []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix) : -len(".tmp")]
        ours = name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit()
        if ours and int(pid) != os.getpid() and not _alive(int(pid)):
            stale = path.with_name(name)
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextmanager
def deferred_signals(signums: tuple[int, ...] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold back ``signums`` inside the block, then deliver those that arrived, once each,
    to the handlers that were in place before (so Ctrl-C still raises KeyboardInterrupt,
    a SIGTERM still ends the process, only after the block). Handlers can only be swapped
    in the main thread: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler is not None:  # None: a handler not installed from Python; leave it
            previous[signum] = handler
            signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON atomically (:func:`atomic_write`)."""
    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
