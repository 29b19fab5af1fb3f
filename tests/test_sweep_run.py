"""`medsynth sweep` end to end through click: up-front rendering + validation (real validate.py), running in turn
with a fake training interpreter, continue-on-error, the summary, sweep.json, and the shared disk caches.

The fake interpreter is tests/train_helpers.py's, with a prelude standing in for what sd-scripts does that the
sweep relies on: it writes `<image>_te_outputs.npz` next to the images it trains on when they are missing
(cache_text_encoder_outputs_to_disk), prints a progress bar with `avr_loss=` (learning rate × 1000, so each run's
loss is its own), writes TensorBoard events with the real writer when FAKE_EVENTS is set, exits 5 for learning
rates listed in FAKE_FAIL_LR and 130 for those in FAKE_STOP_LR, and prints the sweep.json it finds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import toml
from click.testing import CliRunner

from orchestrator.cli.sweep import sweep
from orchestrator.common.paths import TEMPLATES_DIR
from orchestrator.kohya import lycoris_args
from orchestrator.sweep.run import final_loss
from train_helpers import FAKE_PYTHON, make_dataset, write_fake_sd_scripts

PRELUDE = r'''
import json, os, sys
from pathlib import Path
_args = sys.argv[1:]
if _args[:2] == ["-m", "accelerate.commands.launch"]:
    import toml
    _flat = {}
    for _table in toml.load(_args[_args.index("--config_file") + 1]).values():
        _flat.update(_table)
    _subset = toml.load(_args[_args.index("--dataset_config") + 1])["datasets"][0]["subsets"][0]
    _images = Path(_subset["image_dir"])
    if _flat.get("cache_text_encoder_outputs_to_disk"):
        for _img in sorted(_images.glob("*.jpg")):
            _npz = _img.with_name(_img.stem + "_te_outputs.npz")
            if not _npz.exists():
                _npz.write_bytes(b"cached")
    _index = Path(_flat["output_dir"]).parent / "sweep.json"
    if _index.exists():
        print("fake: sweep.json " + json.dumps({r["name"]: r["status"] for r in json.loads(_index.read_text())["runs"]}))
    _lr = _flat["learning_rate"]
    print(f"steps: 100%|##########| 4/4 [00:01<00:00, avr_loss={_lr * 1000:.6g}]", flush=True)
    if os.environ.get("FAKE_EVENTS"):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
        _writer = EventFileWriter(str(Path(_flat["logging_dir"]) / "20261126000000" / "network_train"))
        for _epoch in (1, 2):
            _value = Summary.Value(tag="loss/epoch_average", simple_value=_lr * 2000 + _epoch)
            _writer.add_event(Event(wall_time=1.0e9 + _epoch, step=_epoch, summary=Summary(value=[_value])))
        _writer.close()
    if repr(_lr) in os.environ.get("FAKE_FAIL_LR", "").split(","):
        sys.exit(5)
    if repr(_lr) in os.environ.get("FAKE_STOP_LR", "").split(","):
        sys.exit(130)
'''


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A dataset, a fake interpreter and sd-scripts folder, a model file; the working directory is tmp_path."""
    python = tmp_path / "fake_python"
    python.write_text(f"#!{sys.executable}\n{PRELUDE}\n{FAKE_PYTHON}", encoding="utf-8")
    python.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    # the runs' estimated outputs (tens of GB for a grid) must not depend on this machine's free disk: ample room,
    # unless a test reports less itself
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1 << 50))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    make_dataset(tmp_path / "ds")
    env = {"MEDSYNTH_PYTHON": str(python), "FAKE_GPUS": "NVIDIA H200:139.8", "FAKE_MODE": None,
           "FAKE_FAIL_LR": None, "FAKE_STOP_LR": None, "FAKE_EVENTS": None, "PATH": os.environ.get("PATH", "")}
    return {"root": tmp_path, "sd": write_fake_sd_scripts(tmp_path / "sd"), "env": env, "runs": tmp_path / "runs"}


