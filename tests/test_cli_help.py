"""`medsynth --help` stays cheap: the command line imports no heavy library before a command runs (the time
itself is measured by bench/bench_cli_help.py, not here)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "numpy", "cv2", "matplotlib", "torch", "jinja2")


def test_help_imports_no_heavy_library():
    probe = ("import sys; from click.testing import CliRunner; from orchestrator.cli.main import main; "
             "result = CliRunner().invoke(main, ['--help']); assert result.exit_code == 0, result.output; "
             f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported at --help: {done.stdout.strip()}"
