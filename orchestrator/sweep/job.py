"""One `medsynth sweep`: from a sweep file and the options to the sweep's exit code: every run rendered and
validated, then described (dry run), emitted as run folders and a Slurm array script, or trained here in turn,
saying what happens through the caller's `say` (and `warn`, for the lines meant for stderr)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def run_sweep_file(sweep_file: Path, *, dry_run: bool, emit: str | None, gpus: int, time_limit: str | None,
                   partition: str | None, account: str | None, gpu_memory: float | None, sets: Sequence[str],
                   config_path: Path | None, offline: bool, cpu: bool, sd_scripts: Path,
                   say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    """Plan every run of `sweep_file` (each with `gpus` processes), then stop (dry_run), write the folders and
    a Slurm script (emit="slurm") or train them here. Returns 0 when every run finished (or nothing was
    trained), 130 when one was interrupted, else 1. Messages name settings (time_limit, num_processes)."""
    from orchestrator.common.project_file import find_project_file, load_project_file
    from orchestrator.runs.sweep_record import SWEEP_JSON
    from orchestrator.sweep import run as sweep_run
    from orchestrator.sweep import slurm as sweep_slurm
    from orchestrator.sweep.spec import read_sweep
    from orchestrator.train import launch
    from orchestrator.train import preflight
    from orchestrator.train.config import parse_set
    from orchestrator.train.settings import load_settings

    sweep_slurm.check_options(time=time_limit, partition=partition, account=account)
    spec = read_sweep(sweep_file)
    cwd = Path.cwd()
    project = find_project_file(config_path, cwd)
    tables = load_project_file(project) if project is not None else None
    base = load_settings(preset_name=spec.preset, project=project, project_tables=tables, cwd=cwd)
    extra = [parse_set(sets, base=cwd)] if sets else []
    launcher = None
    if dry_run or emit:
        seen = [preflight.Gpu(f"assumed {gpu_memory:g} GiB GPU", gpu_memory)] if gpu_memory else \
            (None if cpu else preflight.probe_gpus_fast())
    else:
        launcher = launch.start(base.preset.min_gpu_gib, sd_scripts=sd_scripts, num_processes=gpus, offline=offline,
                                cpu=cpu)
        seen = launcher.gpus
    sweep_dir, planned = sweep_run.plan_sweep(spec, base, gpus=seen, total_processes=gpus, extra=extra)
    say(f"sweep {spec.name}: {len(planned)} runs, rendered and validated ({sweep_dir})")
    say(sweep_run.plan_table(sweep_dir, planned))
    if any(p.plan.batch.how == "no-gpu" for p in planned):
        say("note: batch size \"auto\" chosen without a GPU (the smallest tier); give --gpu-memory GIB "
            "or set train_batch_size in [fixed]")
    if dry_run:
        sweep_run.check_new(sweep_dir, planned)
        say("dry run: nothing written")
        return 0
    if emit:
        launcher = sweep_run.planning_launcher(sd_scripts=sd_scripts, gpus=seen, num_processes=gpus,
                                               offline=offline, cpu=cpu, min_gpu_gib=base.preset.min_gpu_gib)
        sweep_run.write_sweep(spec, sweep_dir, planned, launcher, trained_here=False, say=warn)
        script = sweep_slurm.write_script(sweep_dir, name=spec.name, run_dirs=[p.plan.run_dir for p in planned],
                                          gpus=gpus, time=time_limit, partition=partition, account=account,
                                          python=sys.executable)  # medsynth itself, not the training interpreter
        say(f"wrote {len(planned)} run folders and {script}; submit with: sbatch {shlex.quote(str(script))}")
        return 0
    assert launcher is not None
    record = sweep_run.write_sweep(spec, sweep_dir, planned, launcher)
    record = sweep_run.run_sweep(sweep_dir, record, say=say)
    say(f"\nsweep {spec.name}: summary ({sweep_dir / SWEEP_JSON})")
    say(sweep_run.summary_table(sweep_dir, record))
    if any(e["exit_code"] == 130 for e in record["runs"]):  # Ctrl-C, also in the last run (nothing skipped)
        return 130
    return 0 if all(e["status"] == "finished" for e in record["runs"]) else 1