def write_sweep(work, grid: str, name: str = "s1", extra: str = "") -> str:
    path = work["root"] / f"{name}.toml"
    path.write_text(f'name = "{name}"\ndataset = "ds"\n{extra}\n[fixed]\nmax_train_epochs = 2\nlr_scaling = "none"\n'
                    f'pretrained_model_name_or_path = "model.safetensors"\nruns_dir = "runs"\n{grid}', encoding="utf-8")
    return str(path)


def invoke(work, *args, **env):
    return CliRunner().invoke(sweep, [*args, "--sd-scripts", str(work["sd"])], env={**work["env"], **env},
                              catch_exceptions=False)


LRS = "[grid]\nlearning_rate = [1e-5, 2e-5, 3e-5]\n"
NAMES = ["lr1e-05", "lr2e-05", "lr3e-05"]


def record(work, name="s1"):
    return json.loads((work["runs"] / name / "sweep.json").read_text())


def test_dry_run_renders_and_validates_every_run_and_writes_nothing(work):
    result = invoke(work, write_sweep(work, LRS), "--dry-run", "--gpu-memory", "80")
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert f"s1/{name}" in result.output
    assert "3 runs, rendered and validated" in result.output
    assert not work["runs"].exists()


def test_one_invalid_combination_is_named_and_nothing_is_written(work):
    grid = '[grid]\noptimizer_type = ["AdamW8bit", "Adafactor"]\nlr_scheduler = ["cosine", "constant"]\n'
    result = invoke(work, write_sweep(work, grid))
    assert result.exit_code == 1
    assert "runs invalid, nothing ran: run 'Adafactor_cosine'" in result.output
    assert "lr_warmup_steps" in result.output  # the reason, from the pinned sd-scripts contract
    assert not work["runs"].exists()


def test_an_unknown_kohya_option_in_one_run_stops_the_sweep_before_it_starts(work):
    grid = "[[runs]]\nlearning_rate = 1e-5\n[[runs]]\nkohya.noise_ofset = 0.1\n"
    result = invoke(work, write_sweep(work, grid))
    assert result.exit_code == 1
    # refused as the sweep file is read, naming the file and the entry
    assert "s1.toml [[runs]] #2: 'kohya.noise_ofset' is not an option" in result.output
    assert "did you mean 'kohya.noise_offset'?" in result.output
    assert not work["runs"].exists()


def test_the_example_sweep_file_validates(work):
    example = TEMPLATES_DIR / "sweeps" / "lr-optimizer.toml"
    result = invoke(work, str(example), "--dry-run", "--set", f"dataset={json.dumps(str(work['root'] / 'ds'))}",
                    "--set", "runs_dir=runs")
    assert result.exit_code == 0, result.output
    assert "12 runs, rendered and validated" in result.output


@pytest.mark.skipif(lycoris_args.installed() is None, reason="lycoris-lora not installed: make setup-kohya")
def test_the_lora_against_locon_example_validates_locons_network_args(work, tmp_path):
    example = TEMPLATES_DIR / "sweeps" / "lora-vs-locon.toml"
    sets = ["--set", f"dataset={json.dumps(str(work['root'] / 'ds'))}", "--set", "runs_dir=runs"]
    result = invoke(work, str(example), "--dry-run", *sets)
    assert result.exit_code == 0, result.output
    assert "2 runs, rendered and validated" in result.output
    assert "lora-vs-locon/lora-lierla" in result.output and "lora-vs-locon/locon" in result.output
    # the same file with a misspelt LyCORIS argument, which lycoris.kohya would ignore without a word
    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text(example.read_text(encoding="utf-8").replace('"conv_dim=', '"conv_dims='), encoding="utf-8")
    result = invoke(work, str(misspelt), "--dry-run", *sets)
    assert result.exit_code == 1
    assert "run 'locon'" in result.output and "did you mean 'conv_dim'?" in result.output


