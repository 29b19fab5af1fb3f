"""Run a function over items on worker threads, results in item order, with a watchdog.

Threads, not processes: the per-image work is OpenCV (decode, resize, Canny, contours), numpy, hashlib and
file I/O, which release the GIL, so threads keep up with processes (bench/bench_images.py) without forking. A
fork of a process whose native libraries have started threads deadlocks in the child (opencv-python 5 starts
them at `import cv2`; a forked worker hung in cv2.setNumThreads), so nothing here forks.

A job that runs longer than `stall_timeout` seconds stops the run with a one-line error naming it (a hung
network mount, a pathological file): the threads are daemons, so a stuck one cannot keep the process alive.
Ctrl-C, or an error from any job, stops handing out jobs and waits at most DRAIN_TIMEOUT s for the running ones.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from orchestrator.common.errors import MedsynthError

T = TypeVar("T")
R = TypeVar("R")

STALL_TIMEOUT = 120.0  # s: how long one job may take before the run stops naming it (a 24 Mpx JPEG takes ~0.1 s)
DRAIN_TIMEOUT = 2.0   # s: how long an interrupted run waits for the jobs that are running
_POLL = 0.25          # s: how often the watchdog looks at the running jobs


def run_parallel(fn: Callable[[T], R], items: Sequence[T], *, workers: int, stall_timeout: float,
                 describe: Callable[[T], str], on_result: Callable[[R], None] | None = None) -> list[R]:
    """[fn(item) for item in items], computed on `workers` threads; `on_result` sees each result as it
    arrives (in completion order, on the caller's thread). The first exception of a job is raised here."""
    pending = deque(enumerate(items))
    running: dict[int, tuple[int, float]] = {}   # worker slot -> (item index, started at)
    lock = threading.Lock()
    done: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def work(slot: int) -> None:
        while not stop.is_set():
            with lock:
                if not pending:
                    return
                index, item = pending.popleft()
                running[slot] = (index, time.monotonic())
            try:
                done.put((index, fn(item), None))
            except BaseException as exc:  # handed to the caller's thread, which decides
                done.put((index, None, exc))
            finally:
                with lock:
                    running.pop(slot, None)

    threads = [threading.Thread(target=work, args=(slot,), name=f"medsynth-worker-{slot}", daemon=True)
               for slot in range(max(1, min(workers, len(items))))]
    results: list = [None] * len(items)
    remaining = len(items)
    try:
        for thread in threads:
            thread.start()
        while remaining:
            try:
                index, result, exc = done.get(timeout=_POLL)
            except queue.Empty:
                _check_progress(running, lock, items, stall_timeout, describe)
                continue
            if exc is not None:
                raise exc
            results[index] = result
            remaining -= 1
            if on_result is not None:
                on_result(result)
    finally:
        stop.set()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    return results


def _check_progress(running: dict[int, tuple[int, float]], lock: threading.Lock, items: Sequence,
                    stall_timeout: float, describe: Callable) -> None:
    with lock:
        started = sorted(running.values(), key=lambda entry: entry[1])
    if started and time.monotonic() - started[0][1] > stall_timeout:
        raise MedsynthError(f"{describe(items[started[0][0]])}: no progress for {stall_timeout:g} s "
                            f"(stuck reading or decoding it); stopped")
