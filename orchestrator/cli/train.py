"""`medsynth train`: options -> orchestrator.train.config / .launch / .resume; prints and exits with the run's
code."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import default_sd_scripts


_MACHINE_FLAGS = {"num_machines": "--num-machines", "machine_rank": "--machine-rank",
                  "main_process_ip": "--main-process-ip", "main_process_port": "--main-process-port"}
_MACHINE_SETTING = re.compile(r"\b(" + "|".join(_MACHINE_FLAGS) + r")\b")


def _machines(num_machines: int, machine_rank: int, main_process_ip: str | None, main_process_port: int | None):
    """The library's Machines, its messages naming this command's options instead of the settings."""
    from orchestrator.train.command import Machines

    try:
        return Machines(num_machines, machine_rank, main_process_ip, main_process_port)
    except MedsynthError as exc:
        raise MedsynthError(_MACHINE_SETTING.sub(lambda m: _MACHINE_FLAGS[m[0]], str(exc))) from None


def _gpu_ids(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise MedsynthError(f"--gpu-ids {text!r}: expected comma-separated GPU indices such as 0,1") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise MedsynthError(f"--gpu-ids {text!r}: indices must be distinct and >= 0")
    return ids


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
def train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes, gpu_ids, num_machines,
          machine_rank, main_process_ip, main_process_port, run_dir, offline, cpu, sd_scripts) -> None:
    """Render runs/<name>/{dataset,train}.toml and sample prompts, validate them, and train with accelerate."""
    from orchestrator.train.launch import launch_created

    sd_scripts = sd_scripts if sd_scripts is not None else default_sd_scripts(config_path)
    try:
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
            code = _resume(run_dir, dry_run, sd_scripts, offline, cpu) if resume else launch_created(run_dir)[0]
        else:
            machines = _machines(num_machines, machine_rank, main_process_ip, main_process_port)
            code = _train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes,
                          _gpu_ids(gpu_ids), machines, offline, cpu, sd_scripts)
    except MedsynthError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if code != 0:
        click.echo(f"error: training exited with code {code}; see train.log in the run folder", err=True)
        sys.exit(code)


def _train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes, gpu_ids, machines,
           offline, cpu, sd_scripts) -> int:
    from orchestrator.common.project_file import find_project_file, load_project_file
    from orchestrator.runs.folder import check_run_name, newest_resumable_run
    from orchestrator.train import launch
    from orchestrator.train.command import Machines
    from orchestrator.train.settings import load_settings
    from orchestrator.train.resume import machines_of

    processes = num_processes or (len(gpu_ids) if gpu_ids else 1)
    if gpu_ids and processes != len(gpu_ids):
        raise MedsynthError(f"--num-processes {processes} but {len(gpu_ids)} --gpu-ids")
    if machines.num_machines > 1 and not run_name and not resume:
        raise MedsynthError("--num-machines > 1 needs --run-name, the same on every machine: rank R's folder is "
                            "<run-name>-node<R>, and it resumes from rank 0's <run-name>")
    project = find_project_file(config_path, Path.cwd())
    tables = load_project_file(project) if project is not None else None
    settings = load_settings(preset_name=preset, project=project, project_tables=tables, sets=sets,
                             options={"dataset": str(dataset) if dataset else None,
                                      "pretrained_model_name_or_path": model},
                             cwd=Path.cwd())
    if resume:
        if machines != Machines():
            raise MedsynthError("--resume reruns the run's own command, machine settings included: drop "
                                "--num-machines/--machine-rank/--main-process-ip/--main-process-port")
        if preset or sets or dataset or model:
            raise MedsynthError("--resume continues a run with its own files: drop --preset/--set/--dataset/--model")
        if num_processes or gpu_ids:
            raise MedsynthError("--resume reruns the run's own command, GPUs included: drop --num-processes/--gpu-ids")
        runs = settings.config.runs_dir
        run_dir = runs / check_run_name(run_name) if run_name else newest_resumable_run(runs)
        if run_dir is None:
            raise MedsynthError(f"--resume: no unfinished run under {runs} has a *-state folder")
        if not run_name and machines_of(run_dir).num_machines > 1:
            raise MedsynthError(f"--resume: the newest run {run_dir.name} is a multi-node run: give --run-name on "
                                f"each machine ({run_dir.name} on rank 0, {run_dir.name}-node<R> on rank R)")
        return _resume(run_dir, dry_run, sd_scripts, offline, cpu)
    if dry_run:
        click.echo(launch.dry_run(settings, sd_scripts=sd_scripts, num_processes=processes, gpu_ids=gpu_ids,
                                  run_name=run_name, offline=offline, cpu=cpu, machines=machines), nl=False)
        return 0
    code, run_dir = launch.launch(settings, run_name=run_name, sd_scripts=sd_scripts, num_processes=processes,
                                  gpu_ids=gpu_ids, offline=offline, cpu=cpu, machines=machines)
    if code == 0:
        click.echo(f"medsynth: done: {run_dir}")
    return code


def _resume(run_dir: Path, dry_run: bool, sd_scripts: Path, offline: bool, cpu: bool) -> int:
    from orchestrator.train import resume

    if dry_run:
        click.echo(resume.resume_dry_run(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu), nl=False)
        return 0
    code, _ = resume.resume(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)
    return code
