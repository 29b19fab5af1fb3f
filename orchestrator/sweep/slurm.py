"""`medsynth sweep --emit slurm`: an sbatch array script (templates/sweep.slurm.j2), one task per run folder.

Each task runs `medsynth train --run-dir <folder>` on a folder rendered and validated here; the compute node
redoes the launch checks (sd-scripts, GPUs, packages). #SBATCH lines are parsed by sbatch without a shell, so
their values are checked to be plain words; the run folders and paths the shell reads are shell-quoted.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

import jinja2

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError
from orchestrator.common.atomic import write_atomic

TEMPLATE = "sweep.slurm.j2"
SCRIPT = "sweep.slurm"
_TIME = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")       # Slurm's MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]
_WORD = re.compile(r"^[A-Za-z0-9_.,-]+$")                 # partition / account names (comma: several partitions)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./%-]+$")


def check_options(*, time: str | None, partition: str | None, account: str | None) -> None:
    if time is not None and not _TIME.match(time):
        raise MedsynthError(f"time_limit {time!r}: use Slurm's format, e.g. 12:00:00 or 1-00:00:00")
    for option, value in (("partition", partition), ("account", account)):
        if value is not None and not _WORD.match(value):
            raise MedsynthError(f"{option} {value!r}: expected a Slurm name (letters, digits, '_', '.', '-', ',')")


def render_script(*, name: str, run_dirs: Sequence[Path], script: Path, gpus: int, time: str | None,
                  partition: str | None, account: str | None, python: str, repo: Path | None = None) -> str:
    check_options(time=time, partition=partition, account=account)
    # the task starts where `python -m orchestrator.cli.main` imports this medsynth: the checkout it runs from, else
    # (installed) the folder the sweep was emitted from
    repo = repo if repo is not None else paths.SOURCE_ROOT or Path.cwd()
    if not run_dirs:
        raise MedsynthError("a Slurm array needs at least one run")
    return shell_environment().get_template(TEMPLATE).render(
        name=name, run_dirs=[str(d) for d in run_dirs], script=str(script), gpus=gpus, time=time,
        partition=partition, account=account, python=python, repo=str(repo), output=log_option(script))


def shell_environment() -> jinja2.Environment:
    """Jinja for shell scripts: no HTML escaping; the `sh` filter shell-quotes a value."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths.template_dirs()), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    return env


def log_option(script: Path) -> str | None:
    """The array's log file pattern beside the script; sbatch reads --output without a shell, so it is written only
    when the path needs no quoting (else Slurm's default)."""
    log = script.parent / "slurm-%A_%a.out"
    return str(log) if _SAFE_PATH.match(str(log)) else None


def write_script(sweep_dir: Path, **options) -> Path:
    script = sweep_dir / SCRIPT
    write_atomic(script, render_script(script=script, **options))
    script.chmod(0o755)
    return script
