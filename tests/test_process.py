"""The process runner (orchestrator.common.process) with several children, as generation runs them: every output
line prefixed, the first failure's exit code, and a Ctrl-C that lands while the children start forwarded to all
of them, not lost."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from orchestrator.common import process


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_several_children_stream_prefixed_lines_and_return_the_first_failure(tmp_path):
    commands = [(child("print('a'); print('b', end='')"), dict(os.environ)),
                (child("import sys; print('c'); sys.exit(4)"), dict(os.environ))]
    out = io.BytesIO()
    code = process.run_children(commands, cwd=tmp_path, log_path=tmp_path / "log", out=out)
    log = (tmp_path / "log").read_bytes()
    assert code == 4 and log == out.getvalue()
    assert sorted(log.splitlines()) == [b"[0] a", b"[0] b", b"[1] c"]


def test_one_child_streams_without_a_prefix(tmp_path):
    code = process.run_streaming(child("print('plain')"), cwd=tmp_path, env=dict(os.environ),
                                 log_path=tmp_path / "log", out=io.BytesIO())
    assert code == 0 and (tmp_path / "log").read_text() == "plain\n"


def test_ctrl_c_while_the_children_start_reaches_every_child(tmp_path, monkeypatch):
    # each child is in its own process group, out of the terminal's reach: a Ctrl-C that lands right after the
    # first child exists must reach it and the ones started after it, not abort medsynth and orphan them
    started = []
    real_popen = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return started[-1]

    monkeypatch.setattr(process.subprocess, "Popen", popen_then_ctrl_c)
    sleeper = (child("import time; time.sleep(60)"), dict(os.environ))
    begun = time.monotonic()
    try:
        code = process.run_children([sleeper, sleeper], cwd=tmp_path, log_path=tmp_path / "log", out=io.BytesIO(),
                                    what="the generation processes")
    except KeyboardInterrupt:
        for p in started:
            p.kill()
            p.wait()
        pytest.fail("the Ctrl-C escaped run_children and left the children running")
    assert code == 130 and time.monotonic() - begun < 30
    assert all(p.returncode is not None for p in started)
    assert "SIGINT sent to the generation processes" in (tmp_path / "log").read_text()
