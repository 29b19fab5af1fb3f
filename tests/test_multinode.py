"""Multi-node pass-through: `medsynth train --num-machines/--machine-rank/--main-process-ip/--main-process-port`
reach `accelerate launch`, the step arithmetic counts every machine's processes, and a rank > 0 machine gets its
own run folder and finishes without LoRA files (sd-scripts saves on rank 0 only)."""

from __future__ import annotations

import json
import math
import re

import pytest
import toml
from click.testing import CliRunner

from orchestrator.cli.train import train
from orchestrator.common.errors import MedsynthError
from orchestrator.train.command import Machines, accelerate_command
from train_helpers import make_dataset, write_fake_python, write_fake_sd_scripts


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_one_machine_keeps_the_single_node_command(tmp_path):
    argv = accelerate_command("py", tmp_path / "sd", tmp_path / "run", num_processes=2)
    assert flag(argv, "--num_machines") == "1" and flag(argv, "--num_processes") == "2"
    assert not {"--machine_rank", "--main_process_ip", "--main_process_port"} & set(argv)


def test_several_machines_pass_rank_address_port_and_the_total_process_count(tmp_path):
    machines = Machines(num_machines=2, machine_rank=1, main_process_ip="10.0.0.5", main_process_port=29600)
    argv = accelerate_command("py", tmp_path / "sd", tmp_path / "run", num_processes=4, gpu_ids=(0, 1, 2, 3),
                              machines=machines)
    assert flag(argv, "--num_processes") == str(4 * 2)  # accelerate counts the processes of all machines
    assert flag(argv, "--num_machines") == "2" and flag(argv, "--machine_rank") == "1"
    assert flag(argv, "--main_process_ip") == "10.0.0.5" and flag(argv, "--main_process_port") == "29600"
    assert "--multi_gpu" in argv
    script = argv.index(str(tmp_path / "sd" / "sdxl_train_network.py"))
    assert argv.index("--machine_rank") < script  # launcher options, not sd-scripts'


def test_one_gpu_on_each_of_two_machines_is_multi_gpu(tmp_path):
    argv = accelerate_command("py", tmp_path, tmp_path, machines=Machines(2, 0, "head"))
    assert "--multi_gpu" in argv and flag(argv, "--num_processes") == "2"
    assert "--main_process_port" not in argv  # accelerate's default port


@pytest.mark.parametrize("kwargs, message", [
    ({"num_machines": 2}, "needs main_process_ip"),
    ({"num_machines": 2, "machine_rank": 2, "main_process_ip": "h"},
     "machine_rank 2: must be between 0 and num_machines - 1"),
    ({"main_process_ip": "10.0.0.5"}, "need num_machines > 1"),
    ({"num_machines": 2, "main_process_ip": "a b"}, "not a host name or IP address"),
    ({"num_machines": 2, "main_process_ip": "h", "main_process_port": 70000}, "between 1 and 65535"),
])
def test_inconsistent_machine_settings_are_refused(kwargs, message):
    with pytest.raises(MedsynthError, match=re.escape(message)):
        Machines(**kwargs)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    return {"MEDSYNTH_PYTHON": str(write_fake_python(tmp_path)), "FAKE_GPUS": "NVIDIA H100:79.1,NVIDIA H100:79.1",
            "FAKE_MODE": None}


def invoke(env, *args, **extra):
    return CliRunner().invoke(train, list(args), env={**env, **extra}, catch_exceptions=False)


def common(tmp_path):
    return ["--dataset", str(make_dataset(tmp_path / "ds", repeats=4)), "--model", str(tmp_path / "model.safetensors"),
            "--sd-scripts", str(write_fake_sd_scripts(tmp_path / "sd")), "--run-name", "mn",
            "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}", "--set", "train_batch_size=1",
            "--set", "max_train_epochs=2"]


def test_dry_run_shows_the_multi_node_command_and_counts_every_machine_in_the_steps(tmp_path, env):
    result = invoke(env, *common(tmp_path), "--dry-run", "--num-processes", "2", "--num-machines", "3",
                    "--machine-rank", "0", "--main-process-ip", "head-node", "--main-process-port", "29555")
    assert result.exit_code == 0, result.output
    command = next(line for line in result.output.splitlines() if "accelerate.commands.launch" in line)
    assert "--num_processes 6" in command and "--num_machines 3" in command
    assert "--machine_rank 0 --main_process_ip head-node --main_process_port 29555" in command
    per_epoch = math.ceil(6 * 4 / (1 * 6))  # 6 images × 4 repeats ÷ (batch 1 × 6 processes)
    assert f"= {per_epoch} steps/epoch" in result.output
    assert not (tmp_path / "runs").exists()


def test_rank_0_trains_and_writes_the_lora(tmp_path, env):
    result = invoke(env, *common(tmp_path), "--num-machines", "2", "--main-process-ip", "10.1.1.1")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "runs" / "mn" / "run.json").read_text())
    assert run["status"] == "finished" and run["lora_files"]
    assert run["launch"]["num_machines"] == 2 and run["launch"]["machine_rank"] == 0
    assert flag(run["command"], "--machine_rank") == "0"


def test_a_rank_above_0_gets_its_own_folder_and_finishes_without_lora_files(tmp_path, env):
    result = invoke(env, *common(tmp_path), "--num-machines", "2", "--machine-rank", "1", "--main-process-ip",
                    "10.1.1.1", FAKE_MODE="nolora")  # the fake saves nothing, like sd-scripts off the main process
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs" / "mn").exists()
    run = json.loads((tmp_path / "runs" / "mn-node1" / "run.json").read_text())
    assert run["status"] == "finished" and run["lora_files"] == []
    assert flag(run["command"], "--machine_rank") == "1"
    train_toml = toml.loads((tmp_path / "runs" / "mn-node1" / "train.toml").read_text())
    assert train_toml["saving"]["output_dir"] == str(tmp_path / "runs" / "mn-node1")


def test_rank_0_without_a_lora_file_is_still_a_failure(tmp_path, env):
    result = invoke(env, *common(tmp_path), "--num-machines", "2", "--main-process-ip", "10.1.1.1",
                    FAKE_MODE="nolora")
    assert result.exit_code == 1 and "wrote no" in result.output


def test_machine_settings_with_resume_are_refused(tmp_path, env):
    result = invoke(env, "--resume", "--num-machines", "2", "--main-process-ip", "h")
    assert result.exit_code == 1 and "machine settings included" in result.output


def test_missing_main_process_ip_is_a_one_line_cli_error(tmp_path, env):
    result = invoke(env, *common(tmp_path), "--dry-run", "--num-machines", "2")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "--main-process-ip" in result.output


def test_multi_node_needs_a_run_name_shared_by_every_machine(tmp_path, env):
    # a default name has each machine's own start time, so rank R's folder would not pair with rank 0's
    args = common(tmp_path)
    del args[args.index("--run-name"):args.index("--run-name") + 2]
    result = invoke(env, *args, "--num-machines", "2", "--machine-rank", "1", "--main-process-ip", "10.1.1.1")
    assert result.exit_code == 1 and "--run-name" in result.output
    assert result.output.strip().count("\n") == 0 and not (tmp_path / "runs").exists()