def test_runs_go_one_after_another_and_the_summary_reports_each(work):
    result = invoke(work, write_sweep(work, LRS))
    assert result.exit_code == 0, result.output
    data = record(work)
    assert [r["name"] for r in data["runs"]] == NAMES
    for entry, lr in zip(data["runs"], (1e-5, 2e-5, 3e-5)):
        assert entry["status"] == "finished" and entry["exit_code"] == 0
        assert entry["final_loss"] == pytest.approx(lr * 1000)
        assert entry["params"] == {"learning_rate": lr}
        assert entry["path"] == entry["name"]  # relative to the sweep folder
        run = json.loads((work["runs"] / "s1" / entry["name"] / "run.json").read_text())
        assert run["status"] == "finished" and run["config"]["learning_rate"] == lr
    summary = result.output[result.output.index("summary"):]
    for entry in data["runs"]:
        assert entry["name"] in summary and f"{entry['final_loss']:.4g}" in summary
    # in order: each run saw the runs before it finished and the ones after it not started
    logs = [(work["runs"] / "s1" / n / "train.log").read_text() for n in NAMES]
    assert '"lr1e-05": "finished", "lr2e-05": "running", "lr3e-05": "created"' in logs[1]


def test_a_failed_run_does_not_stop_the_rest(work):
    result = invoke(work, write_sweep(work, LRS), FAKE_FAIL_LR=repr(2e-5))
    assert result.exit_code == 1
    statuses = {r["name"]: (r["status"], r["exit_code"]) for r in record(work)["runs"]}
    assert statuses == {"lr1e-05": ("finished", 0), "lr2e-05": ("failed", 5), "lr3e-05": ("finished", 0)}
    assert "failed" in result.output[result.output.index("summary"):]


def test_a_run_without_a_lora_file_is_failed_and_the_sweep_goes_on(work):
    result = invoke(work, write_sweep(work, LRS), FAKE_MODE="nolora")
    assert result.exit_code == 1
    assert [r["status"] for r in record(work)["runs"]] == ["failed"] * 3
    assert result.output.count("wrote no") == 3


def test_ctrl_c_in_one_run_stops_the_sweep(work):
    result = invoke(work, write_sweep(work, LRS), FAKE_STOP_LR=repr(2e-5))
    assert result.exit_code == 130
    assert [r["status"] for r in record(work)["runs"]] == ["finished", "interrupted", "skipped"]
    assert not (work["runs"] / "s1" / "lr3e-05" / "train.log").exists()


def test_ctrl_c_in_the_last_run_exits_130(work):
    result = invoke(work, write_sweep(work, LRS), FAKE_STOP_LR=repr(3e-5))
    assert [r["status"] for r in record(work)["runs"]] == ["finished", "finished", "interrupted"]
    assert result.exit_code == 130


def test_caches_are_computed_by_the_first_run_and_reused_by_the_others(work):
    result = invoke(work, write_sweep(work, LRS))
    assert result.exit_code == 0, result.output
    runs = record(work)["runs"]
    images = len(list((work["root"] / "ds" / "train" / "1_melanoma").glob("*.jpg")))
    assert [(r["cache"]["npz_before"], r["cache"]["npz_after"]) for r in runs] == \
        [(0, images), (images, images), (images, images)]
    assert len({r["cache"]["dir"] for r in runs}) == 1
    assert f"caches: {images} .npz files computed, {2 * images} reused by 2 of 3 runs" in result.output
    assert not list((work["root"] / "ds").rglob("*.npz"))  # the source dataset stays as it was built
    train = toml.loads((work["runs"] / "s1" / "lr1e-05" / "train.toml").read_text())
    assert train["training"]["cache_latents_to_disk"] is True
    assert train["extra"]["cache_text_encoder_outputs_to_disk"] is True


def test_runs_with_another_resolution_or_model_get_their_own_cache(work):
    (work["root"] / "other.safetensors").write_bytes(b"other weights")
    grid = '[grid]\nresolution = [512, 1024]\npretrained_model_name_or_path = ["model.safetensors", "other.safetensors"]\n'
    text = open(write_sweep(work, grid)).read().replace('pretrained_model_name_or_path = "model.safetensors"\n', "")
    (work["root"] / "s1.toml").write_text(text)
    result = invoke(work, str(work["root"] / "s1.toml"))
    assert result.exit_code == 0, result.output
    runs = record(work)["runs"]
    assert len({r["cache"]["dir"] for r in runs}) == 4
    assert all(r["cache"]["npz_before"] == 0 for r in runs)


