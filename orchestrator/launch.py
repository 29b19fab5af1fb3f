"""A run from settings to exit code: preflight (orchestrator.preflight), render + validate, write runs/<name>/,
the accelerate command, and running it with output to the terminal and train.log; resume; the post-check.

The training process runs in its own process group (no shell). The first Ctrl-C is forwarded to that group
as SIGINT and medsynth keeps streaming until it exits; a second sends SIGTERM, a third SIGKILL. The exit
code is the child's (128 + signal number when a signal ended it). sd-scripts exits 0 on an empty dataset,
so success also requires a LoRA file in the run directory.

The interpreter is $MEDSYNTH_PYTHON or medsynth's own; the child keeps the parent's environment
(PYTHONPATH included, with sd-scripts put first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.config import Settings, choose_batch, resolve_batch
from orchestrator.errors import MedsynthError
from orchestrator.paths import REPO_ROOT, SD_SCRIPTS_COMMIT
from orchestrator.preflight import (TRAIN_SCRIPT, Gpu, Preflight, check_disk, check_gpus, check_model,
                                    check_optimizer, check_sd_scripts, check_tokenizers, probe_python)
from orchestrator.rundir import (RENDERED, RunPlan, command_script, default_run_name, lora_files, newest_state,
                                 plan_run, read_dataset, run_record, update_run_json, validate_plan, write_run_dir)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def python_executable() -> str:
    return os.environ.get("MEDSYNTH_PYTHON") or sys.executable


# ----------------------------------------------------------------------------------------------- command

def child_env(sd_scripts: Path, *, offline: bool, cpu: bool,
              base: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(the child's full environment, the variables medsynth set or changed, for command.sh/run.json)."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH")
    changes = {"PYTHONPATH": str(sd_scripts) + (os.pathsep + old if old else ""), "PYTHONUNBUFFERED": "1"}
    changes.setdefault("COLUMNS", env.get("COLUMNS", "200"))  # rich wraps at 80 columns without a terminal
    if offline:
        changes.update(OFFLINE_ENV)
    if cpu:
        changes["CUDA_VISIBLE_DEVICES"] = ""
    env.update(changes)
    return env, changes


def accelerate_command(python: str, sd_scripts: Path, run_dir: Path, *, num_processes: int = 1,
                       gpu_ids: Sequence[int] = (), mixed_precision: str = "no", cpu: bool = False,
                       resume: Path | None = None) -> list[str]:
    argv = [python, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if num_processes > 1:
        argv.append("--multi_gpu")
    if gpu_ids:
        argv += ["--gpu_ids", ",".join(map(str, gpu_ids))]
    if cpu:
        argv.append("--cpu")
    # sd-scripts takes mixed precision from its own config; passing the same value keeps accelerate quiet
    argv += ["--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
             str(sd_scripts / TRAIN_SCRIPT),
             "--config_file", str(run_dir / "train.toml"), "--dataset_config", str(run_dir / "dataset.toml")]
    if resume is not None:
        argv += ["--resume", str(resume)]
    return argv


# ----------------------------------------------------------------------------------------------- running

def run_streaming(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path,
                  out: IO[bytes] | None = None) -> int:
    """Run argv, copying its output to `out` (the terminal) and appending it to log_path; return its exit code."""
    terminal: IO[bytes] | None = out if out is not None else sys.stdout.buffer
    interrupts = 0
    with open(log_path, "ab") as log:

        def tee(data: bytes) -> None:
            nonlocal terminal
            log.write(data)
            log.flush()
            if terminal is not None:
                try:
                    terminal.write(data)
                    terminal.flush()
                except OSError:  # a closed terminal or pipe must not orphan the training: keep logging
                    terminal = None

        try:
            child = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise MedsynthError(f"cannot start {argv[0]}: {exc}") from exc

        def forward(signum: int, frame: Any) -> None:
            nonlocal interrupts
            interrupts += 1
            sig = {1: signal.SIGINT, 2: signal.SIGTERM}.get(interrupts, signal.SIGKILL)
            tee(f"\nmedsynth: {signal.Signals(sig).name} sent to the training process group; waiting for it\n"
                .encode())
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass

        previous = _install(signal.SIGINT, forward)
        previous_term = _install(signal.SIGTERM, forward)
        try:
            assert child.stdout is not None
            fd = child.stdout.fileno()
            while chunk := os.read(fd, 65536):
                tee(chunk)
            code = child.wait()
        finally:
            _install(signal.SIGINT, previous)
            _install(signal.SIGTERM, previous_term)
    return 128 - code if code < 0 else code


def _install(signum: int, handler: Any) -> Any:
    """Set a signal handler where that is possible (only the main thread may); return the previous one."""
    if handler is None:
        return None
    try:
        return signal.signal(signum, handler)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------- the flow

def prepare(settings: Settings, *, gpus: Sequence[Gpu] | None, run_name: str | None = None,
            num_processes: int = 1) -> RunPlan:
    """Dataset + GPU memory -> batch size -> rendered and validated files (nothing written)."""
    cfg = settings.config
    if cfg.dataset is None:
        raise MedsynthError("no dataset: give --dataset DIR, or set [dataset] out in medsynth.toml")
    dataset = read_dataset(cfg.dataset)
    gib = min(g.total_gib for g in gpus) if gpus else None
    desc = gpus[0].name if gpus else ""
    cfg, batch = resolve_batch(cfg, settings.preset, set(settings.user_keys), gib, desc)
    name = run_name or default_run_name(dataset, settings.preset.name)
    plan = plan_run(cfg, preset=settings.preset, layers=settings.layers, batch=batch, dataset=dataset,
                    name=name, num_processes=num_processes)
    validate_plan(plan)
    return plan


def batch_warnings(plan: RunPlan, gpus: Sequence[Gpu] | None) -> list[str]:
    """A batch size set by hand above what the preset's tier table gives this GPU may run out of memory."""
    if not gpus or not plan.preset.batch_tiers or plan.batch.how != "set":
        return []
    gib = min(g.total_gib for g in gpus)
    tier, _ = choose_batch(plan.preset.batch_tiers, gib)
    if plan.batch.train_batch_size <= tier.train_batch_size:
        return []
    return [f"warning: batch {plan.batch.train_batch_size} is above the {tier.train_batch_size} the preset's tiers "
            f"give {gib:.0f} GiB: it may run out of GPU memory"]


