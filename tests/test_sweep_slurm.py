"""`medsynth sweep --emit slurm` and `medsynth train --run-dir`: the sbatch array script (bash -n, every run,
quoting of odd paths, a task actually run with bash) and launching a pre-rendered run folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli.sweep import sweep
from orchestrator.cli.train import train
from orchestrator.common.errors import MedsynthError
from orchestrator.sweep.slurm import render_script
from train_helpers import make_dataset, write_fake_python, write_fake_sd_scripts

ODD = "runs dir 'quoted' $HOME `x` (1)"


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    make_dataset(tmp_path / "ds")
    env = {"MEDSYNTH_PYTHON": str(write_fake_python(tmp_path)), "FAKE_GPUS": "NVIDIA H100:79.1", "FAKE_MODE": None}
    return {"root": tmp_path, "sd": write_fake_sd_scripts(tmp_path / "sd"), "env": env}


def emit(work, *args, runs_dir: str = "runs", grid: str = '[grid]\nlearning_rate = [1e-5, 2e-5]\nseed = [1, 2]\n'):
    path = work["root"] / "s.toml"
    path.write_text(f'name = "s"\ndataset = "ds"\n[fixed]\nmax_train_epochs = 2\nruns_dir = {json.dumps(runs_dir)}\n'
                    f'pretrained_model_name_or_path = "model.safetensors"\n{grid}', encoding="utf-8")
    return CliRunner().invoke(sweep, [str(path), "--emit", "slurm", "--sd-scripts", str(work["sd"]), *args],
                              env=work["env"], catch_exceptions=False)


def bash_n(script) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)


def array_dirs(script_text: str) -> list[str]:
    """The RUN_DIRS array as bash reads it."""
    body = script_text[script_text.index("RUN_DIRS=("):script_text.index("\n)\n") + 3]
    done = subprocess.run(["bash", "-c", body + 'printf "%s\\0" "${RUN_DIRS[@]}"'], capture_output=True, check=True)
    return done.stdout.decode().split("\0")[:-1]


def test_emit_writes_the_run_folders_and_an_array_script_naming_every_run(work):
    result = emit(work, "--gpus", "2", "--time", "12:00:00", "--partition", "gpu", "--account", "derm-lab",
                  "--gpu-memory", "80")
    assert result.exit_code == 0, result.output
    sweep_dir = work["root"] / "runs" / "s"
    script = sweep_dir / "sweep.slurm"
    text = script.read_text()
    assert bash_n(script).returncode == 0, bash_n(script).stderr
    record = json.loads((sweep_dir / "sweep.json").read_text())
    names = [r["name"] for r in record["runs"]]
    assert len(names) == 4 and all(r["status"] == "created" for r in record["runs"])
    assert f"#SBATCH --array=0-{len(names) - 1}" in text
    for line in ("#SBATCH --gres=gpu:2", "#SBATCH --time=12:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --account=derm-lab", "#SBATCH --job-name=s"):
        assert line in text
    assert array_dirs(text) == [str(sweep_dir / n) for n in names]
    for name in names:
        run = json.loads((sweep_dir / name / "run.json").read_text())
        assert run["status"] == "created"
        assert run["command"][run["command"].index("--num_processes") + 1] == "2"
        assert run["batch"]["train_batch_size"] == 6  # "auto" resolved for --gpu-memory 80
    assert f"sbatch {shlex.quote(str(script))}" in result.output


def _little_free_space(monkeypatch, free: int = 10**6):
    """The disk cannot be emptied here: report 1 MB free, too little for even one run's outputs."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def test_emit_warns_but_writes_when_this_machines_disk_is_too_small(work, monkeypatch):
    from orchestrator.train.preflight import filesystem_type

    assert filesystem_type(work["root"]) not in ("nfs", "nfs4", "lustre")  # the test's folder is a local disk
    _little_free_space(monkeypatch)
    result = emit(work)
    assert result.exit_code == 0, result.output
    sweep_dir = work["root"] / "runs" / "s"
    assert "warning: " in result.output and "the 4 runs may write" in result.output
    assert "they write on the nodes that train them" in result.output
    assert (sweep_dir / "sweep.slurm").is_file()
    assert len([p for p in sweep_dir.glob("*/run.json")]) == 4


def test_emit_refuses_too_little_space_on_a_file_system_the_nodes_share(work, monkeypatch):
    from orchestrator.sweep import run as sweep_run

    _little_free_space(monkeypatch)
    monkeypatch.setattr(sweep_run, "filesystem_type", lambda path: "nfs4")  # no NFS server here
    result = emit(work)
    (error,) = [line for line in result.output.splitlines() if line.startswith("error: ")]  # after the plan table
    assert result.exit_code == 1
    assert "the 4 runs may write" in error and "nfs4 file system, which the compute nodes write to" in error
    assert not (work["root"] / "runs" / "s" / "sweep.slurm").exists()
    assert not list((work["root"] / "runs" / "s").glob("*/run.json"))


def test_filesystem_type_reads_the_innermost_mount_and_its_escapes(tmp_path):
    from orchestrator.train.preflight import filesystem_type

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\nserver:/home /shared nfs4 rw 0 0\n"
                      "lustre@o2ib:/scratch /shared/my\\040scratch lustre rw 0 0\n", encoding="utf-8")
    assert filesystem_type(Path("/shared/user/runs"), mounts) == "nfs4"
    assert filesystem_type(Path("/shared/my scratch/runs"), mounts) == "lustre"
    assert filesystem_type(Path("/shared-not/runs"), mounts) == "ext4"
    assert filesystem_type(tmp_path, tmp_path / "none") is None
    done = subprocess.run(["df", "--output=fstype", str(tmp_path)], capture_output=True, text=True)
    if done.returncode == 0:  # GNU df reads the same mount table
        assert filesystem_type(tmp_path) == done.stdout.split()[-1]


