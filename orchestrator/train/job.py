"""One `medsynth train`: from the options to training's exit code (or, dry, to the printed plan) for a new run,
a resumed one or a run folder rendered earlier, saying what happens through the caller's `say`. Messages name
settings (num_processes, gpu_ids, run_name); the CLI shows them as its flags."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.common.errors import MedsynthError


def parse_gpu_ids(text: str | None) -> tuple[int, ...]:
    """'0,1' -> (0, 1); None or '' -> ()."""
    if not text:
        return ()
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise MedsynthError(f"gpu_ids {text!r}: expected comma-separated GPU indices such as 0,1") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise MedsynthError(f"gpu_ids {text!r}: indices must be distinct and >= 0")
    return ids


def train_run(*, run_dir: Path | None, resume: bool, dry_run: bool, preset: str | None, sets: Sequence[str],
              run_name: str | None, dataset: Path | None, model: str | None, config_path: Path | None,
              num_processes: int | None, gpu_ids: str | None, num_machines: int, machine_rank: int,
              main_process_ip: str | None, main_process_port: int | None, offline: bool, cpu: bool,
              sd_scripts: Path, say: Callable[[str], None]) -> int:
    """Train (or with dry_run describe) a new run from the settings; with resume continue `run_name` (default: the
    newest unfinished run with a state folder); with run_dir train, or with resume continue, that folder with its
    own files and command. Returns training's exit code."""
    from orchestrator.common.project_file import find_project_file, load_project_file
    from orchestrator.runs.folder import check_run_name, newest_resumable_run
    from orchestrator.train import launch
    from orchestrator.train.command import Machines
    from orchestrator.train.resume import machines_of
    from orchestrator.train.settings import load_settings

    if run_dir is not None:
        return _resume(run_dir, dry_run, sd_scripts, offline, cpu, say) if resume else launch.launch_created(run_dir)[0]
    machines = Machines(num_machines, machine_rank, main_process_ip, main_process_port)
    ids = parse_gpu_ids(gpu_ids)
    processes = num_processes or (len(ids) if ids else 1)
    if ids and processes != len(ids):
        raise MedsynthError(f"num_processes {processes} but {len(ids)} gpu_ids")
    project = find_project_file(config_path, Path.cwd())
    tables = load_project_file(project) if project is not None else None
    settings = load_settings(preset_name=preset, project=project, project_tables=tables, sets=sets,
                             options={"dataset": str(dataset) if dataset else None,
                                      "pretrained_model_name_or_path": model},
                             cwd=Path.cwd())
    if resume:
        runs = settings.config.runs_dir
        run_dir = runs / check_run_name(run_name) if run_name else newest_resumable_run(runs)
        if run_dir is None:
            raise MedsynthError(f"nothing to resume: no unfinished run under {runs} has a *-state folder")
        if not run_name and machines_of(run_dir).num_machines > 1:
            raise MedsynthError(f"the newest unfinished run {run_dir.name} is a multi-node run: give run_name on each "
                                f"machine ({run_dir.name} on rank 0, {run_dir.name}-node<R> on rank R)")
        return _resume(run_dir, dry_run, sd_scripts, offline, cpu, say)
    if dry_run:
        say(launch.dry_run(settings, sd_scripts=sd_scripts, num_processes=processes, gpu_ids=ids, run_name=run_name,
                           offline=offline, cpu=cpu, machines=machines).removesuffix("\n"))
        return 0
    code, run_dir = launch.launch(settings, run_name=run_name, sd_scripts=sd_scripts, num_processes=processes,
                                  gpu_ids=ids, offline=offline, cpu=cpu, machines=machines)
    if code == 0:
        say(f"medsynth: done: {run_dir}")
    return code


def _resume(run_dir: Path, dry_run: bool, sd_scripts: Path, offline: bool, cpu: bool,
            say: Callable[[str], None]) -> int:
    from orchestrator.train import resume

    if dry_run:
        say(resume.resume_dry_run(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu).removesuffix("\n"))
        return 0
    return resume.resume(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)[0]