def dry_run_warnings(settings: Settings, *, sd_scripts: Path, offline: bool) -> list[str]:
    """The launch-time checks that need no GPU, reported instead of raised."""
    warnings = []
    checks = [lambda: check_sd_scripts(sd_scripts, Preflight()),
              lambda: check_model(settings.config.pretrained_model_name_or_path, offline=offline)]
    if offline:
        checks.append(lambda: check_tokenizers(settings.config.tokenizer_cache_dir))
    for check in checks:
        try:
            check()
        except MedsynthError as exc:
            warnings.append(f"warning (a launch would stop here): {exc}")
    return warnings


def dry_run_text(plan: RunPlan, argv: Sequence[str], cwd: Path, env_changes: Mapping[str, str],
                 warnings: Sequence[str] = ()) -> str:
    parts = [f"run: {plan.run_dir} (preset {plan.preset.name}; nothing written: dry run)",
             *warnings,
             f"batch size: {plan.batch.explanation}",
             plan.schedule.describe(),
             "", "command.sh:", command_script(argv, cwd, env_changes).rstrip()]
    for name in RENDERED:
        parts += ["", f"--- {name}", plan.files[name].rstrip()]
    return "\n".join(parts) + "\n"


def project_commit() -> dict[str, Any]:
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"medsynth": None}
    return {"medsynth": head.stdout.strip() or None, "medsynth_dirty": bool(dirty.stdout.strip())}


