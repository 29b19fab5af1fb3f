"""Constants and helpers of the e2e tests (imported by tests/e2e/conftest.py and the test modules)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from orchestrator.common.paths import REPO_ROOT

CACHE = Path(os.environ.get("MEDSYNTH_E2E_CACHE", REPO_ROOT / "build" / "e2e"))
DIM, ALPHA, EPOCHS, RES = 8, 4, 2, 256  # dim != alpha, both off the defaults: the files must say what was asked
OUTPUT_NAME = "e2e_lora"


def run_checked(argv: list[str], timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done
