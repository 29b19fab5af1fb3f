"""`medsynth train`: options -> orchestrator.config / orchestrator.launch; prints and exits with the run's code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.errors import MedsynthError
from orchestrator.paths import SD_SCRIPTS_DIR


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
              help="Continue --run-name (default: the newest run with a state folder) from its newest *-state.")
@click.option("--num-processes", type=click.IntRange(min=1), help="GPUs to train on (default 1, or --gpu-ids' count).")
@click.option("--gpu-ids", help="Comma-separated GPU indices, e.g. 0,1.")
@click.option("--offline", is_flag=True, help="No hub access: sets HF_HUB_OFFLINE=1 for training and checks "
                                              "the local tokenizers and model first.")
@click.option("--cpu", is_flag=True, help="Train on the CPU (tiny test runs only; skips the GPU checks).")
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path, file_okay=False),
              default=SD_SCRIPTS_DIR, show_default="vendor/sd-scripts", help="The sd-scripts checkout to run.")
def train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes, gpu_ids, offline,
          cpu, sd_scripts) -> None:
    """Render runs/<name>/{dataset,train}.toml and sample prompts, validate them, and train with accelerate."""
    try:
        code = _train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes,
                      _gpu_ids(gpu_ids), offline, cpu, sd_scripts)
    except MedsynthError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if code != 0:
        click.echo(f"error: training exited with code {code}; see train.log in the run folder", err=True)
        sys.exit(code)


def _train(preset, sets, run_name, dataset, model, config_path, dry_run, resume, num_processes, gpu_ids, offline,
           cpu, sd_scripts) -> int:
    from orchestrator import launch, preflight
    from orchestrator.config import load_settings
    from orchestrator.project_file import find_project_file, load_project_file
    from orchestrator.rundir import check_run_name, newest_resumable_run

    processes = num_processes or (len(gpu_ids) if gpu_ids else 1)
    if gpu_ids and processes != len(gpu_ids):
        raise MedsynthError(f"--num-processes {processes} but {len(gpu_ids)} --gpu-ids")
    project = find_project_file(config_path, Path.cwd())
    tables = load_project_file(project) if project is not None else None
    settings = load_settings(preset_name=preset, project=project, project_tables=tables, sets=sets,
                             options={"dataset": str(dataset) if dataset else None,
                                      "pretrained_model_name_or_path": model},
                             cwd=Path.cwd())
    if resume:
        if preset or sets or dataset or model:
            raise MedsynthError("--resume continues a run with its own files: drop --preset/--set/--dataset/--model")
        runs = settings.config.runs_dir
        run_dir = runs / check_run_name(run_name) if run_name else newest_resumable_run(runs)
        if run_dir is None:
            raise MedsynthError(f"--resume: no run under {runs} has a *-state folder")
        code, _ = launch.resume(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)
        return code
    if dry_run:
        gpus = None if cpu else preflight.probe_gpus_fast()
        plan = launch.prepare(settings, gpus=gpus, run_name=run_name, num_processes=processes)
        _, changes = launch.child_env(sd_scripts, offline=offline, cpu=cpu)
        argv = launch.accelerate_command(launch.python_executable(), sd_scripts, plan.run_dir,
                                         num_processes=processes, gpu_ids=gpu_ids,
                                         mixed_precision=plan.config.mixed_precision, cpu=cpu)
        warnings = launch.dry_run_warnings(settings, sd_scripts=sd_scripts, offline=offline)
        warnings += launch.batch_warnings(plan, gpus)
        click.echo(launch.dry_run_text(plan, argv, sd_scripts, changes, warnings), nl=False)
        return 0
    code, run_dir = launch.launch(settings, run_name=run_name, sd_scripts=sd_scripts, num_processes=processes,
                                  gpu_ids=gpu_ids, offline=offline, cpu=cpu)
    if code == 0:
        click.echo(f"medsynth: done: {run_dir}")
    return code
