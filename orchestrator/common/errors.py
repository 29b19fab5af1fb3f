"""The one exception type users see: its message is printed on one line by the CLI; and Interrupted, a stop
signal turned into an exception so that clean-ups run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import click


class MedsynthError(click.ClickException):
    """A user-facing error. The message names the file, row or key at fault.

    A ClickException, so every command, however it is invoked, prints it as one 'error: ...' line and exits 1
    without a traceback: the handling exists once, in click."""

    exit_code = 1

    def __init__(self, message: str):
        # one line, always: a multi-line message would break the CLI's "error: ..." contract
        super().__init__(" ".join(str(message).split()))

    def show(self, file=None) -> None:  # noqa: ANN001  (click's signature)
        click.echo(f"error: {self.format_message()}", err=True)


class Interrupted(BaseException):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) as an exception, so the clean-ups of the code it stops run.

    A BaseException like KeyboardInterrupt, so `except Exception` does not swallow it. `detail` says what the
    clean-up did; the CLI prints "error: interrupted (SIGTERM): <detail>" and exits 128 + the signal number."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def signal_name(self) -> str:
        import signal

        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def with_detail(self, detail: str) -> "Interrupted":
        return Interrupted(self.signum, detail)

    def __str__(self) -> str:
        return f"interrupted ({self.signal_name})" + (f": {' '.join(self.detail.split())}" if self.detail else "")


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise Interrupted in the main thread (where Python runs
    signal handlers), so a build removes its partial output instead of dying with it in place. A repeat of
    the signal while that clean-up runs kills the process the default way (the next run cleans up then).
    Outside the main thread, nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping: list[int] = []

    def handler(signum, frame):
        if stopping:  # asked twice: stop now, the default way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stopping.append(signum)
        raise Interrupted(signum)

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
