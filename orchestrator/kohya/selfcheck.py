"""Cross-check rendered files with sd-scripts' own parsers (in a child process, so that sd-scripts' imports,
logging and global state never touch medsynth's process). Needs vendor/sd-scripts and its requirements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError

PROBE = Path(__file__).with_name("sd_scripts_probe.py")
MARKER = "MEDSYNTH_PROBE "
# sd-scripts must never reach the network while checking files
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run_sd_scripts_probe(cases: list[dict[str, Path | None]], sd_scripts: Path, *, python: str | None = None,
                         timeout: float = 300) -> list[dict[str, Any]]:
    """One child process for many cases ({"train", "dataset", "prompts"}: paths or None). Returns per case
    {"ok": True, "args": {name: {"value", "type"}}, "datasets": [...], "prompts": [...]} or
    {"ok": False, "stage": ..., "error": "ExceptionType: message"}."""
    request = {"sd_scripts": str(Path(sd_scripts).resolve()),
               "cases": [{k: (str(Path(v).resolve()) if v else None) for k, v in case.items()} for case in cases]}
    try:
        done = subprocess.run([python or sys.executable, str(PROBE)], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **OFFLINE})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MedsynthError(f"could not run sd-scripts' parsers from {sd_scripts}: {e}") from e
    line = next((l for l in reversed(done.stdout.splitlines()) if l.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MedsynthError(f"could not import sd-scripts from {sd_scripts} (exit {done.returncode}): {tail}")
    return json.loads(line[len(MARKER):])


def check_with_sd_scripts(train_toml: Path, dataset_toml: Path, sd_scripts: Path, *, prompts: Path | None = None,
                          python: str | None = None) -> dict[str, Any]:
    """Run sdxl_train_network's argument parser, config reader, checks, dataset sanitizer and blueprint, and its
    optimizer/scheduler construction on the files; MedsynthError with sd-scripts' message if it refuses them.
    Returns what sd-scripts made of them (parsed args with their Python types, dataset blueprint, prompts)."""
    result = run_sd_scripts_probe([{"train": train_toml, "dataset": dataset_toml, "prompts": prompts}], sd_scripts,
                                  python=python)[0]
    if not result["ok"]:
        raise MedsynthError(f"sd-scripts rejects {train_toml.name} + {dataset_toml.name} "
                            f"({result['stage']}): {result['error']}")
    return result
