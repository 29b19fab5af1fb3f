"""The launcher: preflight checks, the accelerate command, streaming, exit codes, Ctrl-C, post-check, resume.

A tiny real Python script stands in for the training interpreter ($MEDSYNTH_PYTHON): it answers the probe
with the GPUs given in FAKE_GPUS and fakes `accelerate launch` (reads the rendered train.toml, prints,
writes LoRA files and state folders the way sd-scripts names them)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from orchestrator.common import process
from orchestrator.runs import folder as rundir
from orchestrator.runs.record import update_record
from orchestrator.train import command, launch, resume
from orchestrator.train.settings import load_settings
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import REPO_ROOT, SD_SCRIPTS_COMMIT
from train_helpers import make_dataset, write_fake_python, write_fake_sd_scripts, write_tokenizers


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake interpreter + sd-scripts folder + dataset + model file; returns a dict of paths."""
    python = write_fake_python(tmp_path)
    monkeypatch.setenv("MEDSYNTH_PYTHON", str(python))
    monkeypatch.setenv("FAKE_GPUS", "NVIDIA H200:139.8")
    monkeypatch.delenv("FAKE_MODE", raising=False)
    model = tmp_path / "sdxl.safetensors"
    model.write_bytes(b"weights")
    return {"python": python, "sd": write_fake_sd_scripts(tmp_path / "sd"), "ds": make_dataset(tmp_path / "ds"),
            "model": model, "runs": tmp_path / "runs"}


def settings_for(fake, *sets, preset="default"):
    return load_settings(preset_name=preset, cwd=fake["runs"].parent,
                         options={"dataset": str(fake["ds"]), "pretrained_model_name_or_path": str(fake["model"])},
                         sets=[f"runs_dir={json.dumps(str(fake['runs']))}", "max_train_epochs=3", *sets])


def run(fake, *sets, name="r1", preset="default", **kw):
    out = io.BytesIO()
    code, run_dir = launch.launch(settings_for(fake, *sets, preset=preset), run_name=name, sd_scripts=fake["sd"],
                                  out=out, **kw)
    return code, run_dir, out.getvalue().decode()


def test_launch_writes_the_run_dir_streams_and_finishes(fake):
    code, run_dir, printed = run(fake)
    assert code == 0
    log = (run_dir / "train.log").read_bytes().decode()  # bytes: keep tqdm-style \r as written
    assert "fake: to stderr" in log and "fake: done" in log
    assert log in printed  # the terminal saw everything the log has
    argv = json.loads(next(ln for ln in log.splitlines() if ln.startswith("fake: argv "))[len("fake: argv "):])
    assert argv[:2] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--config_file") + 1] == str(run_dir / "train.toml")
    assert argv[argv.index("--dataset_config") + 1] == str(run_dir / "dataset.toml")
    assert f"fake: cwd {fake['sd'].resolve()}" in log or f"fake: cwd {fake['sd']}" in log
    assert f"pythonpath {fake['sd']}" in log


def test_run_json_records_what_the_run_is(fake):
    code, run_dir, _ = run(fake, "seed=7")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["preset"] == "default" and record["seed"] == 7
    assert {"source": "--set", "values": {"runs_dir": str(fake["runs"]), "max_train_epochs": 3, "seed": 7}} \
        in record["overrides"]
    assert record["batch"]["how"] == "tier" and "NVIDIA H200" in record["batch"]["explanation"]
    assert record["config"]["train_batch_size"] == record["batch"]["train_batch_size"]
    assert record["dataset"]["manifest_sha256"] == json.loads((fake["ds"] / "dataset.json").read_text())[
        "manifest_sha256"]
    assert record["commits"]["sd_scripts_pinned"] == SD_SCRIPTS_COMMIT and "medsynth" in record["commits"]
    assert record["packages"]["torch"] == "0.0-fake"
    assert record["schedule"]["total_steps"] == record["schedule"]["steps_per_epoch"] * 3
    assert record["status"] == "finished" and record["exit_code"] == 0
    assert record["lora_files"] == ["melanoma_lora-000001.safetensors", "melanoma_lora-000002.safetensors",
                                    "melanoma_lora.safetensors"]
    assert record["command"][0] == str(fake["python"])
    command_sh = (run_dir / "command.sh").read_text()
    assert "exec " in command_sh and "accelerate.commands.launch" in command_sh