def launch(settings: Settings, *, run_name: str | None, sd_scripts: Path, num_processes: int = 1,
           gpu_ids: Sequence[int] = (), offline: bool = False, cpu: bool = False,
           out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Preflight, render, validate, write runs/<name>/, train, post-check. Returns (exit code, run dir)."""
    report = Preflight()
    commit, commit_how = check_sd_scripts(sd_scripts, report)
    python = python_executable()
    env, changes = child_env(sd_scripts, offline=offline, cpu=cpu)
    probe = probe_python(python, env)
    cfg = settings.config
    gpus = None if cpu else check_gpus(probe, min_gpu_gib=settings.preset.min_gpu_gib,
                                       num_processes=num_processes, gpu_ids=gpu_ids)
    check_optimizer(cfg, probe)
    if not probe.tensorboard:  # accelerate then drops the tracker silently
        report.notes.append(f"warning: {python} has neither tensorboard nor tensorboardX: logs/ will stay empty "
                            f"(pip install tensorboard)")
    check_model(cfg.pretrained_model_name_or_path, offline=offline)
    if offline:
        check_tokenizers(cfg.tokenizer_cache_dir)
    plan = prepare(settings, gpus=gpus, run_name=run_name, num_processes=num_processes)
    check_disk(plan.run_dir.parent, plan.config)
    report.notes += batch_warnings(plan, gpus)
    argv = accelerate_command(python, sd_scripts, plan.run_dir, num_processes=num_processes, gpu_ids=gpu_ids,
                              mixed_precision=plan.config.mixed_precision, cpu=cpu)
    commits = {**project_commit(), "sd_scripts": commit, "sd_scripts_how": commit_how,
               "sd_scripts_pinned": SD_SCRIPTS_COMMIT}
    gpu = {"gpus": [vars(g) for g in gpus] if gpus else [], "cpu": cpu, "preflight": report.notes}
    record = run_record(plan, argv=argv, cwd=sd_scripts, env_changes=changes, commits=commits,
                        packages=probe.packages, gpu=gpu)
    write_run_dir(plan, command_sh=command_script(argv, sd_scripts, changes), record=record)
    _say(out, f"medsynth: run {plan.run_dir}; batch size {plan.batch.explanation}\n"
              + "".join(f"medsynth: {n}\n" for n in report.notes))
    update_run_json(plan.run_dir, status="running")
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=plan.run_dir / "train.log", out=out)
    return finish(plan.run_dir, plan.output_name, code), plan.run_dir


def resume(run_dir: Path, *, sd_scripts: Path, offline: bool = False, cpu: bool = False,
           out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Continue a run from its newest *-state folder with the run's own files and command."""
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run (no run.json)")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    state = newest_state(run_dir)
    if state is None:
        raise MedsynthError(f"{run_dir}: no *-state folder to resume from (save_state was off, or no epoch "
                            f"finished yet)")
    check_sd_scripts(sd_scripts, Preflight())
    python = python_executable()
    env, changes = child_env(sd_scripts, offline=offline, cpu=cpu)
    probe = probe_python(python, env)
    if not cpu:
        check_gpus(probe, min_gpu_gib=0, num_processes=1, gpu_ids=())
    _validate_files(run_dir)
    argv = _without_resume(list(record["command"]))
    argv[0] = python
    argv += ["--resume", str(state)]
    resumes = record.get("resumes", []) + [{"state": str(state), "command": argv, "env": changes}]
    update_run_json(run_dir, status="running", resumes=resumes)
    _say(out, f"medsynth: resuming {run_dir} from {state.name}\n")
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=run_dir / "train.log", out=out)
    return finish(run_dir, record["output_name"], code), run_dir


def _without_resume(argv: list[str]) -> list[str]:
    if "--resume" in argv:
        i = argv.index("--resume")
        del argv[i:i + 2]
    return argv


def _validate_files(run_dir: Path) -> None:
    import toml

    from orchestrator.kohya import validate

    train = toml.loads((run_dir / "train.toml").read_text(encoding="utf-8"))
    dataset = toml.loads((run_dir / "dataset.toml").read_text(encoding="utf-8"))
    validate.validate_train_config(train, source=str(run_dir / "train.toml"))
    validate.validate_dataset_config(dataset, source=str(run_dir / "dataset.toml"))
    validate.check_combinations(train, dataset, source=str(run_dir / "train.toml"))


def finish(run_dir: Path, output_name: str, code: int) -> int:
    """Record the outcome; a zero exit without a LoRA file is a failure (sd-scripts exits 0 on no data)."""
    files = lora_files(run_dir, output_name)
    status = "finished" if code == 0 and files else ("interrupted" if code in (130, 143, 137) else "failed")
    update_run_json(run_dir, status=status, exit_code=code, lora_files=[p.name for p in files])
    if code == 0 and not files:
        raise MedsynthError(f"training exited 0 but wrote no {output_name}*.safetensors in {run_dir} "
                            f"(sd-scripts exits 0 when it finds no data): see {run_dir / 'train.log'}")
    return code


def _say(out: IO[bytes] | None, text: str) -> None:
    stream = out if out is not None else sys.stdout.buffer
    stream.write(text.encode())
    stream.flush()
