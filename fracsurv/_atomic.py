"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees a half-written file, an interrupted writer leaves at most a
``*.tmp`` file (removed by :func:`remove_orphans` on a later run: at once when
the writer was a process of this host that no longer exists, else after an
hour), and a failed
write never leaves a stale previous file looking current: the old file stays
untouched until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "remove_orphans"]

TMP_SUFFIX = ".tmp"
_HOST = socket.gethostname().replace(".", "_").replace("~", "_")


def _tmp_prefix() -> str:
    """``.{host}~{pid}~``: lets a cleaner tell a dead writer's temporary from a live one."""
    return f".{_HOST}~{os.getpid()}~"


def _writer_is_dead(tmp: Path) -> bool:
    parts = tmp.name[1:].split("~")
    if len(parts) < 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False  # another host's (or an old-style) temporary: only age tells
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(), suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_orphans(folder: str | os.PathLike[str], pattern: str = f"**/*{TMP_SUFFIX}",
                   max_age_s: float = 3600.0) -> int:
    """Delete temporaries that a killed writer left behind.

    A temporary is removed when its writer was a process of this host that has
    exited, or when it is older than ``max_age_s`` (a writer on another host
    sharing the folder cannot be asked). Others may belong to a running writer
    and are kept.

    Returns
    -------
    int
        Files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for tmp in folder.glob(pattern):
        try:
            if tmp.is_file() and (_writer_is_dead(tmp) or tmp.stat().st_mtime < cutoff):
                tmp.unlink()
                removed += 1
        except OSError:  # removed meanwhile by another process
            continue
    return removed