def test_batch_size_follows_the_probed_gpu(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "NVIDIA L4:22.5")
    _, run_dir, _ = run(fake)
    record = json.loads((run_dir / "run.json").read_text())
    tiers = settings_for(fake).preset.batch_tiers
    expected = next(t for t in sorted(tiers, key=lambda t: -t.min_gpu_gib) if 22.5 >= t.min_gpu_gib)
    assert record["batch"]["train_batch_size"] == expected.train_batch_size
    assert f"train_batch_size = {expected.train_batch_size}" in (run_dir / "train.toml").read_text()


def rendered_train(run_dir):
    import toml
    flat = {}
    for table in toml.load(run_dir / "train.toml").values():
        flat.update(table)
    return flat


def test_the_large_gpu_tier_brings_its_optimizer_and_latent_cache_settings(fake, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    _, run_dir, printed = run(fake)  # an H200: the top tier
    train = rendered_train(run_dir)
    assert (train["optimizer_type"], train["optimizer_args"]) == ("AdamW", ["fused=True"])
    assert train["vae_batch_size"] == 8 and train["highvram"] is True
    record = json.loads((run_dir / "run.json").read_text())
    assert "optimizer_type AdamW" in record["batch"]["explanation"] and "kohya.highvram true" in printed
    assert record["config"]["optimizer_type"] == "AdamW"


def test_a_small_gpu_tier_keeps_the_presets_optimizer(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "NVIDIA L4:22.5")
    _, run_dir, _ = run(fake)
    train = rendered_train(run_dir)
    assert train["optimizer_type"] == "AdamW8bit" and "highvram" not in train and "vae_batch_size" not in train


def test_settings_the_user_gave_beat_the_tiers(fake):
    _, run_dir, _ = run(fake, "vae_batch_size=2", "kohya.highvram=false")
    train = rendered_train(run_dir)
    assert (train["vae_batch_size"], train["highvram"], train["optimizer_type"]) == (2, False, "AdamW")
    assert train["optimizer_args"] == ["fused=True"]  # not set by the user: the tier's


def test_an_optimizer_the_user_chose_does_not_get_the_tiers_optimizer_args(fake):
    # bitsandbytes' AdamW8bit has no `fused` argument: the tier's optimizer_args go with the tier's optimizer
    _, run_dir, _ = run(fake, "optimizer_type=AdamW8bit")
    train = rendered_train(run_dir)
    assert train["optimizer_type"] == "AdamW8bit" and "optimizer_args" not in train
    assert train["vae_batch_size"] == 8  # unrelated tier settings still apply


def test_expandable_segments_reach_the_training_process_and_its_records(fake, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    _, run_dir, _ = run(fake)
    assert "fake: alloc expandable_segments:True" in (run_dir / "train.log").read_text()
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in (run_dir / "command.sh").read_text()
    assert json.loads((run_dir / "run.json").read_text())["env"]["PYTORCH_CUDA_ALLOC_CONF"] == \
        "expandable_segments:True"


@pytest.mark.parametrize("users, seen", [("expandable_segments:False", "expandable_segments:False"),
                                         ("max_split_size_mb:128", "max_split_size_mb:128,expandable_segments:True")])
def test_the_users_own_allocator_settings_are_kept(fake, monkeypatch, users, seen):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", users)
    _, run_dir, _ = run(fake, name=f"r{len(users)}")
    assert f"fake: alloc {seen}\n" in (run_dir / "train.log").read_text()


def test_expandable_segments_off_leaves_the_allocator_alone(fake, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    _, run_dir, _ = run(fake, "expandable_segments=false")
    assert "fake: alloc <unset>" in (run_dir / "train.log").read_text()
    assert "PYTORCH_CUDA_ALLOC_CONF" not in (run_dir / "command.sh").read_text()


def test_exit_code_is_propagated_and_recorded(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    code, run_dir, _ = run(fake)
    assert code == 3
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_zero_exit_without_a_lora_file_is_a_failure(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "nolora")
    with pytest.raises(MedsynthError, match="wrote no melanoma_lora"):
        run(fake)
    assert json.loads((fake["runs"] / "r1" / "run.json").read_text())["status"] == "failed"


def test_no_gpu_is_a_clear_error_and_nothing_is_written(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "")
    with pytest.raises(MedsynthError, match="no CUDA GPU visible"):
        run(fake)
    assert not fake["runs"].exists() or not any(fake["runs"].iterdir())


def test_gpu_smaller_than_the_preset_is_refused(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "small:8")
    with pytest.raises(MedsynthError, match="at least"):
        run(fake)


def test_cpu_mode_skips_the_gpu_check(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "")
    code, run_dir, _ = run(fake, cpu=True)
    assert code == 0 and "--cpu" in json.loads((run_dir / "run.json").read_text())["command"]


def test_resume_continues_from_the_newest_state(fake):
    code, run_dir, _ = run(fake, "max_train_epochs=3")
    (run_dir / "melanoma_lora.safetensors").unlink()
    (run_dir / "melanoma_lora-state").rename(run_dir / "old-state")
    (run_dir / "old-state" / "train_state.json").write_text(json.dumps({"current_epoch": 2, "current_step": 20}))
    update_record(run_dir, status="interrupted")  # as if stopped before the last epoch
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert code == 0
    record = json.loads((run_dir / "run.json").read_text())
    (resumed,) = record["resumes"]
    assert resumed["state"] == str(run_dir / "old-state")  # step 20 beats the epoch-1 and epoch-2 states
    assert resumed["command"][-2:] == ["--resume", str(run_dir / "old-state")]
    assert record["status"] == "finished" and (run_dir / "melanoma_lora.safetensors").is_file()
    assert (run_dir / "train.log").read_text().count("fake: done") == 2  # appended, not replaced


def test_resume_without_state_is_refused(fake, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run.json").write_text("{}")
    with pytest.raises(MedsynthError, match="no \\*-state folder"):
        resume.resume(tmp_path / "empty", sd_scripts=fake["sd"])


def test_ctrl_c_is_forwarded_and_waited_for(fake, tmp_path):
    argv = [str(fake["python"]), "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "t.toml")]
    (tmp_path / "t.toml").write_text("[a]\nx = 1\n")
    code = ("import sys; from pathlib import Path; from orchestrator.common.process import run_streaming; "
            f"sys.exit(run_streaming({argv!r}, cwd=Path('.'), env=dict(__import__('os').environ), "
            f"log_path=Path({str(tmp_path / 'train.log')!r})))")
    env = {**os.environ, "FAKE_MODE": "sigint", "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, text=True)
    lines = []
    for line in parent.stdout:
        lines.append(line)
        if "fake: ready" in line:
            parent.send_signal(signal.SIGINT)
            break
    rest = parent.communicate(timeout=30)[0]
    assert parent.returncode == 130
    assert "SIGINT sent to the training process group" in rest
    assert "fake: got SIGINT, saving" in (tmp_path / "train.log").read_text()


def test_child_environment_keeps_the_parents_and_puts_sd_scripts_first(tmp_path):
    env, changes = command.child_env(tmp_path, offline=True, cpu=False, base={"PYTHONPATH": "/carried", "X": "1"})
    assert env["PYTHONPATH"] == f"{tmp_path}{os.pathsep}/carried" and env["X"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1" and changes["HF_HUB_OFFLINE"] == "1" and "X" not in changes


def test_multi_gpu_command(tmp_path):
    argv = command.accelerate_command("py", tmp_path / "sd", tmp_path / "run", num_processes=2, gpu_ids=(0, 3),
                                     mixed_precision="bf16")
    assert argv[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in argv and argv[argv.index("--gpu_ids") + 1] == "0,3"
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[argv.index("--dynamo_backend") + 1] == "no"
    assert argv[argv.index("--config_file") + 1] == str(tmp_path / "run" / "train.toml")


def test_single_gpu_command_has_no_multi_gpu_flag(tmp_path):
    assert "--multi_gpu" not in command.accelerate_command("py", tmp_path, tmp_path)


def test_offline_launch_sets_hub_offline_for_the_child(fake, tmp_path):
    write_tokenizers(tmp_path / "tok")
    _, run_dir, _ = run(fake, f"tokenizer_cache_dir={json.dumps(str(tmp_path / 'tok'))}", offline=True)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["env"]["HF_HUB_OFFLINE"] == "1" and "HF_HUB_OFFLINE=1" in (run_dir / "command.sh").read_text()


def test_hand_set_batch_above_the_tier_is_warned_about(fake, monkeypatch):
    monkeypatch.setenv("FAKE_GPUS", "NVIDIA L4:22.5")
    _, run_dir, printed = run(fake, "train_batch_size=16")
    assert "warning: batch 16 is above" in printed
    assert any("batch 16" in n for n in json.loads((run_dir / "run.json").read_text())["gpu"]["preflight"])


class ClosedTerminal(io.BytesIO):
    def write(self, data):
        raise BrokenPipeError("terminal gone")


def test_a_closed_terminal_does_not_stop_the_log(fake, tmp_path, monkeypatch):
    argv = [str(fake["python"]), "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "t.toml")]
    (tmp_path / "t.toml").write_text("[a]\noutput_dir = 'x'\n")
    monkeypatch.setenv("FAKE_MODE", "fail")
    code = process.run_streaming(argv, cwd=tmp_path, env=dict(os.environ), log_path=tmp_path / "train.log",
                                out=ClosedTerminal())
    assert code == 3 and "fake: to stderr" in (tmp_path / "train.log").read_text()


def interrupted_run(fake, monkeypatch, *sets, name="r1", **kw):
    """A run that saved epoch 1 (LoRA + state) and was then interrupted."""
    monkeypatch.setenv("FAKE_MODE", "stop1")
    code, run_dir, _ = run(fake, *sets, name=name, **kw)
    monkeypatch.setenv("FAKE_MODE", "ok")
    assert code == 130 and json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    return run_dir


def test_resume_of_a_compiled_run_loads_the_lora_weights_its_state_lacks(fake, monkeypatch):
    # sd-scripts + accelerate leave the LoRA out of a compiled run's state: the epoch's LoRA file brings it back
    run_dir = interrupted_run(fake, monkeypatch, "torch_compile=true")
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert code == 0
    (resumed,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resumed["command"][-4:] == ["--resume", str(run_dir / "melanoma_lora-000001-state"),
                                       "--network_weights", str(run_dir / "melanoma_lora-000001.safetensors")]


def test_resume_of_a_compiled_run_without_its_lora_file_is_refused(fake, monkeypatch):
    run_dir = interrupted_run(fake, monkeypatch, "torch_compile=true")
    (run_dir / "melanoma_lora-000001.safetensors").unlink()
    with pytest.raises(MedsynthError, match="holds no LoRA weights and melanoma_lora-000001.safetensors"):
        resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())


def test_resume_of_an_eager_run_takes_the_weights_from_its_state(fake, monkeypatch):
    run_dir = interrupted_run(fake, monkeypatch)
    resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    (resumed,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert "--network_weights" not in resumed["command"]


def test_resume_of_a_finished_run_is_refused(fake):
    # its newest state is the end of training: sd-scripts would stop on "max_train_steps should be greater"
    code, run_dir, _ = run(fake)
    assert code == 0
    with pytest.raises(MedsynthError, match="finished"):
        resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert "resumes" not in json.loads((run_dir / "run.json").read_text())


def test_resume_keeps_the_runs_cpu_and_offline_settings(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_GPUS", "")
    write_tokenizers(tmp_path / "tok")
    run_dir = interrupted_run(fake, monkeypatch, f"tokenizer_cache_dir={json.dumps(str(tmp_path / 'tok'))}",
                              cpu=True, offline=True)
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())  # no GPU here, as when it started
    assert code == 0
    (resumed,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resumed["env"]["CUDA_VISIBLE_DEVICES"] == "" and resumed["env"]["HF_HUB_OFFLINE"] == "1"


def test_resume_keeps_the_runs_allocator_setting(fake, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    run_dir = interrupted_run(fake, monkeypatch)
    resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    (resumed,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resumed["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert (run_dir / "train.log").read_text().count("fake: alloc expandable_segments:True") == 2


def marked_running(run_dir, **mark):
    """run.json as a medsynth process that is training the run (or was killed while it did) leaves it."""
    update_record(run_dir, status="running", running_mark={**rundir.running_mark(), **mark})


def test_a_run_still_training_here_is_not_resumed(fake, monkeypatch):
    run_dir = interrupted_run(fake, monkeypatch)
    marked_running(run_dir)  # this test's own process: alive
    with pytest.raises(MedsynthError, match=f"still training \\(medsynth pid {os.getpid()} on this host\\)"):
        resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert "resumes" not in json.loads((run_dir / "run.json").read_text())
    assert rundir.newest_resumable_run(fake["runs"]) is None


def test_a_run_whose_medsynth_was_killed_resumes(fake, monkeypatch):
    run_dir = interrupted_run(fake, monkeypatch)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    marked_running(run_dir, pid=int(gone.stdout))
    assert rundir.newest_resumable_run(fake["runs"]) == run_dir
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert code == 0 and json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_a_reused_pid_does_not_count_as_the_run_training(fake, monkeypatch):
    if rundir.running_mark()["pid_started"] is None:
        pytest.skip("no /proc/<pid>/stat on this system: a reused pid cannot be told apart")
    run_dir = interrupted_run(fake, monkeypatch)
    marked_running(run_dir, pid_started="1")  # our pid, but a process that started at boot
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=io.BytesIO())
    assert code == 0


def test_a_run_marked_on_another_host_resumes_with_a_warning(fake, monkeypatch):
    run_dir = interrupted_run(fake, monkeypatch)
    marked_running(run_dir, host="node-elsewhere")
    out = io.BytesIO()
    code, _ = resume.resume(run_dir, sd_scripts=fake["sd"], out=out)
    assert code == 0
    assert "marked as training on node-elsewhere" in out.getvalue().decode().splitlines()[0]


def test_launch_marks_the_run_with_its_process(fake):
    _, run_dir, _ = run(fake)
    mark = json.loads((run_dir / "run.json").read_text())["running_mark"]
    assert mark["pid"] == os.getpid() and mark["host"] == rundir.running_mark()["host"]


def test_resume_on_a_rank_above_0_continues_from_rank_0s_state(fake, monkeypatch):
    machines = command.Machines(2, 0, "10.0.0.1")
    rank0 = interrupted_run(fake, monkeypatch, name="mn", machines=machines)
    monkeypatch.setenv("FAKE_MODE", "nolora")  # a rank > 0 saves nothing (sd-scripts saves on rank 0 only)
    _, rank1, _ = run(fake, name="mn", machines=command.Machines(2, 1, "10.0.0.1"))
    assert rank1.name == "mn-node1" and not list(rank1.glob("*-state"))
    code, _ = resume.resume(rank1, sd_scripts=fake["sd"], out=io.BytesIO())
    assert code == 0
    (resumed,) = json.loads((rank1 / "run.json").read_text())["resumes"]
    assert resumed["command"][-2:] == ["--resume", str(rank0 / "melanoma_lora-000001-state")]
    assert resumed["command"][resumed["command"].index("--machine_rank") + 1] == "1"


def test_ctrl_c_as_the_child_starts_is_forwarded_not_lost(fake, tmp_path, monkeypatch):
    # the first Ctrl-C can land right after the child exists, before anything else ran: it must still reach the
    # child (which is in its own process group, out of the terminal's reach), not abort medsynth and orphan it
    started = []
    real_popen = subprocess.Popen

    def popen_then_ctrl_c(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        os.kill(os.getpid(), signal.SIGINT)
        return started[-1]

    argv = [str(fake["python"]), "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "t.toml")]
    (tmp_path / "t.toml").write_text("[a]\nx = 1\n")
    monkeypatch.setenv("FAKE_MODE", "sigint")
    monkeypatch.setattr(process.subprocess, "Popen", popen_then_ctrl_c)
    try:
        code = process.run_streaming(argv, cwd=tmp_path, env=dict(os.environ), log_path=tmp_path / "train.log",
                                    out=io.BytesIO())
    except KeyboardInterrupt:
        started[-1].kill()
        started[-1].wait()
        pytest.fail("the Ctrl-C escaped run_streaming and left the training process running")
    assert code == 130 and "SIGINT sent to the training process group" in (tmp_path / "train.log").read_text()


_DYNAMO_PROBE = """
import json, os, sys
from accelerate.commands.launch import launch_command_parser, _validate_launch_command
from accelerate.utils import TorchDynamoPlugin
from accelerate.utils.launch import prepare_simple_launcher_cmd_env
args, *_ = _validate_launch_command(launch_command_parser().parse_args(json.loads(sys.argv[1])[3:]))
os.environ.update(prepare_simple_launcher_cmd_env(args)[1])
print(json.dumps(TorchDynamoPlugin(backend="inductor").to_kwargs()))  # what sd-scripts' Accelerator compiles with
"""


@pytest.mark.parametrize("mode, dynamic", [("max-autotune", True), ("reduce-overhead", False), (None, False)])
def test_compile_mode_and_dynamic_reach_torch_compile_through_accelerate(tmp_path, mode, dynamic):
    pytest.importorskip("accelerate", reason="accelerate not installed (make setup-kohya)")
    argv = command.accelerate_command("py", tmp_path / "sd", tmp_path / "run", mixed_precision="bf16",
                                     dynamo_mode=mode, dynamo_dynamic=dynamic)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}  # no accelerate config file of this machine
    done = subprocess.run([sys.executable, "-c", _DYNAMO_PROBE, json.dumps(argv)], env=env, capture_output=True,
                          text=True, check=True)
    kwargs = json.loads(done.stdout.strip().splitlines()[-1])
    assert kwargs.get("mode", "default") == (mode or "default") and bool(kwargs.get("dynamic")) is dynamic
    assert argv[argv.index("--dynamo_backend") + 1] == "no"  # the backend stays sd-scripts' choice


def test_compiled_state_weights_follow_the_runs_file_format(tmp_path):
    state = tmp_path / "x-000003-state"
    state.mkdir()
    (tmp_path / "x-000003.ckpt").write_bytes(b"lora")
    assert resume.compiled_state_weights(state, "ckpt") == tmp_path / "x-000003.ckpt"
    with pytest.raises(MedsynthError, match="x-000003.safetensors"):
        resume.compiled_state_weights(state)
