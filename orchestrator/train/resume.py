"""Continuing a run from its newest *-state folder with the run's own files and command (`medsynth train
--resume`), and what it would do (`resume_dry_run`). A rank > 0 machine's folder resumes from rank 0's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestrator.common.errors import MedsynthError
from orchestrator.common.process import run_streaming
from orchestrator.runs.folder import command_script, newest_state, running_mark, still_training
from orchestrator.runs.record import RunRecord, is_run_dir, read_record, update_record
from orchestrator.train.command import Machines, child_env, python_executable
from orchestrator.train.config import TrainConfig
from orchestrator.train.launch import finish, say, validate_run_files
from orchestrator.train.preflight import (Preflight, check_gpus, check_network, check_sd_scripts,
                                          failed_checks_as_warnings, probe_python)


@dataclass(frozen=True)
class Resumption:
    """How a run continues: its record, the state folder, the command and the environment changes."""

    record: RunRecord
    output_name: str
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
    record = read_record(run_dir)
    rank = record.machine_rank
    state_dir = run_dir
    suffix = f"-node{rank}"
    if rank > 0 and run_dir.name.endswith(suffix):
        state_dir = run_dir.with_name(run_dir.name[:-len(suffix)])
    # the run that saved the states says whether training ended (a rank > 0 machine finishes without saving)
    owner = read_record(state_dir) if is_run_dir(state_dir) else record
    if owner.status == "finished":
        raise MedsynthError(f"{state_dir}: finished: its newest state is the end of training and sd-scripts cannot "
                            f"continue past it; start a new run (e.g. with more max_train_epochs)")
    alive = still_training(record)
    if alive:
        raise MedsynthError(f"{run_dir}: still training (medsynth pid {record['running_mark']['pid']} on this host): "
                            f"stop it before resuming, or two trainings would write one folder")
    warnings = []
    if alive is None and record.status == "running" and isinstance(record.get("running_mark"), dict):
        mark = record["running_mark"]
        warnings.append(f"warning: {run_dir.name} is marked as training on {mark.get('host')} (pid {mark.get('pid')}), "
                        f"which this host cannot check: resuming as if that process had stopped")
    state = newest_state(state_dir) if state_dir.is_dir() else None
    if state is None:
        where = f" (rank {rank} resumes from rank 0's folder {state_dir})" if state_dir != run_dir else ""
        raise MedsynthError(f"{run_dir}: no *-state folder to resume from{where} (save_state was off, or no epoch "
                            f"finished yet)")
    cpu = cpu or record.cpu
    env, changes = child_env(sd_scripts, offline=offline or record.field("launch.offline", bool, False), cpu=cpu,
                             expandable_segments=record.field("config.expandable_segments", bool, False))
    argv = _without_resume(record.command)
    argv[0] = python_executable()
    argv += ["--resume", str(state)]
    if record.field("config.torch_compile", bool, False):
        weights_format = record.field("config.save_model_as", str, "") or "safetensors"
        argv += ["--network_weights", str(compiled_state_weights(state, weights_format))]
    return Resumption(record, record.output_name, state, argv, env, changes, cpu, tuple(warnings))


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
    """The machine settings a run was started with (single-node for a folder without a record)."""
    if not is_run_dir(run_dir):
        return Machines()
    record = read_record(run_dir)
    return Machines(record.field("launch.num_machines", int, 1), record.machine_rank,
                    record.field("launch.main_process_ip", str, None),
                    record.field("launch.main_process_port", int, None))


def resume_dry_run(run_dir: Path, *, sd_scripts: Path, offline: bool = False, cpu: bool = False) -> str:
    """What `resume` would run, as text (nothing run or written); a failed sd-scripts check is a warning."""
    plan = resumption(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)
    warnings = failed_checks_as_warnings([lambda: check_sd_scripts(sd_scripts, Preflight())])
    return "\n".join([f"resume: {run_dir} from {plan.state} (nothing run or written: dry run)",
                      *plan.warnings, *warnings,
                      "", "command:", command_script(plan.argv, sd_scripts, plan.changes).rstrip()]) + "\n"


def resume(run_dir: Path, *, sd_scripts: Path, offline: bool = False, cpu: bool = False,
           out: IO[bytes] | None = None) -> tuple[int, Path]:
    """Continue a run from its newest *-state folder with the run's own files and command."""
    plan = resumption(run_dir, sd_scripts=sd_scripts, offline=offline, cpu=cpu)
    record = plan.record
    check_sd_scripts(sd_scripts, Preflight())
    probe = probe_python(plan.argv[0], plan.env)
    if not plan.cpu:
        check_gpus(probe, min_gpu_gib=0, num_processes=record.field("launch.num_processes", int, 1),
                   gpu_ids=tuple(record.field("launch.gpu_ids", list, [])))
    check_network(record.field("config.network_module", str, TrainConfig.network_module), probe)
    validate_run_files(run_dir)
    resumes = [*record.field("resumes", list, []),
               {"state": str(plan.state), "command": plan.argv, "env": plan.changes}]
    update_record(run_dir, status="running", running_mark=running_mark(), resumes=resumes)
    say(out, "".join(f"medsynth: {w}\n" for w in plan.warnings)
        + f"medsynth: resuming {run_dir} from {plan.state}\n")
    code = run_streaming(plan.argv, cwd=sd_scripts, env=plan.env, log_path=run_dir / "train.log", out=out)
    return finish(run_dir, plan.output_name, code, main=record.machine_rank == 0), run_dir


def _without_resume(argv: list[str]) -> list[str]:
    if "--resume" in argv:
        i = argv.index("--resume")
        del argv[i:i + 2]
    return argv
