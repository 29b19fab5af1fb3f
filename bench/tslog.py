"""Timestamp a training run's output: read stdin, split on "\\n" and "\\r" (tqdm redraws its bar with "\\r"),
write each piece as "[seconds since start] text" to LOGFILE, and echo it to stdout (bar redraws at most every
ECHO_EVERY seconds, so a console log stays short). bench/gpu_figures.py reads LOGFILE for step times and events.

usage: medsynth train ... 2>&1 | python bench/tslog.py LOGFILE
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import BinaryIO, TextIO

ECHO_EVERY = 10.0
_BAR = re.compile(r"^\s*steps:\s+\d+%")


def timestamp_stream(src: BinaryIO, log: TextIO, echo: TextIO, echo_every: float = ECHO_EVERY) -> None:
    t0 = time.monotonic()
    log.write(f"# t0_epoch={time.time():.3f}\n")
    last_echo = -1e9
    pending = b""

    def emit(piece: bytes, redraw: bool) -> None:
        nonlocal last_echo
        text = piece.decode("utf-8", errors="replace").rstrip()
        if not text:
            return
        t = time.monotonic() - t0
        log.write(f"[{t:9.3f}] {text}\n")
        log.flush()
        if redraw and _BAR.match(text):
            if t - last_echo < echo_every:
                return
            last_echo = t
        echo.write(f"[{t:8.2f}] {text}\n")
        echo.flush()

    fd = src.fileno()
    while chunk := os.read(fd, 65536):
        pending += chunk
        while (cut := min((i for i in (pending.find(b"\n"), pending.find(b"\r")) if i >= 0), default=-1)) >= 0:
            emit(pending[:cut], pending[cut:cut + 1] == b"\r")
            pending = pending[cut + 1:]
    emit(pending, False)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: ... | python bench/tslog.py LOGFILE")
    with open(argv[0], "w", encoding="utf-8") as log:
        timestamp_stream(sys.stdin.buffer, log, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
