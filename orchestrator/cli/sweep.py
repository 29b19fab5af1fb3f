"""`medsynth sweep SWEEP.toml`: options -> orchestrator.sweep.job.run_sweep_file; exits with the sweep's code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags
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
@settings_as_flags(num_processes="--gpus", time_limit="--time", partition="--partition", account="--account",
                   offline="--offline")
def sweep(sweep_file, dry_run, emit, gpus, time_limit, partition, account, gpu_memory, sets, config_path, offline,
          cpu, sd_scripts) -> None:
    """Train every combination of SWEEP_FILE's [grid] (or its [[runs]]) one after another.

    All runs are rendered and validated into runs/<sweep>/<run>/ before the first starts; one invalid run stops
    everything. A failed run does not stop the others; a summary table (status, wall time, final loss, caches,
    folder) ends the sweep, and runs/<sweep>/sweep.json records it after every run. Runs with the same dataset,
    resolution and model share their latent and text-encoder disk caches. Exit code: 0 when every run finished.
    File format and details: docs/sweep.md; an example: templates/sweeps/lr-optimizer.toml.
    """
    from orchestrator.sweep.job import run_sweep_file

    if dry_run and emit:
        raise MedsynthError("--dry-run and --emit: choose one (--emit writes the run folders, --dry-run nothing)")
    if not emit and (time_limit or partition or account):
        raise MedsynthError("--time/--partition/--account are for --emit slurm")
    if gpu_memory and not (dry_run or emit):
        raise MedsynthError("--gpu-memory is for --dry-run and --emit (training here uses the GPUs it finds)")
    sys.exit(run_sweep_file(sweep_file, dry_run=dry_run, emit=emit, gpus=gpus, time_limit=time_limit,
                            partition=partition, account=account, gpu_memory=gpu_memory, sets=sets,
                            config_path=config_path, offline=offline, cpu=cpu,
                            sd_scripts=sd_scripts if sd_scripts is not None else default_sd_scripts(config_path),
                            say=click.echo, warn=lambda line: click.echo(line, err=True)))
