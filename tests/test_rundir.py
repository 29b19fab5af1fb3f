"""Planning a run (rendered files parsed back and compared with the config) and writing runs/<name>/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import toml

from orchestrator.train.config import config_as_dict
from orchestrator.train.settings import load_settings, preset_names, resolve_batch
from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.prompts import parse_sample_prompts
from orchestrator.dataset.record import read_dataset
from orchestrator.runs.folder import RENDERED, lora_files, newest_resumable_run, newest_state, write_run_dir
from orchestrator.train.plan import plan_run, validate_plan
from train_helpers import make_dataset


def make_plan(tmp_path: Path, *sets: str, preset: str = "default", gpu_gib: float | None = None,
              dataset: Path | None = None, name: str = "r1", num_processes: int = 1):
    ds = dataset or make_dataset(tmp_path / "ds")
    s = load_settings(preset_name=preset, sets=[f"runs_dir={json.dumps(str(tmp_path / 'runs'))}", *sets],
                      options={"dataset": str(ds)}, cwd=tmp_path)
    cfg, batch = resolve_batch(s.config, s.preset, set(s.user_keys), gpu_gib)
    return plan_run(cfg, preset=s.preset, layers=s.layers, batch=batch, dataset=read_dataset(ds), name=name,
                    num_processes=num_processes)


def flat(text: str) -> dict:
    """sd-scripts' view of a training TOML: all tables merged into one namespace."""
    out: dict = {}
    for value in toml.loads(text).values():
        out.update(value)
    return out


@pytest.mark.parametrize("preset", ["default", "seed-blog", "low-vram"])
def test_train_toml_parses_back_to_the_config(tmp_path, preset):
    plan = make_plan(tmp_path, preset=preset, gpu_gib=80.0)
    train, cfg = flat(plan.files["train.toml"]), plan.config
    for key in ("network_module", "network_dim", "network_alpha", "optimizer_type", "lr_scheduler",
                "max_train_epochs", "mixed_precision", "gradient_checkpointing", "cache_latents",
                "cache_text_encoder_outputs", "network_train_unet_only", "save_every_n_epochs", "sample_sampler",
                "seed", "save_model_as", "no_half_vae", "save_precision", "sdpa", "train_batch_size"):
        assert train[key] == getattr(cfg, key) and type(train[key]) is type(getattr(cfg, key)), key
    assert train["resolution"] == f"{plan.dataset.resolution},{plan.dataset.resolution}"
    assert train["learning_rate"] == plan.schedule.learning_rate
    assert train["lr_warmup_steps"] == plan.schedule.warmup_steps and type(train["lr_warmup_steps"]) is int
    assert train["output_dir"] == str(plan.run_dir) and train["logging_dir"] == str(plan.run_dir / "logs")
    assert train["sample_prompts"] == str(plan.run_dir / "sample_prompts.txt")
    assert train["sample_every_n_epochs"] == (cfg.sample_every_n_epochs or cfg.save_every_n_epochs)
    assert "max_train_steps" not in train


def test_dataset_toml_parses_back_to_the_dataset(tmp_path):
    plan = make_plan(tmp_path, "train_batch_size=3", "flip_aug=true")
    ds = toml.loads(plan.files["dataset.toml"])
    (dataset,) = ds["datasets"]
    (subset,) = dataset["subsets"]
    assert dataset["resolution"] == plan.dataset.resolution and type(dataset["resolution"]) is int
    assert dataset["batch_size"] == 3
    assert subset["image_dir"] == str(plan.dataset.image_dir) and subset["num_repeats"] == plan.dataset.repeats
    assert subset["flip_aug"] is True and ds["general"]["caption_extension"] == plan.dataset.caption_extension


def test_unset_optional_keys_are_left_out(tmp_path):
    train = flat(make_plan(tmp_path).files["train.toml"])
    for key in ("vae", "tokenizer_cache_dir", "network_args", "optimizer_args", "network_dropout",
                "torch_compile", "dynamo_backend", "save_last_n_epochs"):
        assert key not in train


def test_speed_knobs_render_only_when_set(tmp_path):
    train = flat(make_plan(tmp_path, "torch_compile=true", "dynamo_backend=inductor", "max_data_loader_n_workers=4",
                           'optimizer_args=["weight_decay=0.01"]').files["train.toml"])
    assert train["torch_compile"] is True and train["dynamo_backend"] == "inductor"
    assert train["max_data_loader_n_workers"] == 4 and train["optimizer_args"] == ["weight_decay=0.01"]


def test_kohya_pass_through_lands_in_the_extra_table(tmp_path):
    doc = toml.loads(make_plan(tmp_path, "kohya.noise_offset=0.05").files["train.toml"])
    assert doc["extra"] == {"noise_offset": 0.05}


