"""A run from settings to exit code: preflight (orchestrator.train.preflight), render + validate, write runs/<name>/,
the accelerate command, and running it with output to the terminal and train.log; resume; the post-check.
`launch` does it all for one run; a sweep uses the steps (`start` once, `prepare`/`create` per run, then
`launch_created`, which `medsynth train --run-dir` also uses for a folder rendered elsewhere). `Machines` is
the multi-node part of the accelerate command.

The training process runs in its own process group (no shell). The first Ctrl-C is forwarded to that group
as SIGINT and medsynth keeps streaming until it exits; a second sends SIGTERM, a third SIGKILL. The exit
code is the child's (128 + signal number when a signal ended it). sd-scripts exits 0 on an empty dataset,
so success also requires a LoRA file in the run directory (on the rank-0 machine: only it saves).

The interpreter is $MEDSYNTH_PYTHON or medsynth's own; the child keeps the parent's environment
(PYTHONPATH included, with sd-scripts put first).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.train.config import Settings, TrainConfig, choose_batch, resolve_batch
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import SD_SCRIPTS_COMMIT, git_checkout
from orchestrator.train.preflight import (TRAIN_SCRIPT, Gpu, Preflight, Probe, check_disk, check_gpus, check_model,
                                    check_optimizer, check_sd_scripts, check_tokenizers, failed_checks_as_warnings,
                                    probe_python)
from orchestrator.dataset.record import DatasetInfo, read_dataset
from orchestrator.runs.folder import (RENDERED, RunPlan, command_script, default_run_name, lora_files,
                                 newest_state, plan_run, run_record, running_mark, still_training,
                                 update_run_json, validate_plan, write_run_dir)

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"


def python_executable() -> str:
    return os.environ.get("MEDSYNTH_PYTHON") or sys.executable


# ----------------------------------------------------------------------------------------------- command

def child_env(sd_scripts: Path, *, offline: bool, cpu: bool, expandable_segments: bool = False,
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
    changes.update(allocator_env(expandable_segments, env))
    env.update(changes)
    return env, changes


def allocator_env(expandable_segments: bool, env: Mapping[str, str]) -> dict[str, str]:
    """PyTorch takes its CUDA allocator settings only from the environment. An expandable_segments choice already
    in the user's PYTORCH_CUDA_ALLOC_CONF is theirs and stays; other settings there are kept."""
    current = env.get(ALLOC_CONF, "")
    if not expandable_segments or "expandable_segments" in current:
        return {}
    return {ALLOC_CONF: f"{current},expandable_segments:True" if current else "expandable_segments:True"}


_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")  # a host name, IPv4 or IPv6 address


@dataclass(frozen=True)
class Machines:
    """Multi-node training, passed through to accelerate. Every machine runs the same command with its own rank."""

    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None

    def __post_init__(self) -> None:
        if self.num_machines < 1:
            raise MedsynthError(f"--num-machines must be >= 1, got {self.num_machines}")
        if not 0 <= self.machine_rank < self.num_machines:
            raise MedsynthError(f"--machine-rank {self.machine_rank}: must be between 0 and --num-machines - 1 "
                                f"({self.num_machines - 1})")
        if self.num_machines == 1 and (self.main_process_ip or self.main_process_port is not None):
            raise MedsynthError("--main-process-ip/--main-process-port need --num-machines > 1")
        if self.num_machines > 1 and not self.main_process_ip:
            raise MedsynthError(f"--num-machines {self.num_machines} needs --main-process-ip (the address of the "
                                f"rank-0 machine, the same on every machine)")
        if self.main_process_ip and not _HOST.match(self.main_process_ip):
            raise MedsynthError(f"--main-process-ip {self.main_process_ip!r}: not a host name or IP address")
        if self.main_process_port is not None and not 1 <= self.main_process_port <= 65535:
            raise MedsynthError(f"--main-process-port {self.main_process_port}: must be between 1 and 65535")

    @property
    def main(self) -> bool:
        """sd-scripts saves LoRA files, states and samples on the global main process only: rank 0."""
        return self.machine_rank == 0

    def argv(self) -> list[str]:
        argv = ["--num_machines", str(self.num_machines)]
        if self.num_machines > 1:
            argv += ["--machine_rank", str(self.machine_rank), "--main_process_ip", str(self.main_process_ip)]
            if self.main_process_port is not None:
                argv += ["--main_process_port", str(self.main_process_port)]
        return argv


