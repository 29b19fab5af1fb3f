"""A run directory, runs/<name>/: writing it, its state (process liveness, the states to resume from), its
outputs; and the dataset it trains on (dataset.json). The plan it is written from is orchestrator.train.plan's.

  dataset.toml        --dataset_config for sd-scripts (templates/dataset.toml.j2)
  train.toml          --config_file for sd-scripts (templates/train.toml.j2)
  sample_prompts.txt  the training-time sample prompts (templates/sample_prompts.txt.j2)
  command.sh          the exact command medsynth runs (cd + environment + argv), runnable by hand
  run.json            preset, overrides, resolved config, batch choice, step arithmetic, commits, package
                      versions, dataset manifest hash, seed; status and LoRA files after the run
  train.log           everything the training process printed
and, written by sd-scripts: <output_name>[-NNNNNN].safetensors, <output_name>[-NNNNNN]-state/, sample/, logs/.
The first five are written into a temporary sibling and renamed into place together.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.runs.record import read_record, record_mtime_ns, run_dirs_in, write_record

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RENDERED = ("dataset.toml", "train.toml", "sample_prompts.txt")


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name):
        raise MedsynthError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.' or '-')")
    return name


# ----------------------------------------------------------------------------------------------- writing

def command_script(argv: Sequence[str], cwd: Path, env_changes: Mapping[str, str]) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in env_changes.items())
    return ("#!/bin/sh\n# The exact command medsynth ran for this run (written by medsynth).\n"
            f"cd {shlex.quote(str(cwd))} || exit 1\n"
            f"{env + ' ' if env else ''}exec {' '.join(shlex.quote(a) for a in argv)}\n")


def write_run_dir(run_dir: Path, files: Mapping[str, str], *, command_sh: str, record: Mapping[str, Any],
                  links: Mapping[str, Path] | None = None) -> Path:
    """Create runs/<name>/ with its five files (`files`: the RENDERED texts) and `links` (path in the run folder
    -> a dataset file, hard-linked, else copied), all at once (temporary sibling + rename)."""
    if run_dir.exists():
        raise MedsynthError(f"{run_dir} already exists: choose another run_name, or resume it")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); a run folder gets the usual mode
        for name in RENDERED:
            (tmp / name).write_text(files[name], encoding="utf-8")
        (tmp / "command.sh").write_text(command_sh, encoding="utf-8")
        (tmp / "command.sh").chmod(0o755)
        write_record(tmp, record)
        for name, source in (links or {}).items():
            _link(source, tmp / name)
        try:
            os.rename(tmp, run_dir)
        except OSError as exc:  # another process created it since the check above
            raise MedsynthError(f"{run_dir} already exists: choose another run_name ({exc.strerror})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def running_mark() -> dict[str, Any]:
    """Stored with status "running": the medsynth process that trains the run, so that a later command can tell a
    run still training from one whose process was killed (its status then stays "running")."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): a reused pid differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def still_training(record: Mapping[str, Any]) -> bool | None:
    """Whether the process that marked this run "running" is alive: True / False, None where it cannot be told
    (marked on another host, or by a medsynth without the mark)."""
    mark = record.get("running_mark")
    if record.get("status") != "running":
        return False
    if not isinstance(mark, Mapping) or mark.get("host") != socket.gethostname():
        return None
    pid = mark.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    started = _process_start(pid)
    return started is None or mark.get("pid_started") is None or started == mark.get("pid_started")


# ----------------------------------------------------------------------------------------------- outputs

def lora_files(run_dir: Path, output_name: str) -> list[Path]:
    """The LoRA files sd-scripts saved: <name>-NNNNNN.safetensors per epoch, <name>.safetensors at the end."""
    pattern = re.compile(rf"^{re.escape(output_name)}(-\d{{6}}|-step\d{{8}})?\.safetensors$")
    return sorted(p for p in run_dir.iterdir() if p.is_file() and pattern.match(p.name))


def _state_step(state: Path) -> int:
    try:
        return int(json.loads((state / "train_state.json").read_text(encoding="utf-8"))["current_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def newest_state(run_dir: Path) -> Path | None:
    """The *-state folder to resume from: the highest saved step (train_state.json), then the newest."""
    states = [p for p in run_dir.glob("*-state") if p.is_dir()]
    if not states:
        return None
    return max(states, key=lambda p: (_state_step(p), p.stat().st_mtime_ns, p.name))


def _resumable(run_dir: Path) -> bool:
    """Has a state folder, has not finished (a finished run cannot go on) and is not training right now; a folder
    whose run.json cannot be read is no candidate (it is named when resumed by name)."""
    if newest_state(run_dir) is None:
        return False
    try:
        record = read_record(run_dir)
    except MedsynthError:
        return False
    return record.get("status") != "finished" and not still_training(record)


def newest_resumable_run(runs_dir: Path) -> Path | None:
    """The most recently updated resumable run."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in run_dirs_in(runs_dir) if _resumable(p)]
    return max(runs, key=record_mtime_ns) if runs else None