def test_hostile_paths_and_prompts_render_safely(tmp_path):
    odd = tmp_path / "it's a \"dir\""
    hostile = ['he said "x" --n injected', "back\\slash '''", "two\nlines --d 3"]
    sets = [f"sample_prompts={json.dumps(hostile)}", f"negative_prompt={json.dumps('bad --w 9')}",
            f"tokenizer_cache_dir={json.dumps(str(odd))}"]
    plan = make_plan(tmp_path, *sets)
    assert flat(plan.files["train.toml"])["tokenizer_cache_dir"] == str(odd.resolve())
    parsed = parse_sample_prompts(plan.files["sample_prompts.txt"], source="sample_prompts.txt")
    assert len(parsed) == len(hostile)
    for prompt, text in zip(parsed, hostile):
        assert prompt["width"] == 1024 and prompt["height"] == 1024 and prompt["sample_steps"] == 28
        assert prompt["prompt"].split()[0] == text.split()[0]
        assert "bad" in prompt["negative_prompt"]
    assert [p["seed"] for p in parsed] == [p.seed for p in plan.prompts]


def test_hostile_caption_from_the_manifest_renders_safely(tmp_path):
    ds = make_dataset(tmp_path / "ds", [("female", "torso", "50", False)],
                      captions=['photo "x" \\ \'\'\' --n evil --s 1'])
    plan = make_plan(tmp_path, dataset=ds)
    (prompt,) = parse_sample_prompts(plan.files["sample_prompts.txt"], source="sample_prompts.txt")
    assert prompt["sample_steps"] == plan.config.sample_steps and "evil" in prompt["prompt"]


@pytest.mark.parametrize("preset", sorted(preset_names()))
def test_every_preset_passes_the_contract_validation(tmp_path, preset):
    ds = make_dataset(tmp_path / "ds")
    for gib in (None, 16.0, 24.0, 48.0, 80.0, 141.0):
        plan = make_plan(tmp_path, preset=preset, gpu_gib=gib, dataset=ds)
        assert flat(plan.files["train.toml"])["train_batch_size"] == plan.batch.train_batch_size  # this GPU's tier
        try:
            validate_plan(plan)
        except MedsynthError as exc:
            pytest.fail(f"{preset} at {gib} GiB: {exc}")


def test_misspelled_pass_through_option_is_refused_by_validation(tmp_path):
    with pytest.raises(MedsynthError, match="noise_ofset"):
        validate_plan(make_plan(tmp_path, "kohya.noise_ofset=0.1"))


def test_validation_names_the_template_not_a_run_folder_that_is_not_written(tmp_path):
    from orchestrator.common.paths import TEMPLATES_DIR

    plan = make_plan(tmp_path, "kohya.noise_offset=true")
    with pytest.raises(MedsynthError) as caught:
        validate_plan(plan)
    message = str(caught.value)
    assert message.startswith(f"train.toml (rendered from {TEMPLATES_DIR / 'train.toml.j2'}, not written): "
                              f"[extra] noise_offset: ")
    assert str(plan.run_dir) not in message and not plan.run_dir.exists()


def test_dataset_without_dataset_json_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="dataset build"):
        read_dataset(tmp_path)


def test_dataset_with_missing_images_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    next((ds / "train" / "1_melanoma").glob("*.jpg")).unlink()
    with pytest.raises(MedsynthError, match="rebuild"):
        read_dataset(ds)


def test_dataset_with_edited_manifest_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    with (ds / "manifest.csv").open("a", encoding="utf-8") as fh:
        fh.write("\n")
    with pytest.raises(MedsynthError, match="changed since"):
        read_dataset(ds)


def test_empty_image_folder_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds", [])
    with pytest.raises(MedsynthError, match="no images"):
        read_dataset(ds)


def test_a_dataset_built_without_resizing_trains_at_sdxls_resolution_unless_set(tmp_path):
    from click.testing import CliRunner

    from orchestrator.cli.main import main
    from orchestrator.common.paths import DEMO_DIR

    ds = tmp_path / "native"
    built = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                      str(DEMO_DIR / "images"), "--out", str(ds), "--no-resize", "--workers", "1",
                                      "--quiet"])
    assert built.exit_code == 0, built.output
    assert json.loads((ds / "dataset.json").read_text())["resolution"] is None  # as `dataset build` records it
    assert read_dataset(ds).resolution is None
    plan = make_plan(tmp_path, dataset=ds)
    assert flat(plan.files["train.toml"])["resolution"] == "1024,1024"
    assert toml.loads(plan.files["dataset.toml"])["datasets"][0]["resolution"] == 1024
    validate_plan(plan)
    assert flat(make_plan(tmp_path, "resolution=768", dataset=ds).files["train.toml"])["resolution"] == "768,768"


def test_run_dir_is_written_whole_and_never_over_an_existing_one(tmp_path):
    plan = make_plan(tmp_path)
    record = {"status": "created", "config": config_as_dict(plan.config)}
    write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record)
    assert sorted(p.name for p in plan.run_dir.iterdir()) == sorted([*RENDERED, "command.sh", "run.json"])
    for name in RENDERED:
        assert (plan.run_dir / name).read_text(encoding="utf-8") == plan.files[name]
    assert json.loads((plan.run_dir / "run.json").read_text())["config"]["network_dim"] == plan.config.network_dim
    assert os.access(plan.run_dir / "command.sh", os.X_OK)
    with pytest.raises(MedsynthError, match="already exists"):
        write_run_dir(plan.run_dir, plan.files, command_sh="", record=record)
    assert [p.name for p in plan.run_dir.parent.iterdir()] == [plan.run_dir.name]  # no temp leftovers


