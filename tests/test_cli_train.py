"""`medsynth train` end to end through click: dry-run with no GPU and no sd-scripts, errors, a faked launch."""

from __future__ import annotations

import json
import math
import re

import pytest
import toml
from click.testing import CliRunner

from orchestrator.cli.train import train
from orchestrator.dataset.age import age_band
from orchestrator.train.settings import load_preset
from train_helpers import DEFAULT_ROWS, make_dataset, write_fake_python, write_fake_sd_scripts


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No GPU tool on PATH, no project file in the working directory."""
    (tmp_path / "bin").mkdir()
    monkeypatch.chdir(tmp_path / "bin")
    return {"PATH": str(tmp_path / "bin"), "MEDSYNTH_PYTHON": None, "FAKE_MODE": None}


def invoke(tmp_path, env, *args):
    return CliRunner().invoke(train, [*args], env=env, catch_exceptions=False)


def sections(output: str) -> dict[str, str]:
    """The '--- name' blocks of the dry-run output."""
    parts = re.split(r"^--- (\S+)\n", output, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_dry_run_without_gpu_or_sd_scripts_prints_command_tomls_and_steps(tmp_path, env):
    ds = make_dataset(tmp_path / "ds", repeats=2)
    runs = tmp_path / "runs"
    result = invoke(tmp_path, env, "--dry-run", "--dataset", str(ds), "--sd-scripts", str(tmp_path / "nowhere"),
                    "--set", f"runs_dir={json.dumps(str(runs))}", "--run-name", "demo")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "no GPU visible: would use" in out
    assert "accelerate.commands.launch" in out and "sdxl_train_network.py" in out
    blocks = sections(out)
    train_doc, dataset_doc = toml.loads(blocks["train.toml"]), toml.loads(blocks["dataset.toml"])
    batch = dataset_doc["datasets"][0]["batch_size"]
    epochs = train_doc["training"]["max_train_epochs"]
    per_epoch = math.ceil(6 * 2 / batch)
    assert f"6 images × 2 repeats ÷ batch {batch} = {per_epoch} steps/epoch × {epochs} epochs = " \
           f"{per_epoch * epochs} steps" in out
    assert f"warmup: {train_doc['optimizer']['lr_warmup_steps']} steps" in out
    combinations = {(sex, site, age_band(age)) for sex, site, age, _ in DEFAULT_ROWS}
    assert blocks["sample_prompts.txt"].count(" --d ") == min(4, len(combinations))
    assert not runs.exists()  # a dry run writes nothing


def test_dry_run_with_seed_blog_shows_its_schedule(tmp_path, env):
    ds = make_dataset(tmp_path / "ds")
    result = invoke(tmp_path, env, "--dry-run", "--preset", "seed-blog", "--dataset", str(ds))
    train_doc = toml.loads(sections(result.output)["train.toml"])
    preset = load_preset("seed-blog").values
    assert train_doc["optimizer"]["learning_rate"] == preset["learning_rate"]
    assert train_doc["training"]["max_train_epochs"] == preset["max_train_epochs"]
    assert "batch size: 1 (preset seed-blog)" in result.output


def test_project_file_dataset_and_train_table_are_used(tmp_path, env):
    make_dataset(tmp_path / "work" / "ds")
    (tmp_path / "work" / "medsynth.toml").write_text('[dataset]\nout = "ds"\n[train]\nnetwork_dim = 16\n')
    result = invoke(tmp_path, env, "--dry-run", "--config", str(tmp_path / "work" / "medsynth.toml"))
    assert result.exit_code == 0, result.output
    assert toml.loads(sections(result.output)["train.toml"])["network"]["network_dim"] == 16


def test_unknown_set_key_exits_non_zero_with_a_suggestion(tmp_path, env):
    ds = make_dataset(tmp_path / "ds")
    result = invoke(tmp_path, env, "--dry-run", "--dataset", str(ds), "--set", "learning_rte=1e-4")
    assert result.exit_code == 1
    assert "error:" in result.output and "did you mean 'learning_rate'" in result.output


def test_missing_dataset_is_a_one_line_error(tmp_path, env):
    result = invoke(tmp_path, env, "--dry-run", "--dataset", str(tmp_path / "none"))
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "dataset build" in result.output


def test_resume_refuses_new_settings(tmp_path, env):
    result = invoke(tmp_path, env, "--resume", "--set", "network_dim=4")
    assert result.exit_code == 1 and "--resume continues a run" in result.output


def test_gpu_ids_must_match_process_count(tmp_path, env):
    result = invoke(tmp_path, env, "--dry-run", "--gpu-ids", "0,1", "--num-processes", "3")
    assert result.exit_code == 1 and "--gpu-ids" in result.output


def fake_env(tmp_path, env, mode="ok"):
    return {**env, "MEDSYNTH_PYTHON": str(write_fake_python(tmp_path)), "FAKE_GPUS": "NVIDIA H100:79.1",
            "FAKE_MODE": mode}


def train_args(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    return ["--dataset", str(ds), "--model", str(model), "--sd-scripts", str(write_fake_sd_scripts(tmp_path / "sd")),
            "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}", "--set", "max_train_epochs=2",
            "--run-name", "cli"]


def test_train_runs_and_reports_the_run_dir(tmp_path, env):
    result = invoke(tmp_path, fake_env(tmp_path, env), *train_args(tmp_path))
    assert result.exit_code == 0, result.output
    assert "fake: done" in result.output and f"done: {tmp_path / 'runs' / 'cli'}" in result.output


def test_training_failure_exit_code_is_the_commands(tmp_path, env):
    result = invoke(tmp_path, fake_env(tmp_path, env, "fail"), *train_args(tmp_path))
    assert result.exit_code == 3 and "training exited with code 3" in result.output


def test_resume_of_the_newest_run(tmp_path, env):
    args = train_args(tmp_path)
    assert invoke(tmp_path, fake_env(tmp_path, env, "stop1"), *args).exit_code == 130  # interrupted after epoch 1
    result = invoke(tmp_path, fake_env(tmp_path, env), "--resume", "--sd-scripts", args[args.index("--sd-scripts") + 1],
                    "--config", str(_project_with_runs(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "melanoma_lora-000001-state" in result.output


def _project_with_runs(tmp_path):
    project = tmp_path / "medsynth.toml"
    project.write_text(f"[train]\nruns_dir = {json.dumps(str(tmp_path / 'runs'))}\n")
    return project


def test_dry_run_reports_launch_problems_as_warnings(tmp_path, env):
    ds = make_dataset(tmp_path / "ds")
    result = invoke(tmp_path, env, "--dry-run", "--dataset", str(ds), "--sd-scripts", str(tmp_path / "nowhere"),
                    "--offline", "--model", str(tmp_path / "missing.safetensors"))
    assert result.exit_code == 0
    warnings = [ln for ln in result.output.splitlines() if ln.startswith("warning")]
    assert any("sdxl_train_network.py not found" in w for w in warnings)
    assert any("missing.safetensors" in w for w in warnings)
    assert any("tokenizer_cache_dir" in w for w in warnings)


def test_resume_dry_run_prints_the_command_and_trains_nothing(tmp_path, env):
    args = train_args(tmp_path)
    assert invoke(tmp_path, fake_env(tmp_path, env, "stop1"), *args).exit_code == 130
    run_json = tmp_path / "runs" / "cli" / "run.json"
    before = run_json.read_text()
    result = invoke(tmp_path, fake_env(tmp_path, env), "--resume", "--dry-run", "--run-name", "cli",
                    "--sd-scripts", args[args.index("--sd-scripts") + 1], "--config", str(_project_with_runs(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "fake: argv" not in result.output  # nothing was launched
    state = tmp_path / "runs" / "cli" / "melanoma_lora-000001-state"
    command = next(line for line in result.output.splitlines() if "accelerate.commands.launch" in line)
    assert command.endswith(f"--resume {state}")
    assert run_json.read_text() == before and not (tmp_path / "runs" / "cli" / "melanoma_lora.safetensors").exists()


@pytest.mark.parametrize("option", [["--num-processes", "2"], ["--gpu-ids", "0,1"]])
def test_resume_refuses_process_options(tmp_path, env, option):
    result = invoke(tmp_path, env, "--resume", *option)
    assert result.exit_code == 1 and "--resume reruns the run's own command" in result.output
    assert option[0] in result.output


def test_resume_without_run_name_refuses_a_multi_node_run(tmp_path, env):
    args = train_args(tmp_path)
    multi = ["--num-machines", "2", "--main-process-ip", "10.0.0.1"]
    assert invoke(tmp_path, fake_env(tmp_path, env, "stop1"), *args, *multi).exit_code == 130
    result = invoke(tmp_path, fake_env(tmp_path, env), "--resume", "--sd-scripts", args[args.index("--sd-scripts") + 1],
                    "--config", str(_project_with_runs(tmp_path)))
    assert result.exit_code == 1 and "--run-name" in result.output and "multi-node" in result.output
    assert "resumes" not in json.loads((tmp_path / "runs" / "cli" / "run.json").read_text())


def test_dry_run_sizes_the_batch_for_the_gpus_it_would_use(tmp_path, env):
    # GPU 0 is small, GPU 1 large: --gpu-ids 1 trains on the large one only, so its tier applies
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA L4, 23034'\necho 'NVIDIA H200, 143771'\n")
    smi.chmod(0o755)
    ds = make_dataset(tmp_path / "ds")
    result = invoke(tmp_path, env, "--dry-run", "--dataset", str(ds), "--gpu-ids", "1",
                    "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}")
    assert result.exit_code == 0, result.output
    tiers = load_preset("default").batch_tiers
    h200 = next(t for t in sorted(tiers, key=lambda t: -t.min_gpu_gib) if 143771 / 1024 >= t.min_gpu_gib)
    assert f"batch size: auto: {h200.train_batch_size} for 140 GiB NVIDIA H200" in result.output


def test_resume_run_dir_continues_a_run_that_run_name_cannot_name(tmp_path, env):
    args = train_args(tmp_path)
    args[args.index(f"runs_dir={json.dumps(str(tmp_path / 'runs'))}")] = \
        f"runs_dir={json.dumps(str(tmp_path / 'runs' / 'sweep'))}"  # a sweep's run: runs/<sweep>/<run>
    assert invoke(tmp_path, fake_env(tmp_path, env, "stop1"), *args).exit_code == 130
    run_dir = tmp_path / "runs" / "sweep" / "cli"
    started = invoke(tmp_path, fake_env(tmp_path, env), "--run-dir", str(run_dir))
    assert started.exit_code == 1 and f"--resume --run-dir {run_dir}" in started.output
    result = invoke(tmp_path, fake_env(tmp_path, env), "--run-dir", str(run_dir), "--resume",
                    "--sd-scripts", args[args.index("--sd-scripts") + 1])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert (run_dir / "melanoma_lora.safetensors").is_file()
