"""One process at a time: an exclusive, non-blocking file lock that a crashed holder cannot leave stuck."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.common.errors import MedsynthError


@contextmanager
def exclusive(path: Path, *, cannot_write: str, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold the exclusive lock `path`, or refuse at once with MedsynthError(busy(" (pid N)")) when another process
    holds it; `cannot_write` starts the message when the lock file cannot be made.

    An flock on `path`, which holds the holder's pid; the kernel drops the lock when its process dies,
    however it dies, so a stale file never blocks. The file is removed on release while still locked; a process
    that opened the removed file before that sees it is no longer the one at the path, and locks anew."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MedsynthError(f"{cannot_write}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise MedsynthError(busy(pid)) from None
        except OSError:
            pass  # no flock on this file system (some network mounts): go on unlocked
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            current = False
        if current:
            break
        os.close(fd)  # locked a file the previous holder had just removed: lock the one at the path now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    except OSError:
        pass  # the pid is only for the refusal message (a full disk may not take it)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)
