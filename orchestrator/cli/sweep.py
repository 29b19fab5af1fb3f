"""`medsynth sweep SWEEP.toml`: render + validate every run of a grid, then train them in turn (or emit Slurm)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import default_sd_scripts


@click.command("sweep")
@click.argument("sweep_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Render and validate every run and print the table; write nothing.")
@click.option("--emit", type=click.Choice(["slurm"]),
              help="Write the run folders and an sbatch array script (runs/<sweep>/sweep.slurm, one task per run) "
                   "instead of training here.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="GPUs per run (accelerate processes); with --emit slurm also the --gres=gpu:N request.")
@click.option("--time", "time_limit", metavar="HH:MM:SS", help="--emit slurm: time limit per task.")
@click.option("--partition", help="--emit slurm: the Slurm partition.")
@click.option("--account", help="--emit slurm: the Slurm account.")
@click.option("--gpu-memory", type=click.FloatRange(min=1), metavar="GIB",
              help="With --dry-run or --emit: the GPU memory to choose batch size \"auto\" for (the runs are "
                   "rendered where no such GPU is visible; default: a visible GPU, else the smallest tier).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="A setting for every run, over the sweep file (as in 'medsynth train --set'). Repeatable.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Project file (default: ./medsynth.toml if present); its [train] table is the base.")
@click.option("--offline", is_flag=True, help="No hub access for training (HF_HUB_OFFLINE=1), as in 'train'.")
@click.option("--cpu", is_flag=True, help="Train on the CPU (tiny test runs only; skips the GPU checks).")
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path, file_okay=False),
              help="The sd-scripts checkout to run (default: vendor/sd-scripts in the project folder when it "
                   "has one, else the medsynth checkout's).")
def sweep(sweep_file, dry_run, emit, gpus, time_limit, partition, account, gpu_memory, sets, config_path, offline,
          cpu, sd_scripts) -> None:
    """Train every combination of SWEEP_FILE's [grid] (or its [[runs]]) one after another.

    All runs are rendered and validated into runs/<sweep>/<run>/ before the first starts; one invalid run stops
    everything. A failed run does not stop the others; a summary table (status, wall time, final loss, caches,
    folder) ends the sweep, and runs/<sweep>/sweep.json records it after every run. Runs with the same dataset,
    resolution and model share their latent and text-encoder disk caches. Exit code: 0 when every run finished.
    File format and details: docs/sweep.md; an example: templates/sweeps/lr-optimizer.toml.
    """
    sd_scripts = sd_scripts if sd_scripts is not None else default_sd_scripts(config_path)
    try:
        code = _sweep(sweep_file, dry_run, emit, gpus, time_limit, partition, account, gpu_memory, sets, config_path,
                      offline, cpu, sd_scripts)
    except MedsynthError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


def _sweep(sweep_file, dry_run, emit, gpus, time_limit, partition, account, gpu_memory, sets, config_path, offline,
           cpu, sd_scripts) -> int:
    from orchestrator.runs.sweep_record import SWEEP_JSON
    from orchestrator.train import launch
    from orchestrator.train import preflight
    from orchestrator.sweep import run as sweep_run
    from orchestrator.sweep import slurm as sweep_slurm
    from orchestrator.train.config import parse_set
    from orchestrator.train.settings import load_settings
    from orchestrator.common.project_file import find_project_file, load_project_file
    from orchestrator.sweep.spec import read_sweep

    if dry_run and emit:
        raise MedsynthError("--dry-run and --emit: choose one (--emit writes the run folders, --dry-run nothing)")
    if not emit and (time_limit or partition or account):
        raise MedsynthError("--time/--partition/--account are for --emit slurm")
    if gpu_memory and not (dry_run or emit):
        raise MedsynthError("--gpu-memory is for --dry-run and --emit (training here uses the GPUs it finds)")
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
    click.echo(f"sweep {spec.name}: {len(planned)} runs, rendered and validated ({sweep_dir})")
    click.echo(sweep_run.plan_table(sweep_dir, planned))
    if any(p.plan.batch.how == "no-gpu" for p in planned):
        click.echo("note: batch size \"auto\" chosen without a GPU (the smallest tier); give --gpu-memory GIB "
                   "or set train_batch_size in [fixed]")
    if dry_run:
        sweep_run.check_new(sweep_dir, planned)
        click.echo("dry run: nothing written")
        return 0
    if emit:
        launcher = sweep_run.planning_launcher(sd_scripts=sd_scripts, gpus=seen, num_processes=gpus,
                                               offline=offline, cpu=cpu, min_gpu_gib=base.preset.min_gpu_gib)
        sweep_run.write_sweep(spec, sweep_dir, planned, launcher, trained_here=False,
                              say=lambda line: click.echo(line, err=True))
        script = sweep_slurm.write_script(sweep_dir, name=spec.name, run_dirs=[p.plan.run_dir for p in planned],
                                          gpus=gpus, time=time_limit, partition=partition, account=account,
                                          python=sys.executable)  # medsynth itself, not the training interpreter
        click.echo(f"wrote {len(planned)} run folders and {script}; submit with: sbatch {shlex.quote(str(script))}")
        return 0
    assert launcher is not None
    record = sweep_run.write_sweep(spec, sweep_dir, planned, launcher)
    record = sweep_run.run_sweep(sweep_dir, record, say=click.echo)
    click.echo(f"\nsweep {spec.name}: summary ({sweep_dir / SWEEP_JSON})")
    click.echo(sweep_run.summary_table(sweep_dir, record))
    if any(e["exit_code"] == 130 for e in record["runs"]):  # Ctrl-C, also in the last run (nothing skipped)
        return 130
    return 0 if all(e["status"] == "finished" for e in record["runs"]) else 1