def accelerate_command(python: str, sd_scripts: Path, run_dir: Path, *, num_processes: int = 1,
                       gpu_ids: Sequence[int] = (), mixed_precision: str = "no", cpu: bool = False,
                       resume: Path | None = None, machines: Machines = Machines(),
                       dynamo_mode: str | None = None, dynamo_dynamic: bool = False) -> list[str]:
    """`num_processes` counts this machine's GPUs; accelerate wants the total over all machines.

    sd-scripts picks the compile backend itself (torch_compile/dynamo_backend in train.toml); torch.compile's mode
    and dynamic flag reach it only through the environment accelerate's launcher sets from these arguments."""
    total = num_processes * machines.num_machines
    argv = [python, "-m", "accelerate.commands.launch", "--num_processes", str(total)]
    if total > 1:
        argv.append("--multi_gpu")
    if gpu_ids:
        argv += ["--gpu_ids", ",".join(map(str, gpu_ids))]
    if cpu:
        argv.append("--cpu")
    # sd-scripts takes mixed precision from its own config; passing the same value keeps accelerate quiet
    argv += [*machines.argv(), "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if dynamo_mode is not None:
        argv += ["--dynamo_mode", dynamo_mode]
    if dynamo_dynamic:
        argv.append("--dynamo_use_dynamic")
    argv += [str(sd_scripts / TRAIN_SCRIPT),
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

        child: subprocess.Popen | None = None

        def send(count: int) -> None:
            sig = {1: signal.SIGINT, 2: signal.SIGTERM}.get(count, signal.SIGKILL)
            tee(f"\nmedsynth: {signal.Signals(sig).name} sent to the training process group; waiting for it\n"
                .encode())
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass

        def forward(signum: int, frame: Any) -> None:
            nonlocal interrupts
            interrupts += 1
            if child is not None:  # else it is sent as soon as the child exists
                send(interrupts)

        # installed before the child starts: a Ctrl-C in between must not escape and orphan it
        previous = _install(signal.SIGINT, forward)
        previous_term = _install(signal.SIGTERM, forward)
        try:
            try:
                started = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                raise MedsynthError(f"cannot start {argv[0]}: {exc}") from exc
            child = started
            if interrupts:
                send(interrupts)
            assert started.stdout is not None
            fd = started.stdout.fileno()
            while chunk := os.read(fd, 65536):
                tee(chunk)
            code = started.wait()
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
            num_processes: int = 1, dataset: DatasetInfo | None = None, name_suffix: str = "") -> RunPlan:
    """Dataset + GPU memory -> batch size -> rendered and validated files (nothing written).

    `num_processes` is the total over all machines (it sets the step arithmetic); `dataset` replaces the one
    read from the config (a sweep trains on a shared copy of it)."""
    cfg = settings.config
    if dataset is None:
        if cfg.dataset is None:
            raise MedsynthError("no dataset: give --dataset DIR, or set [dataset] out in medsynth.toml")
        dataset = read_dataset(cfg.dataset)
    smallest = min(gpus, key=lambda g: g.total_gib) if gpus else None  # it limits the batch
    gib = smallest.total_gib if smallest else None
    desc = smallest.name if smallest else ""
    cfg, batch = resolve_batch(cfg, settings.preset, set(settings.user_keys), gib, desc)
    name = (run_name or default_run_name(dataset, settings.preset.name)) + name_suffix
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
    checks = [lambda: check_sd_scripts(sd_scripts, Preflight()),
              lambda: check_model(settings.config.pretrained_model_name_or_path, offline=offline)]
    if offline:
        checks.append(lambda: check_tokenizers(settings.config.tokenizer_cache_dir))
    return failed_checks_as_warnings(checks)


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
    check_model(cfg.pretrained_model_name_or_path, offline=launcher.offline)
    if launcher.offline:
        check_tokenizers(cfg.tokenizer_cache_dir)


def run_env(launcher: Launcher, cfg: TrainConfig) -> tuple[dict[str, str], dict[str, str]]:
    """The launcher's environment plus what this run's settings add: (full environment, changes)."""
    extra = allocator_env(cfg.expandable_segments, launcher.env)
    return {**launcher.env, **extra}, {**launcher.changes, **extra}


def create(launcher: Launcher, plan: RunPlan) -> tuple[list[str], list[str]]:
    """Write runs/<name>/ for a prepared plan; -> (the accelerate command, notes to print)."""
    check_disk(plan.run_dir.parent, plan.config)
    _, changes = run_env(launcher, plan.config)
    notes = launcher.notes + batch_warnings(plan, launcher.gpus)
    argv = accelerate_command(launcher.python, launcher.sd_scripts, plan.run_dir,
                              num_processes=launcher.num_processes, gpu_ids=launcher.gpu_ids,
                              mixed_precision=plan.config.mixed_precision, cpu=launcher.cpu,
                              machines=launcher.machines, dynamo_mode=plan.config.dynamo_mode,
                              dynamo_dynamic=plan.config.dynamo_dynamic)
    gpu = {"gpus": [vars(g) for g in launcher.gpus] if launcher.gpus else [], "cpu": launcher.cpu,
           "preflight": notes}
    packages = launcher.probe.packages if launcher.probe is not None else {}
    record = run_record(plan, argv=argv, cwd=launcher.sd_scripts, env_changes=changes,
                        commits=launcher.commits, packages=packages, gpu=gpu)
    record["launch"] = {"num_processes": launcher.num_processes, "gpu_ids": list(launcher.gpu_ids),
                        **dataclasses.asdict(launcher.machines), "min_gpu_gib": launcher.min_gpu_gib,
                        "offline": launcher.offline}
    write_run_dir(plan, command_sh=command_script(argv, launcher.sd_scripts, changes), record=record)
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
                   name_suffix=f"-node{machines.machine_rank}" if machines.machine_rank else "")
    check_config(launcher, plan.config)  # the tier may have changed the optimizer
    argv, notes = create(launcher, plan)
    _say(out, f"medsynth: run {plan.run_dir}; batch size {plan.batch.explanation}\n"
              + "".join(f"medsynth: {n}\n" for n in notes))
    update_run_json(plan.run_dir, status="running", running_mark=running_mark())
    env, _ = run_env(launcher, plan.config)
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=plan.run_dir / "train.log", out=out)
    return finish(plan.run_dir, plan.output_name, code, main=machines.main), plan.run_dir


