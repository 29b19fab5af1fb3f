"""The accelerate command of a training run and its environment: the interpreter ($MEDSYNTH_PYTHON or medsynth's
own), the child's environment (the parent's, PYTHONPATH included, with sd-scripts put first), and `Machines`, the
multi-node part of the command. Messages name the settings (num_machines, ...), not command-line flags.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.train.preflight import TRAIN_SCRIPT

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"


def python_executable() -> str:
    return os.environ.get("MEDSYNTH_PYTHON") or sys.executable


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
            raise MedsynthError(f"num_machines must be >= 1, got {self.num_machines}")
        if not 0 <= self.machine_rank < self.num_machines:
            raise MedsynthError(f"machine_rank {self.machine_rank}: must be between 0 and num_machines - 1 "
                                f"({self.num_machines - 1})")
        if self.num_machines == 1 and (self.main_process_ip or self.main_process_port is not None):
            raise MedsynthError("main_process_ip/main_process_port need num_machines > 1")
        if self.num_machines > 1 and not self.main_process_ip:
            raise MedsynthError(f"num_machines {self.num_machines} needs main_process_ip (the address of the "
                                f"rank-0 machine, the same on every machine)")
        if self.main_process_ip and not _HOST.match(self.main_process_ip):
            raise MedsynthError(f"main_process_ip {self.main_process_ip!r}: not a host name or IP address")
        if self.main_process_port is not None and not 1 <= self.main_process_port <= 65535:
            raise MedsynthError(f"main_process_port {self.main_process_port}: must be between 1 and 65535")

    @property
    def main(self) -> bool:
        """sd-scripts saves LoRA files, states and samples on the global main process only: rank 0."""
        return self.machine_rank == 0

    @property
    def folder_suffix(self) -> str:
        """A rank > 0 machine's run folder is <name>-node<rank>: machines sharing a file system must not collide."""
        return f"-node{self.machine_rank}" if self.machine_rank else ""

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
