"""A run from settings to exit code: preflight (orchestrator.train.preflight), the plan (orchestrator.train.plan),
write runs/<name>/, run the accelerate command (orchestrator.train.command) with output to the terminal and
train.log (orchestrator.common.process), and the post-check. `launch` does it all for one run; a sweep uses the
steps (`start` once, `prepare`/`create` per run, then `launch_created`, which `medsynth train --run-dir` also uses
for a folder rendered elsewhere); `dry_run` says what `launch` would do. Resuming is orchestrator.train.resume.

sd-scripts exits 0 on an empty dataset, so success also requires a LoRA file in the run directory (on the rank-0
machine: only it saves).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import SD_SCRIPTS_COMMIT, git_checkout
from orchestrator.common.process import run_streaming
from orchestrator.runs.folder import RENDERED, command_script, lora_files, running_mark, write_run_dir
from orchestrator.runs.record import read_record, update_record
from orchestrator.train.command import Machines, accelerate_command, allocator_env, child_env, python_executable
from orchestrator.train.config import TrainConfig
from orchestrator.train.settings import Settings
from orchestrator.train.plan import RunPlan, batch_warnings, prepare, run_record, validate_files
from orchestrator.train.preflight import (Gpu, Preflight, Probe, check_disk, check_gpus, check_model, check_network,
                                          check_optimizer, check_sd_scripts, check_tokenizers,
                                          failed_checks_as_warnings, probe_gpus_fast, probe_python)

# ----------------------------------------------------------------------------------------------- the flow

def project_commit() -> dict[str, Any]:
    """medsynth's own commit when it runs from a git checkout; installed (a wheel), None."""
    checkout = git_checkout()  # never git in site-packages: it could sit inside an unrelated repository
    if checkout is None:
        return {"medsynth": None}
    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"medsynth": None}
    if head.returncode != 0:
        return {"medsynth": None}
    return {"medsynth": head.stdout.strip() or None, "medsynth_dirty": bool(dirty.stdout.strip())}


@dataclass
class Launcher:
    """What the launch-time checks established once; every run created with it shares them (a sweep creates many)."""

    sd_scripts: Path
    python: str
    env: dict[str, str]
    changes: dict[str, str]
    probe: Probe | None             # None: nothing probed (a dry run, or run folders rendered for another machine)
    gpus: list[Gpu] | None
    commits: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    num_processes: int = 1          # on this machine
    gpu_ids: tuple[int, ...] = ()
    machines: Machines = Machines()
    offline: bool = False
    cpu: bool = False
    min_gpu_gib: float = 0.0

    @property
    def total_processes(self) -> int:
        return self.num_processes * self.machines.num_machines


def start(min_gpu_gib: float, *, sd_scripts: Path, num_processes: int = 1, gpu_ids: Sequence[int] = (),
          offline: bool = False, cpu: bool = False, machines: Machines = Machines()) -> Launcher:
    """The checks that need no run settings: sd-scripts, the training interpreter, its GPUs."""
    report = Preflight()
    commit, commit_how = check_sd_scripts(sd_scripts, report)
    python = python_executable()
    env, changes = child_env(sd_scripts, offline=offline, cpu=cpu)
    probe = probe_python(python, env)
    gpus = None if cpu else check_gpus(probe, min_gpu_gib=min_gpu_gib, num_processes=num_processes,
                                       gpu_ids=gpu_ids)
    if not probe.tensorboard:  # accelerate then drops the tracker silently
        report.notes.append(f"warning: {python} has neither tensorboard nor tensorboardX: logs/ will stay empty "
                            f"(pip install tensorboard)")
    commits = {**project_commit(), "sd_scripts": commit, "sd_scripts_how": commit_how,
               "sd_scripts_pinned": SD_SCRIPTS_COMMIT}
    return Launcher(sd_scripts, python, env, changes, probe, gpus, commits, report.notes, num_processes,
                    tuple(gpu_ids), machines, offline, cpu, min_gpu_gib)


def check_config(launcher: Launcher, cfg: TrainConfig) -> None:
    """The checks that depend on the run's settings (optimizer package, model, tokenizers)."""
    if launcher.probe is not None:
        check_optimizer(cfg, launcher.probe)
        check_network(cfg.network_module, launcher.probe)
    check_model(cfg.pretrained_model_name_or_path, offline=launcher.offline)
    if launcher.offline:
        check_tokenizers(cfg.tokenizer_cache_dir)


def run_env(launcher: Launcher, cfg: TrainConfig) -> tuple[dict[str, str], dict[str, str]]:
    """The launcher's environment plus what this run's settings add: (full environment, changes)."""
    extra = allocator_env(cfg.expandable_segments, launcher.env)
    return {**launcher.env, **extra}, {**launcher.changes, **extra}