def test_run_dir_gets_the_usual_permissions_not_the_temp_folders_private_ones(tmp_path):
    # the folder is renamed from a temporary one (mode 0700); others on a shared file system must read it
    plan = make_plan(tmp_path)
    old = os.umask(0o022)
    try:
        write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record={"status": "created"})
    finally:
        os.umask(old)
    assert plan.run_dir.stat().st_mode & 0o777 == 0o755


def test_bad_run_name_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="run name"):
        make_plan(tmp_path, name="../escape")


def make_state(run: Path, name: str, step: int | None, mtime: float) -> Path:
    state = run / name
    state.mkdir(parents=True)
    if step is not None:
        (state / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": step}))
    os.utime(state, (mtime, mtime))
    return state


def test_newest_state_is_the_highest_saved_step(tmp_path):
    now = time.time()
    make_state(tmp_path, "lora-000002-state", 20, now - 100)
    best = make_state(tmp_path, "lora-000004-state", 40, now - 200)
    make_state(tmp_path, "lora-000001-state", 10, now)
    assert newest_state(tmp_path) == best


def test_newest_state_falls_back_to_the_newest_folder(tmp_path):
    now = time.time()
    make_state(tmp_path, "a-state", None, now - 50)
    b = make_state(tmp_path, "b-state", None, now)
    assert newest_state(tmp_path) == b
    assert newest_state(tmp_path / "a-state") is None


def test_newest_resumable_run_skips_runs_without_state(tmp_path):
    for name in ("old", "new-no-state"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
    make_state(tmp_path / "old", "x-000001-state", 1, time.time())
    assert newest_resumable_run(tmp_path) == tmp_path / "old"


def test_lora_files_are_the_epoch_and_final_saves_only(tmp_path):
    for name in ("m_lora-000001.safetensors", "m_lora.safetensors", "m_lora-step00000100.safetensors",
                 "other.safetensors", "m_lora-000001.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "m_lora-000001-state").mkdir()
    assert [p.name for p in lora_files(tmp_path, "m_lora")] == [
        "m_lora-000001.safetensors", "m_lora-step00000100.safetensors", "m_lora.safetensors"]


@pytest.mark.kohya
def test_sd_scripts_own_parsers_accept_every_preset_and_read_what_was_meant(tmp_path, sd_scripts_dir):
    from orchestrator.kohya.selfcheck import run_sd_scripts_probe

    ds = make_dataset(tmp_path / "ds", captions=None)
    hostile = ['photo "x" \\ --n evil', "two\nlines --s 1"]
    cases, plans = [], []
    for i, (preset, sets) in enumerate([("default", ()), ("seed-blog", ()), ("low-vram", ()),
                                        ("default", (f"sample_prompts={json.dumps(hostile)}",))]):
        plan = make_plan(tmp_path, *sets, preset=preset, gpu_gib=80.0, dataset=ds, name=f"r{i}")
        folder = tmp_path / f"files{i}"
        folder.mkdir()
        for name in RENDERED:
            (folder / name).write_text(plan.files[name], encoding="utf-8")
        cases.append({"train": folder / "train.toml", "dataset": folder / "dataset.toml",
                      "prompts": folder / "sample_prompts.txt"})
        plans.append(plan)
    results = run_sd_scripts_probe(cases, sd_scripts_dir)
    for plan, result in zip(plans, results):
        assert result["ok"], result
        args = result["args"]
        assert args["learning_rate"] == {"value": plan.schedule.learning_rate, "type": "float"}
        assert args["lr_warmup_steps"] == {"value": plan.schedule.warmup_steps, "type": "int"}
        assert args["max_train_epochs"]["value"] == plan.config.max_train_epochs
        assert args["network_alpha"]["value"] == plan.config.network_alpha
        assert args["mixed_precision"]["value"] == plan.config.mixed_precision
        (dataset,) = result["datasets"]
        assert dataset["params"]["batch_size"] == plan.schedule.batch_size
        assert dataset["subsets"][0]["image_dir"] == str(plan.dataset.image_dir)
        assert [p["seed"] for p in result["prompts"]] == [p.seed for p in plan.prompts]
        assert all(p["sample_steps"] == plan.config.sample_steps and p["width"] == plan.config.sample_width
                   for p in result["prompts"])
    assert [p["prompt"].split()[0] for p in results[-1]["prompts"]] == [h.split()[0] for h in hostile]


def test_newest_resumable_run_skips_finished_runs(tmp_path):
    for name, status in (("stopped", "interrupted"), ("done", "finished")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({"status": status}))
        make_state(tmp_path / name, "x-000001-state", 1, time.time())
    os.utime(tmp_path / "done" / "run.json", (time.time() + 10, time.time() + 10))
    assert newest_resumable_run(tmp_path) == tmp_path / "stopped"
