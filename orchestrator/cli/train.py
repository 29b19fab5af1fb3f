"""`medsynth train`: options -> orchestrator.train.job.train_run; exits with training's code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import default_sd_scripts


@click.command("train")
@click.option("--preset", help="Preset name: default, seed-blog, low-vram (templates/presets/*.toml). "
                               "Default: [train] preset in medsynth.toml, else 'default'.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting; the value is TOML (1e-4, true, \"text\", [\"a\", \"b\"]). Repeatable. "
                   "Any other sd-scripts option: --set kohya.OPTION=VALUE.")
@click.option("--run-name", help="Folder name under runs/ (default <class>-<preset>-<timestamp>).")
@click.option("--dataset", type=click.Path(path_type=Path, file_okay=False),
              help="Dataset folder from 'medsynth dataset build' (default: [dataset] out of medsynth.toml).")
@click.option("--model", help="Base SDXL model: a .safetensors file, a Diffusers folder or a hub id.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Project file (default: ./medsynth.toml if present).")
@click.option("--dry-run", is_flag=True, help="Print the command, both TOMLs and the step arithmetic; write nothing.")
@click.option("--resume", is_flag=True,
              help="Continue --run-name (default: the newest unfinished run with a state folder) from its newest "
                   "*-state, with the run's own files and command (with --dry-run: print that command).")
@click.option("--num-processes", type=click.IntRange(min=1),
              help="GPUs to train on, on this machine (default 1, or --gpu-ids' count).")
@click.option("--gpu-ids", help="Comma-separated GPU indices, e.g. 0,1.")
@click.option("--num-machines", type=click.IntRange(min=1), default=1, show_default=True,
              help="Machines training together (multi-node). Run the same command on each, with its own "
                   "--machine-rank and the same --run-name (required); all machines need the same GPU count "
                   "(accelerate gets the total).")
@click.option("--machine-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="This machine's rank, 0 to --num-machines - 1. Rank 0 saves the LoRA files and samples; "
                   "another rank's run folder is <run-name>-node<rank> with its log only.")
@click.option("--main-process-ip", help="Address of the rank-0 machine (needed with --num-machines > 1).")
@click.option("--main-process-port", type=click.IntRange(1, 65535),
              help="Port on the rank-0 machine (default: accelerate's, 29500).")
@click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Train a run folder that was rendered but not started (by 'medsynth sweep --emit slurm'); "
                   "uses the folder's own files and command. With --resume: continue that folder's run.")
@click.option("--offline", is_flag=True, help="No hub access: sets HF_HUB_OFFLINE=1 for training and checks "
                                              "the local tokenizers and model first.")
@click.option("--cpu", is_flag=True, help="Train on the CPU (tiny test runs only; skips the GPU checks).")
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path, file_okay=False),
              help="The sd-scripts checkout to run (default: vendor/sd-scripts in the project folder when it "
                   "has one, else the medsynth checkout's).")
@settings_as_flags(num_processes="--num-processes", gpu_ids="--gpu-ids", num_machines="--num-machines",
                   machine_rank="--machine-rank", main_process_ip="--main-process-ip",
                   main_process_port="--main-process-port", run_name="--run-name", offline="--offline",
                   pretrained_model_name_or_path="--model")
def train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes, gpu_ids, num_machines,
          machine_rank, main_process_ip, main_process_port, run_dir, offline, cpu, sd_scripts) -> None:
    """Render runs/<name>/{dataset,train}.toml and sample prompts, validate them, and train with accelerate."""
    from orchestrator.train.job import train_run

    machine_flags = num_machines != 1 or machine_rank or main_process_ip or main_process_port
    if run_dir is not None:
        # with --resume it continues the folder (a sweep's run, which --run-name cannot name), else trains it
        given = [name for name, value in (("--preset", preset), ("--set", sets), ("--run-name", run_name),
                                          ("--dataset", dataset), ("--model", model),
                                          ("--dry-run", dry_run and not resume), ("--num-processes", num_processes),
                                          ("--gpu-ids", gpu_ids), ("--num-machines", num_machines != 1),
                                          ("--machine-rank", machine_rank), ("--main-process-ip", main_process_ip),
                                          ("--main-process-port", main_process_port),
                                          ("--offline", offline and not resume), ("--cpu", cpu and not resume))
                 if value]
        if given:
            raise MedsynthError(f"--run-dir {'continues' if resume else 'trains'} the folder with its own files "
                                f"and command: drop {', '.join(given)}")
    elif resume and machine_flags:
        raise MedsynthError("--resume reruns the run's own command, machine settings included: drop "
                            "--num-machines/--machine-rank/--main-process-ip/--main-process-port")
    elif resume and (preset or sets or dataset or model):
        raise MedsynthError("--resume continues a run with its own files: drop --preset/--set/--dataset/--model")
    elif resume and (num_processes or gpu_ids):
        raise MedsynthError("--resume reruns the run's own command, GPUs included: drop --num-processes/--gpu-ids")
    elif num_machines > 1 and not run_name and not resume:
        raise MedsynthError("--num-machines > 1 needs --run-name, the same on every machine: rank R's folder is "
                            "<run-name>-node<R>, and it resumes from rank 0's <run-name>")
    code = train_run(run_dir=run_dir, resume=resume, dry_run=dry_run, preset=preset, sets=sets, run_name=run_name,
                     dataset=dataset, model=model, config_path=config_path, num_processes=num_processes,
                     gpu_ids=gpu_ids, num_machines=num_machines, machine_rank=machine_rank,
                     main_process_ip=main_process_ip, main_process_port=main_process_port, offline=offline, cpu=cpu,
                     sd_scripts=sd_scripts if sd_scripts is not None else default_sd_scripts(config_path),
                     say=click.echo)
    if code != 0:
        click.echo(f"error: training exited with code {code}; see train.log in the run folder", err=True)
        sys.exit(code)