def run_command(launcher: Launcher, plan: RunPlan) -> tuple[list[str], dict[str, str]]:
    """The accelerate command of a planned run on the launcher's interpreter and GPUs, and the environment
    changes it runs with."""
    _, changes = run_env(launcher, plan.config)
    argv = accelerate_command(launcher.python, launcher.sd_scripts, plan.run_dir,
                              num_processes=launcher.num_processes, gpu_ids=launcher.gpu_ids,
                              mixed_precision=plan.config.mixed_precision, cpu=launcher.cpu,
                              machines=launcher.machines, dynamo_mode=plan.config.dynamo_mode,
                              dynamo_dynamic=plan.config.dynamo_dynamic)
    return argv, changes


def create(launcher: Launcher, plan: RunPlan) -> tuple[list[str], list[str]]:
    """Write runs/<name>/ for a prepared plan; -> (the accelerate command, notes to print)."""
    check_disk(plan.run_dir.parent, plan.config)
    argv, changes = run_command(launcher, plan)
    notes = launcher.notes + batch_warnings(plan, launcher.gpus) + list(plan.dataset.notes)
    gpu = {"gpus": [vars(g) for g in launcher.gpus] if launcher.gpus else [], "cpu": launcher.cpu,
           "preflight": notes}
    packages = launcher.probe.packages if launcher.probe is not None else {}
    record = run_record(plan, argv=argv, cwd=launcher.sd_scripts, env_changes=changes,
                        commits=launcher.commits, packages=packages, gpu=gpu)
    record["launch"] = {"num_processes": launcher.num_processes, "gpu_ids": list(launcher.gpu_ids),
                        **dataclasses.asdict(launcher.machines), "min_gpu_gib": launcher.min_gpu_gib,
                        "offline": launcher.offline}
    write_run_dir(plan.run_dir, plan.files, command_sh=command_script(argv, launcher.sd_scripts, changes),
                  record=record, links=plan.links)
    return argv, notes


def launch(settings: Settings, *, run_name: str | None, sd_scripts: Path, num_processes: int = 1,
           gpu_ids: Sequence[int] = (), offline: bool = False, cpu: bool = False,
           machines: Machines = Machines(), out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Preflight, render, validate, write runs/<name>/, train, post-check. Returns (exit code, run dir).

    On a machine of rank > 0 the folder is <name>-node<rank> (machines sharing a file system must not collide);
    it gets train.log and run.json only, since sd-scripts saves on the rank-0 machine."""
    launcher = start(settings.preset.min_gpu_gib, sd_scripts=sd_scripts, num_processes=num_processes,
                     gpu_ids=gpu_ids, offline=offline, cpu=cpu, machines=machines)
    plan = prepare(settings, gpus=launcher.gpus, run_name=run_name, num_processes=launcher.total_processes,
                   name_suffix=machines.folder_suffix)
    check_config(launcher, plan.config)  # the tier may have changed the optimizer
    argv, notes = create(launcher, plan)
    say(out, f"medsynth: run {plan.run_dir}; batch size {plan.batch.explanation}\n"
              + "".join(f"medsynth: {n}\n" for n in notes))
    update_record(plan.run_dir, status="running", running_mark=running_mark())
    env, _ = run_env(launcher, plan.config)
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=plan.run_dir / "train.log", out=out)
    return finish(plan.run_dir, plan.output_name, code, main=machines.main), plan.run_dir


def launch_created(run_dir: Path, *, out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Train a run folder that was written but not started (`medsynth sweep`, `medsynth train --run-dir`).

    The folder's own command runs, with this machine's interpreter; the checks are redone here, since the
    folder may have been rendered on another machine (a Slurm login node)."""
    record = read_record(run_dir)
    if record.status == "finished":
        raise MedsynthError(f"{run_dir}: already finished; only a run that has not started can be launched")
    if record.status != "created":
        raise MedsynthError(f"{run_dir}: already {record.status}; only a run that has not started can be "
                            f"launched (continue it with 'medsynth train --resume --run-dir {run_dir}')")
    sd_scripts = Path(record.field("cwd", str))
    check_sd_scripts(sd_scripts, Preflight())
    python = python_executable()
    env, changes = child_env(sd_scripts, offline=record.field("launch.offline", bool, False), cpu=record.cpu,
                             expandable_segments=record.field("config.expandable_segments", bool, False))
    probe = probe_python(python, env)
    if not record.cpu:
        check_gpus(probe, min_gpu_gib=float(record.field("launch.min_gpu_gib", (int, float), 0)),
                   num_processes=record.field("launch.num_processes", int, 1),
                   gpu_ids=tuple(record.field("launch.gpu_ids", list, [])))
    check_optimizer(dataclasses.replace(TrainConfig(), optimizer_type=record.field("config.optimizer_type", str)),
                    probe)
    check_network(record.field("config.network_module", str, TrainConfig.network_module), probe)
    validate_run_files(run_dir)
    argv = record.command
    argv[0] = python
    update_record(run_dir, status="running", running_mark=running_mark(), command=argv, env=changes)
    say(out, f"medsynth: run {run_dir}; batch size {record.field('batch.explanation', str)}\n")
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=run_dir / "train.log", out=out)
    return finish(run_dir, record.output_name, code, main=record.machine_rank == 0), run_dir