def launch_created(run_dir: Path, *, out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Train a run folder that was written but not started (`medsynth sweep`, `medsynth train --run-dir`).

    The folder's own command runs, with this machine's interpreter; the checks are redone here, since the
    folder may have been rendered on another machine (a Slurm login node)."""
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run (no run.json)")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if record.get("status") == "finished":
        raise MedsynthError(f"{run_dir}: already finished; only a run that has not started can be launched")
    if record.get("status") != "created":
        raise MedsynthError(f"{run_dir}: already {record.get('status')}; only a run that has not started can be "
                            f"launched (continue it with 'medsynth train --resume --run-dir {run_dir}')")
    how = record.get("launch", {})
    sd_scripts = Path(record["cwd"])
    check_sd_scripts(sd_scripts, Preflight())
    python = python_executable()
    env, changes = child_env(sd_scripts, offline=bool(how.get("offline")), cpu=bool(record["gpu"]["cpu"]),
                             expandable_segments=bool(record.get("config", {}).get("expandable_segments")))
    probe = probe_python(python, env)
    if not record["gpu"]["cpu"]:
        check_gpus(probe, min_gpu_gib=float(how.get("min_gpu_gib", 0)), num_processes=int(how.get("num_processes", 1)),
                   gpu_ids=tuple(how.get("gpu_ids", ())))
    check_optimizer(dataclasses.replace(TrainConfig(), optimizer_type=record["config"]["optimizer_type"]), probe)
    _validate_files(run_dir)
    argv = list(record["command"])
    argv[0] = python
    update_run_json(run_dir, status="running", running_mark=running_mark(), command=argv, env=changes)
    _say(out, f"medsynth: run {run_dir}; batch size {record['batch']['explanation']}\n")
    code = run_streaming(argv, cwd=sd_scripts, env=env, log_path=run_dir / "train.log", out=out)
    return finish(run_dir, record["output_name"], code, main=int(how.get("machine_rank", 0)) == 0), run_dir


@dataclass(frozen=True)
class Resumption:
    """How a run continues: its record, the state folder, the command and the environment changes."""

    record: dict[str, Any]
    state: Path
    argv: list[str]
    env: dict[str, str]
    changes: dict[str, str]
    cpu: bool
    warnings: tuple[str, ...] = ()


def resumption(run_dir: Path, *, sd_scripts: Path, offline: bool = False, cpu: bool = False) -> Resumption:
    """The run's own command plus `--resume <newest state>`, and the run's own --cpu/--offline (nothing probed).

    sd-scripts saves states on the rank-0 machine only, so a rank > 0 folder (<name>-node<R>) resumes from the
    rank-0 folder's state: every machine must load the same one (a shared file system, or a copy of it)."""
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run (no run.json)")
    record = _read_record(record_path)
    how = record.get("launch", {})
    rank = int(how.get("machine_rank", 0))
    state_dir = run_dir
    suffix = f"-node{rank}"
    if rank > 0 and run_dir.name.endswith(suffix):
        state_dir = run_dir.with_name(run_dir.name[:-len(suffix)])
    # the run that saved the states says whether training ended (a rank > 0 machine finishes without saving)
    owner = _read_record(state_dir / "run.json") if (state_dir / "run.json").is_file() else record
    if owner.get("status") == "finished":
        raise MedsynthError(f"{state_dir}: finished: its newest state is the end of training and sd-scripts cannot "
                            f"continue past it; start a new run (e.g. with more max_train_epochs)")
    alive = still_training(record)
    if alive:
        raise MedsynthError(f"{run_dir}: still training (medsynth pid {record['running_mark']['pid']} on this host): "
                            f"stop it before resuming, or two trainings would write one folder")
    warnings = []
    if alive is None and record.get("status") == "running" and isinstance(record.get("running_mark"), dict):
        mark = record["running_mark"]
        warnings.append(f"warning: {run_dir.name} is marked as training on {mark.get('host')} (pid {mark.get('pid')}), "
                        f"which this host cannot check: resuming as if that process had stopped")
    state = newest_state(state_dir) if state_dir.is_dir() else None
    if state is None:
        where = f" (rank {rank} resumes from rank 0's folder {state_dir})" if state_dir != run_dir else ""
        raise MedsynthError(f"{run_dir}: no *-state folder to resume from{where} (save_state was off, or no epoch "
                            f"finished yet)")
    command = record.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command) \
            or not isinstance(record.get("output_name"), str):
        raise MedsynthError(f"{record_path}: no 'command' list or 'output_name': not a run medsynth wrote")
    cpu = cpu or bool(record.get("gpu", {}).get("cpu"))
    config = record.get("config", {})
    env, changes = child_env(sd_scripts, offline=offline or bool(how.get("offline")), cpu=cpu,
                             expandable_segments=bool(config.get("expandable_segments")))
    argv = _without_resume(list(command))
    argv[0] = python_executable()
    argv += ["--resume", str(state)]
    if config.get("torch_compile"):
        argv += ["--network_weights", str(compiled_state_weights(state, config.get("save_model_as") or "safetensors"))]
    return Resumption(record, state, argv, env, changes, cpu, tuple(warnings))