def test_a_sweep_that_turns_disk_caches_off_trains_on_the_dataset_itself(work):
    text = open(write_sweep(work, LRS)).read().replace("[fixed]\n", "[fixed]\ncache_latents_to_disk = false\n")
    (work["root"] / "s1.toml").write_text(text + "[fixed.kohya]\ncache_text_encoder_outputs_to_disk = false\n")
    result = invoke(work, str(work["root"] / "s1.toml"))
    assert result.exit_code == 0, result.output
    dataset = toml.loads((work["runs"] / "s1" / "lr1e-05" / "dataset.toml").read_text())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == str((work["root"] / "ds" / "train" / "1_melanoma"))
    assert all(r["cache"]["dir"] is None for r in record(work)["runs"])


def test_final_loss_comes_from_the_tensorboard_events_when_there_are_some(work):
    pytest.importorskip("tensorboard", reason="tensorboard (the real event writer) is not installed")
    result = invoke(work, write_sweep(work, LRS), FAKE_EVENTS="1")
    assert result.exit_code == 0, result.output
    losses = [r["final_loss"] for r in record(work)["runs"]]
    assert losses == pytest.approx([lr * 2000 + 2 for lr in (1e-5, 2e-5, 3e-5)])  # the last epoch's average


def test_final_loss_falls_back_to_the_last_average_in_train_log(tmp_path):
    (tmp_path / "train.log").write_bytes(b"steps: 50%|#   | 1/2 [avr_loss=0.9]\rsteps: 100%|##| 2/2 [avr_loss=0.123]\n")
    assert final_loss(tmp_path) == pytest.approx(0.123)
    assert final_loss(tmp_path / "missing") is None


def test_an_existing_sweep_is_refused_before_anything_is_written(work):
    assert invoke(work, write_sweep(work, LRS)).exit_code == 0
    before = (work["runs"] / "s1" / "sweep.json").read_text()
    result = invoke(work, str(work["root"] / "s1.toml"))
    assert result.exit_code == 1 and "already exists (3 of 3 run folders" in result.output
    assert (work["runs"] / "s1" / "sweep.json").read_text() == before


def test_set_applies_to_every_run_over_the_sweep_file(work):
    result = invoke(work, write_sweep(work, LRS), "--dry-run", "--set", "max_train_epochs=7", "--set",
                    "train_batch_size=2")
    assert result.exit_code == 0, result.output
    steps = [line.split()[3] for line in result.output.splitlines() if line.startswith("lr")]
    assert steps == [str(3 * 7)] * 3  # 6 images × 1 repeat ÷ batch 2 = 3 steps per epoch


def test_set_of_a_key_the_sweep_varies_is_refused(work):
    result = invoke(work, write_sweep(work, LRS), "--dry-run", "--set", "learning_rate=5e-5")
    assert result.exit_code == 1
    assert "--set learning_rate:" in result.output and "varies it across its runs" in result.output


def test_no_gpu_is_a_clear_error_before_anything_is_written(work):
    result = invoke(work, write_sweep(work, LRS), FAKE_GPUS="")
    assert result.exit_code == 1 and "no CUDA GPU visible" in result.output
    assert not work["runs"].exists()


def test_runs_that_do_not_fit_on_the_disk_together_are_refused_before_any_is_written(work, monkeypatch):
    from orchestrator.sweep import run as sweep_run
    from orchestrator.train.settings import load_settings
    from orchestrator.train.preflight import estimate_disk_bytes

    one = estimate_disk_bytes(load_settings(preset_name="default", sets=["max_train_epochs=2"], cwd=work["root"]).config)
    real = sweep_run.shutil.disk_usage
    # the disk cannot be filled here: report room for each run alone, not for all three
    monkeypatch.setattr(sweep_run.shutil, "disk_usage", lambda path: real(path)._replace(free=int(2.5 * one)))
    result = invoke(work, write_sweep(work, LRS))
    assert result.exit_code == 1 and "the 3 runs may write" in result.output
    assert not any((work["runs"] / "s1" / name).exists() for name in NAMES)


def test_too_few_gpus_names_the_sweeps_own_flag(work):
    result = invoke(work, write_sweep(work, LRS), "--gpus", "2")  # one GPU visible
    assert result.exit_code == 1 and "error: --gpus 2 needs as many GPUs; 1 available" in result.output
    assert "num_processes" not in result.output and "--num-processes" not in result.output