def validate_run_files(run_dir: Path) -> None:
    """The written train.toml and dataset.toml, checked again before they train (they may have been edited)."""
    names = ("train.toml", "dataset.toml")
    try:
        files = {name: (run_dir / name).read_text(encoding="utf-8") for name in names}
    except OSError as exc:
        raise MedsynthError(f"{run_dir}: unreadable run file ({exc})") from exc
    validate_files(files, {name: str(run_dir / name) for name in names})


def finish(run_dir: Path, output_name: str, code: int, *, main: bool = True) -> int:
    """Record the outcome; a zero exit without a LoRA file is a failure (sd-scripts exits 0 on no data), except
    on a machine of rank > 0, where sd-scripts saves nothing."""
    files = lora_files(run_dir, output_name)
    done = code == 0 and (bool(files) or not main)
    status = "finished" if done else ("interrupted" if code in (130, 143, 137) else "failed")
    update_record(run_dir, status=status, exit_code=code, lora_files=[p.name for p in files])
    if code == 0 and not done:
        raise MedsynthError(f"training exited 0 but wrote no {output_name}*.safetensors in {run_dir} "
                            f"(sd-scripts exits 0 when it finds no data): see {run_dir / 'train.log'}")
    return code


def say(out: IO[bytes] | None, text: str) -> None:
    stream = out if out is not None else sys.stdout.buffer
    stream.write(text.encode())
    stream.flush()


# ----------------------------------------------------------------------------------------------- dry run

def dry_run(settings: Settings, *, sd_scripts: Path, num_processes: int = 1, gpu_ids: Sequence[int] = (),
            run_name: str | None = None, offline: bool = False, cpu: bool = False,
            machines: Machines = Machines()) -> str:
    """What `launch` would do with these arguments, as text: the plan, the command and the files (nothing written,
    nothing started). The batch tier comes from the GPUs training would use, as at launch, probed the fast way."""
    gpus = None if cpu else probe_gpus_fast()
    if gpus:
        gpus = [gpus[i] for i in gpu_ids if i < len(gpus)] if gpu_ids else gpus[:num_processes]
    plan = prepare(settings, gpus=gpus, run_name=run_name, num_processes=num_processes * machines.num_machines,
                   name_suffix=machines.folder_suffix)
    env, changes = child_env(sd_scripts, offline=offline, cpu=cpu)
    launcher = Launcher(sd_scripts, python_executable(), env, changes, None, gpus, {}, [], num_processes,
                        tuple(gpu_ids), machines, offline, cpu)
    argv, changes = run_command(launcher, plan)
    warnings = (_dry_run_warnings(settings, sd_scripts=sd_scripts, offline=offline) + batch_warnings(plan, gpus)
                + list(plan.dataset.notes))
    return _dry_run_text(plan, argv, sd_scripts, changes, warnings)


def _dry_run_warnings(settings: Settings, *, sd_scripts: Path, offline: bool) -> list[str]:
    """The launch-time checks that need no GPU, reported instead of raised."""
    checks = [lambda: check_sd_scripts(sd_scripts, Preflight()),
              lambda: check_model(settings.config.pretrained_model_name_or_path, offline=offline)]
    if offline:
        checks.append(lambda: check_tokenizers(settings.config.tokenizer_cache_dir))
    return failed_checks_as_warnings(checks)


def _dry_run_text(plan: RunPlan, argv: Sequence[str], cwd: Path, env_changes: Mapping[str, str],
                 warnings: Sequence[str] = ()) -> str:
    parts = [f"run: {plan.run_dir} (preset {plan.preset.name}; nothing written: dry run)",
             *warnings,
             f"batch size: {plan.batch.explanation}",
             plan.schedule.describe(),
             "", "command.sh:", command_script(argv, cwd, env_changes).rstrip()]
    for name in RENDERED:
        parts += ["", f"--- {name}", plan.files[name].rstrip()]
    return "\n".join(parts) + "\n"