def compiled_state_weights(state: Path, save_model_as: str = "safetensors") -> Path:
    """The LoRA file saved with a *-state folder, for runs trained with torch_compile.

    With a compiled network, sd-scripts' save/load-state hooks keep only models of the type
    `accelerator.unwrap_model(network)` returns — the compiled wrapper, not the network accelerate hands them —, so
    the state folder holds no LoRA weights and `--resume` alone would restart the LoRA from scratch while logging
    success. The epoch's LoRA file (X-000002-state -> X-000002.safetensors) carries them, in save_precision."""
    weights = state.with_name(f"{state.name[:-len('-state')]}.{save_model_as}")
    if not weights.is_file():
        raise MedsynthError(f"{state}: a torch_compile run's state holds no LoRA weights and {weights.name} (saved "
                            f"with it) is gone (save_last_n_epochs?): cannot resume without restarting the LoRA")
    return weights


def machines_of(run_dir: Path) -> Machines:
    """The machine settings a run was started with (single-node for a folder without a readable record)."""
    path = run_dir / "run.json"
    how = _read_record(path).get("launch", {}) if path.is_file() else {}
    try:
        return Machines(int(how.get("num_machines", 1)), int(how.get("machine_rank", 0)),
                        how.get("main_process_ip"), how.get("main_process_port"))
    except (ValueError, TypeError) as exc:
        raise MedsynthError(f"{path}: bad 'launch' machine settings ({exc})") from exc