def test_odd_paths_are_quoted_and_a_task_runs_its_own_folder(work):
    result = emit(work, runs_dir=ODD)
    assert result.exit_code == 0, result.output
    sweep_dir = work["root"] / ODD / "s"
    script = sweep_dir / "sweep.slurm"
    text = script.read_text()
    assert bash_n(script).returncode == 0, bash_n(script).stderr
    names = [r["name"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]]
    assert array_dirs(text) == [str(sweep_dir / n) for n in names]
    assert "#SBATCH --output" not in text  # sbatch would read the odd path without a shell
    # task 2 of the array, as Slurm would start it (the fake interpreter stands in for the GPU training)
    env = {**os.environ, **{k: v for k, v in work["env"].items() if v is not None}, "SLURM_ARRAY_TASK_ID": "2"}
    env.pop("FAKE_MODE", None)
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {n: json.loads((sweep_dir / n / "run.json").read_text())["status"] for n in names}
    assert statuses == {n: "finished" if i == 2 else "created" for i, n in enumerate(names)}


def test_the_script_refuses_to_run_outside_slurm(work):
    assert emit(work).exit_code == 0
    script = work["root"] / "runs" / "s" / "sweep.slurm"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_ARRAY_TASK_ID"}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0 and "run this script with sbatch" in done.stderr


@pytest.mark.parametrize("args, message", [
    (("--time", "12h"), "--time '12h'"), (("--partition", "gpu; rm -rf /"), "--partition"),
    (("--account", "a b"), "--account"),
])
def test_slurm_options_that_sbatch_would_misread_are_refused(work, args, message):
    result = emit(work, *args)
    assert result.exit_code == 1 and message in result.output
    assert not (work["root"] / "runs").exists()


def test_slurm_options_without_emit_are_refused(work):
    path = work["root"] / "s.toml"
    path.write_text('dataset = "ds"\n[grid]\nseed = [1, 2]\n')
    result = CliRunner().invoke(sweep, [str(path), "--dry-run", "--time", "1:00:00"], env=work["env"])
    assert result.exit_code == 1 and "--emit slurm" in result.output


def test_gpu_memory_without_dry_run_or_emit_is_refused(work):
    path = work["root"] / "s.toml"
    path.write_text('dataset = "ds"\n[fixed]\nruns_dir = "runs"\n[grid]\nseed = [1, 2]\n')
    result = CliRunner().invoke(sweep, [str(path), "--gpu-memory", "80", "--sd-scripts", str(work["sd"])],
                                env=work["env"])
    assert result.exit_code == 1 and "--gpu-memory is for --dry-run and --emit" in result.output
    assert not (work["root"] / "runs").exists()


def test_render_script_needs_runs(tmp_path):
    with pytest.raises(MedsynthError, match="at least one run"):
        render_script(name="s", run_dirs=[], script=tmp_path / "x", gpus=1, time=None, partition=None, account=None,
                      python=sys.executable)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_a_run_folder_of_many_runs_keeps_bash_syntax(tmp_path):
    dirs = [tmp_path / f"r{i} 'x' \"y\" $z" for i in range(30)]
    text = render_script(name="big", run_dirs=dirs, script=tmp_path / "s.slurm", gpus=1, time="1-00:00:00",
                         partition="a,b", account=None, python="/opt/py thon/bin/python")
    (tmp_path / "s.slurm").write_text(text)
    assert bash_n(tmp_path / "s.slurm").returncode == 0
    assert array_dirs(text) == [str(d) for d in dirs]
    assert re.search(r"^#SBATCH --array=0-29$", text, flags=re.M)


# ----------------------------------------------------------------------------------------------- --run-dir

def test_train_run_dir_trains_a_created_folder_once(work):
    assert emit(work).exit_code == 0
    run_dir = next(p for p in (work["root"] / "runs" / "s").iterdir() if (p / "run.json").is_file())
    runner = CliRunner()
    first = runner.invoke(train, ["--run-dir", str(run_dir)], env=work["env"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["lora_files"]
    assert run["command"][0] == work["env"]["MEDSYNTH_PYTHON"]  # this machine's interpreter
    again = runner.invoke(train, ["--run-dir", str(run_dir)], env=work["env"], catch_exceptions=False)
    assert again.exit_code == 1 and "already finished" in again.output
    assert "--resume" not in again.output  # a finished run cannot be continued


def test_train_run_dir_refuses_settings_of_its_own(work):
    assert emit(work).exit_code == 0
    run_dir = next(p for p in (work["root"] / "runs" / "s").iterdir() if (p / "run.json").is_file())
    result = CliRunner().invoke(train, ["--run-dir", str(run_dir), "--set", "seed=3", "--cpu"], env=work["env"])
    assert result.exit_code == 1 and "drop --set, --cpu" in result.output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "created"


def test_train_run_dir_checks_the_gpu_of_the_machine_it_runs_on(work):
    assert emit(work, "--gpus", "2").exit_code == 0
    run_dir = next(p for p in (work["root"] / "runs" / "s").iterdir() if (p / "run.json").is_file())
    result = CliRunner().invoke(train, ["--run-dir", str(run_dir)], env=work["env"])  # one GPU visible
    assert result.exit_code == 1 and "--num-processes 2 needs as many GPUs" in result.output
