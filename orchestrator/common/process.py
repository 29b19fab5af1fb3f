"""Running medsynth's long child processes (training, generation): each in its own process group (no shell), its
output copied as it comes to the terminal and appended to a log file, Ctrl-C forwarded.

The children sit outside the terminal's process group, so a Ctrl-C reaches medsynth only: the first is forwarded
to every child's group as SIGINT and medsynth keeps streaming until they exit; a second sends SIGTERM, a third
and later SIGKILL. The handlers are installed before the first child starts: a Ctrl-C in between must not escape
and orphan it (it is sent as soon as the child exists). An exit code is the child's (128 + the signal number when
a signal ended it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.common.errors import MedsynthError

_ESCALATION = {1: signal.SIGINT, 2: signal.SIGTERM}  # then SIGKILL


def run_streaming(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path,
                  out: IO[bytes] | None = None, what: str = "the training process group") -> int:
    """Run argv, copying its output to `out` (default: the terminal) and appending it to log_path as it comes
    (progress bars included); return its exit code. `what` names the child in the forwarding notes."""
    return run_children([(argv, env)], cwd=cwd, log_path=log_path, out=out, what=what)


def run_children(commands: Sequence[tuple[Sequence[str], Mapping[str, str]]], *, cwd: Path, log_path: Path,
                 out: IO[bytes] | None = None, what: str = "the child processes") -> int:
    """Several children at once (e.g. one per GPU), each (argv, environment). With more than one, every output
    line gets '[i] ' before it. Returns the first non-zero exit code, else 0."""
    children: list[subprocess.Popen] = []
    presses = 0
    with open(log_path, "ab") as log:
        tee = _Tee(log, out if out is not None else sys.stdout.buffer)

        def send(count: int, to: Sequence[subprocess.Popen]) -> None:
            sig = _ESCALATION.get(count, signal.SIGKILL)
            tee.write(f"\nmedsynth: {signal.Signals(sig).name} sent to {what}; waiting for it\n".encode())
            for child in to:
                _signal_group(child, sig)

        def forward(signum: int, frame: Any) -> None:
            nonlocal presses
            presses += 1
            if children:  # else it is sent as soon as a child exists
                send(presses, children)

        previous = {s: _install(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for argv, env in commands:
                try:
                    child = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
                except OSError as exc:
                    for started in children:
                        _signal_group(started, signal.SIGTERM)
                        started.wait()
                    raise MedsynthError(f"cannot start {argv[0]}: {exc}") from exc
                children.append(child)
                if presses:
                    send(presses, [child])
            prefixed = len(children) > 1
            pumps = [threading.Thread(target=_pump, args=(c, tee, f"[{i}] ".encode() if prefixed else b""),
                                      daemon=True) for i, c in enumerate(children)]
            for pump in pumps[1:]:
                pump.start()
            pumps[0].run()  # the first child's output in this thread
            for pump in pumps[1:]:
                pump.join()
            codes = [c.wait() for c in children]
        finally:
            for s, handler in previous.items():
                _install(s, handler)
    codes = [128 - c if c < 0 else c for c in codes]
    return next((c for c in codes if c != 0), 0)


class _Tee:
    """The log and the terminal, one writer at a time. A closed terminal or pipe must not orphan the children:
    writing goes on to the log alone. Reentrant: the signal handler's note is written in the main thread, which
    may be inside a write when the signal comes."""

    def __init__(self, log: IO[bytes], terminal: IO[bytes]):
        self.log, self.lock = log, threading.RLock()
        self.terminal: IO[bytes] | None = terminal

    def write(self, data: bytes) -> None:
        with self.lock:
            self.log.write(data)
            self.log.flush()
            if self.terminal is not None:
                try:
                    self.terminal.write(data)
                    self.terminal.flush()
                except OSError:
                    self.terminal = None


def _pump(child: subprocess.Popen, tee: _Tee, prefix: bytes) -> None:
    """Copy the child's output as it comes; with a prefix, whole lines only (so lines of children don't mix)."""
    assert child.stdout is not None
    fd, pending = child.stdout.fileno(), b""
    while chunk := os.read(fd, 65536):
        if not prefix:
            tee.write(chunk)
            continue
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if lines:
            tee.write(b"".join(prefix + line + b"\n" for line in lines))
    if pending:  # a last line without its newline gets one: the next child's line must not run on from it
        tee.write(prefix + pending + b"\n")


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except ProcessLookupError:
        pass


def _install(signum: int, handler: Any) -> Any:
    """Set a signal handler where that is possible (only the main thread may); return the previous one."""
    if handler is None:
        return None
    try:
        return signal.signal(signum, handler)
    except ValueError:
        return None