def resume_dry_run_text(run_dir: Path, plan: Resumption, cwd: Path, warnings: Sequence[str] = ()) -> str:
    return "\n".join([f"resume: {run_dir} from {plan.state} (nothing run or written: dry run)",
                      *plan.warnings, *warnings,
                      "", "command:", command_script(plan.argv, cwd, plan.changes).rstrip()]) + "\n"


def resume(run_dir: Path, *, sd_scripts: Path, offline: bool = False, cpu: bool = False,
           out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Continue a run from its newest *-state folder with the run's own files and command."""
    plan = resumption(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)
    how = plan.record.get("launch", {})
    check_sd_scripts(sd_scripts, Preflight())
    probe = probe_python(plan.argv[0], plan.env)
    if not plan.cpu:
        check_gpus(probe, min_gpu_gib=0, num_processes=int(how.get("num_processes", 1)),
                   gpu_ids=tuple(how.get("gpu_ids", ())))
    _validate_files(run_dir)
    resumes = plan.record.get("resumes", []) + [{"state": str(plan.state), "command": plan.argv, "env": plan.changes}]
    update_run_json(run_dir, status="running", running_mark=running_mark(), resumes=resumes)
    _say(out, "".join(f"medsynth: {w}\n" for w in plan.warnings) + f"medsynth: resuming {run_dir} from {plan.state}\n")
    code = run_streaming(plan.argv, cwd=sd_scripts, env=plan.env, log_path=run_dir / "train.log", out=out)
    main = int(how.get("machine_rank", 0)) == 0
    return finish(run_dir, plan.record["output_name"], code, main=main), run_dir


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsynthError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(record, dict) or not isinstance(record.get("launch", {}), dict):
        raise MedsynthError(f"{path}: not a run record medsynth wrote")
    return record


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


def finish(run_dir: Path, output_name: str, code: int, *, main: bool = True) -> int:
    """Record the outcome; a zero exit without a LoRA file is a failure (sd-scripts exits 0 on no data), except
    on a machine of rank > 0, where sd-scripts saves nothing."""
    files = lora_files(run_dir, output_name)
    done = code == 0 and (bool(files) or not main)
    status = "finished" if done else ("interrupted" if code in (130, 143, 137) else "failed")
    update_run_json(run_dir, status=status, exit_code=code, lora_files=[p.name for p in files])
    if code == 0 and not done:
        raise MedsynthError(f"training exited 0 but wrote no {output_name}*.safetensors in {run_dir} "
                            f"(sd-scripts exits 0 when it finds no data): see {run_dir / 'train.log'}")
    return code


def _say(out: IO[bytes] | None, text: str) -> None:
    stream = out if out is not None else sys.stdout.buffer
    stream.write(text.encode())
    stream.flush()
