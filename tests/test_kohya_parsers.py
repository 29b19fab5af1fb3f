"""sd-scripts' own parsers on files medsynth validates: what medsynth accepts, sd-scripts accepts with the right
values and types; what medsynth refuses in the dataset TOML, sd-scripts refuses too; where sd-scripts stays
silent (training TOML), medsynth is the one that refuses. All cases run in one child process (sd-scripts'
import takes seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import toml
from kohya_samples import DATASET_TOML, PROMPTS, TRAIN_TOML, dataset, edited, train

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.selfcheck import check_with_sd_scripts, run_sd_scripts_probe
from orchestrator.kohya.validate import (
    check_combinations, parse_sample_prompts, validate_dataset_config, validate_train_config,
)

pytestmark = pytest.mark.kohya

# dataset.toml edits medsynth refuses; sd-scripts' sanitizer must refuse each of them too
DATASET_REJECTIONS = {
    "unknown_key": ("datasets.0.subsets.0.num_repeat", 2),
    "float_repeats": ("datasets.0.subsets.0.num_repeats", 1.0),
    "string_resolution": ("datasets.0.resolution", "1024"),
    "one_item_resolution": ("datasets.0.resolution", [1024]),
    "int_for_float": ("general.validation_split", 0),
    "int_pair_for_float_pair": ("general.face_crop_aug_range", [1, 2]),
    "image_dir_in_general": ("general.image_dir", "x"),
    "batch_size_in_subset": ("datasets.0.subsets.0.batch_size", 2),
    "subsets_not_an_array": ("datasets.0.subsets", {"image_dir": "x"}),
    "missing_image_dir": ("datasets.0.subsets.0.image_dir", None),
    "unknown_top_level": ("dataset", [{"resolution": 1024}]),
}
# dataset.toml edits (on a folder of real images) that abort sd-scripts' dataset checks with train.toml's caching
COMBINATION_REJECTIONS = {
    "shuffle_with_cached_text_encoder": ("general.shuffle_caption", True),
    "caption_dropout_with_cached_text_encoder": ("datasets.0.subsets.0.caption_dropout_rate", 0.1),
    "token_warmup_with_cached_text_encoder": ("datasets.0.subsets.0.token_warmup_step", 3),
    "random_crop_with_cached_latents": ("datasets.0.subsets.0.random_crop", True),
    "color_aug_with_cached_latents": ("general.color_aug", True),
    "bucket_steps_not_multiple_of_32": ("datasets.0.bucket_reso_steps", 48),
}
# train.toml edits that make sd-scripts fail at startup (medsynth must refuse them before that)
TRAIN_REJECTIONS = {
    "int_for_sanitized_float": ("training.validation_split", 0),
    "int_resolution": ("training.resolution", 1024),
    "constant_scheduler_with_warmup": ("optimizer.lr_scheduler", "constant"),
    "string_batch_size": ("training.train_batch_size", "2"),
}
# train.toml edits sd-scripts accepts without a word although the run would not do what the file says
SILENT_IN_SD_SCRIPTS = {
    "misspelt_key": ("training.max_train_epoch", 10),
    "unknown_sampler": ("sample.sample_sampler", "dpm++_2m_karras"),
    "bad_mixed_precision": ("training.mixed_precision", "bf17"),
    "warmup_as_ratio": ("optimizer.lr_warmup_steps", 100.0),
}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(toml.dumps(data), encoding="utf-8")
    return path


def _image_folder(folder: Path, *, count: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        assert cv2.imwrite(str(folder / f"ISIC_{i:07d}.png"), rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        (folder / f"ISIC_{i:07d}.caption").write_text("photo of skin, me1anoma\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def probe(sd_scripts_dir: Path, tmp_path_factory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("kohya")
    (folder / "train.toml").write_text(TRAIN_TOML, encoding="utf-8")
    (folder / "dataset.toml").write_text(DATASET_TOML, encoding="utf-8")
    (folder / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    cases = {"valid": {"train": folder / "train.toml", "dataset": folder / "dataset.toml",
                       "prompts": folder / "prompts.txt"}}
    images = _image_folder(folder / "images" / "1_melanoma", count=3)
    with_images = edited(dataset(), "datasets.0.subsets.0.image_dir", str(images))
    cases["images"] = {"train": folder / "train.toml", "dataset": _write(folder / "d_images.toml", with_images)}
    cases["all_reg"] = {"train": folder / "train.toml", "dataset": _write(
        folder / "d_all_reg.toml", edited(with_images, "datasets.0.subsets.0.is_reg", True))}
    empty = folder / "empty" / "1_melanoma"
    empty.mkdir(parents=True)
    cases["no_images"] = {"train": folder / "train.toml", "dataset": _write(
        folder / "d_empty.toml", edited(dataset(), "datasets.0.subsets.0.image_dir", str(empty)))}
    for name, (path, value) in COMBINATION_REJECTIONS.items():
        cases[f"combination:{name}"] = {"train": folder / "train.toml",
                                        "dataset": _write(folder / f"c_{name}.toml", edited(with_images, path, value))}
    for name, (path, value) in DATASET_REJECTIONS.items():
        cases[f"dataset:{name}"] = {"train": folder / "train.toml",
                                    "dataset": _write(folder / f"d_{name}.toml", edited(dataset(), path, value))}
    for name, (path, value) in {**TRAIN_REJECTIONS, **SILENT_IN_SD_SCRIPTS}.items():
        cases[f"train:{name}"] = {"train": _write(folder / f"t_{name}.toml", edited(train(), path, value)),
                                  "dataset": folder / "dataset.toml"}
    for gib in TIER_GPUS:  # the default preset as rendered for a GPU of that size, tier settings included
        plan = _default_preset_plan(folder / f"tier{gib}", gib)
        cases[f"tier:{gib}"] = {"train": _text(folder / f"t_tier{gib}.toml", plan.files["train.toml"]),
                                "dataset": _text(folder / f"d_tier{gib}.toml", plan.files["dataset.toml"])}
    for name, plan in _class_plans(folder).items():   # reg images; two classes (tests/class_helpers.py)
        cases[name] = {"train": _text(folder / f"t_{name}.toml", plan.files["train.toml"]),
                       "dataset": _text(folder / f"d_{name}.toml", plan.files["dataset.toml"])}
        cases[f"{name}:plan"] = plan
    results = run_sd_scripts_probe([c for n, c in cases.items() if not n.endswith(':plan')], sd_scripts_dir)
    results = dict(zip([n for n in cases if not n.endswith(":plan")], results))
    results.update({n: c for n, c in cases.items() if n.endswith(":plan")})
    return {**results, "_folder": folder}


TIER_GPUS = (139.8, 15.0)  # an H200, a 16 GB card


def _class_plans(root: Path) -> dict[str, Any]:
    from class_helpers import build, plan_for, two_classes

    return {"reg": plan_for(build(root / "reg", repeats=2, reg_diagnosis="nevus"), root / "reg"),
            "classes": plan_for(two_classes(root / "classes"), root / "classes")}


def _text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _default_preset_plan(root: Path, gib: float):
    from train_helpers import make_dataset

    from orchestrator.train.settings import load_settings
    from orchestrator.train.plan import prepare
    from orchestrator.train.preflight import Gpu

    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(make_dataset(root / "ds")),
                                      "pretrained_model_name_or_path": str(root / "sdxl.safetensors")},
                             sets=[f"runs_dir={str(root / 'runs')!r}"])
    return prepare(settings, gpus=[Gpu("GPU", gib)], run_name="tier")


def test_sd_scripts_reads_valid_training_toml_with_right_values_and_types(probe):
    valid = probe["valid"]
    assert valid["ok"], valid
    args = valid["args"]
    expected = train()
    flat = {k: v for section in expected.values() for k, v in section.items()}
    for key in ("learning_rate", "network_dim", "max_train_epochs", "lr_warmup_steps", "network_train_unet_only",
                "optimizer_type", "sample_sampler", "mixed_precision", "cache_text_encoder_outputs"):
        assert args[key]["value"] == flat[key], key
        assert args[key]["type"] == type(flat[key]).__name__, key
    assert args["resolution"]["value"] == [1024, 1024]  # sd-scripts' own "W,H" conversion
    assert args["max_train_steps"]["value"] == 1600  # the default medsynth's max_train_epochs overrides


def test_sd_scripts_reads_the_default_presets_tier_settings(probe):
    large, small = (probe[f"tier:{gib}"] for gib in TIER_GPUS)
    assert large["ok"] and small["ok"], (large, small)
    values = {name: {k: v["value"] for k, v in case["args"].items()} for name, case in (("large", large),
                                                                                       ("small", small))}
    assert (values["large"]["train_batch_size"], values["large"]["optimizer_type"]) == (12, "AdamW")
    assert values["large"]["optimizer_args"] == ["fused=True"]
    assert (values["large"]["vae_batch_size"], values["large"]["highvram"]) == (8, True)
    assert (values["small"]["train_batch_size"], values["small"]["optimizer_type"]) == (1, "AdamW8bit")
    assert values["small"]["gradient_checkpointing"] is True and values["small"]["highvram"] is False


def test_sd_scripts_dataset_blueprint_matches_dataset_toml(probe):
    (ds,) = probe["valid"]["datasets"]
    expected = dataset()["datasets"][0]
    assert ds["params"]["resolution"] == [expected["resolution"]] * 2
    assert ds["params"]["bucket_reso_steps"] == expected["bucket_reso_steps"]
    (subset,) = ds["subsets"]
    assert subset["image_dir"] == expected["subsets"][0]["image_dir"]
    assert subset["num_repeats"] == expected["subsets"][0]["num_repeats"]
    assert subset["caption_extension"] == dataset()["general"]["caption_extension"]


def test_medsynth_accepts_what_sd_scripts_accepts(probe):
    validate_train_config(train(), source="train.toml")
    validate_dataset_config(dataset(), source="dataset.toml")
    check_combinations(train(), dataset(), source="")
    assert probe["valid"]["ok"]


def test_prompt_parsing_matches_sd_scripts(probe):
    theirs = [{k: v for k, v in p.items() if k != "enum"} for p in probe["valid"]["prompts"]]
    assert parse_sample_prompts(PROMPTS, source="prompts.txt") == theirs


@pytest.mark.parametrize("name", DATASET_REJECTIONS)
def test_dataset_toml_refused_by_medsynth_is_refused_by_sd_scripts(probe, name):
    path, value = DATASET_REJECTIONS[name]
    with pytest.raises(MedsynthError):
        validate_dataset_config(edited(dataset(), path, value), source="dataset.toml")
    result = probe[f"dataset:{name}"]
    assert not result["ok"] and result["stage"] == "dataset_config", result


@pytest.mark.parametrize("name", TRAIN_REJECTIONS)
def test_training_toml_that_fails_sd_scripts_is_refused_by_medsynth(probe, name):
    path, value = TRAIN_REJECTIONS[name]
    with pytest.raises(MedsynthError):
        validate_train_config(edited(train(), path, value), source="train.toml")
    assert not probe[f"train:{name}"]["ok"], probe[f"train:{name}"]


@pytest.mark.parametrize("name", SILENT_IN_SD_SCRIPTS)
def test_training_toml_sd_scripts_accepts_silently_is_refused_by_medsynth(probe, name):
    path, value = SILENT_IN_SD_SCRIPTS[name]
    assert probe[f"train:{name}"]["ok"], probe[f"train:{name}"]
    with pytest.raises(MedsynthError):
        validate_train_config(edited(train(), path, value), source="train.toml")


def test_check_with_sd_scripts_reports_sd_scripts_message(probe, sd_scripts_dir):
    folder = probe["_folder"]
    with pytest.raises(MedsynthError, match=r"num_repeats") as info:
        check_with_sd_scripts(folder / "train.toml", folder / "d_float_repeats.toml", sd_scripts_dir)
    assert "\n" not in str(info.value) and "dataset_config" in str(info.value)


def test_sd_scripts_builds_the_datasets_medsynth_accepts(probe):
    result = probe["images"]
    assert result["ok"], result
    repeats = dataset()["datasets"][0]["subsets"][0]["num_repeats"]
    assert result["dataset_group"]["images"] == [3 * repeats]


def test_sd_scripts_finds_no_data_in_an_empty_image_dir(probe):
    result = probe["no_images"]
    assert not result["ok"] and "No data found" in result["error"]


@pytest.mark.parametrize("name", COMBINATION_REJECTIONS)
def test_cross_file_combination_refused_by_medsynth_aborts_sd_scripts(probe, name):
    path, value = COMBINATION_REJECTIONS[name]
    with pytest.raises(MedsynthError):
        check_combinations(train(), edited(dataset(), path, value), source="runs/x")
    result = probe[f"combination:{name}"]
    assert not result["ok"] and result["stage"] == "dataset_group", result


def test_sd_scripts_reads_the_reg_subset_and_counts_the_plans_steps(probe):
    result, plan = probe["reg"], probe["reg:plan"]
    assert result["ok"], result
    subsets = result["datasets"][0]["subsets"]
    assert [(s["num_repeats"], s["is_reg"], s["class_tokens"]) for s in subsets] == [(2, False, "me1anoma"),
                                                                                        (1, True, "nevus")]
    # train_util.py:2163-2182: the 20 reg images are repeated to the 40 training images; batch 1: one step each
    assert result["dataset_group"]["images"] == [40] and result["dataset_group"]["reg_images"] == [20]
    assert result["dataset_group"]["batches"] == plan.schedule.steps_per_epoch == 80


def test_sd_scripts_reads_one_subset_per_class_with_its_repeats_and_trigger(probe):
    result, plan = probe["classes"], probe["classes:plan"]
    assert result["ok"], result
    subsets = result["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s["num_repeats"], s["class_tokens"], s["is_reg"]) for s in subsets] == [
        ("4_melanoma", 4, "me1anoma", False), ("1_nevus", 1, "n3vus", False)]
    assert result["dataset_group"]["images"] == [5 * 4 + 20]
    assert result["dataset_group"]["batches"] == plan.schedule.steps_per_epoch == 40


def test_a_dataset_of_reg_subsets_only_is_refused_as_sd_scripts_finds_no_data(probe):
    only_reg = edited(dataset(), "datasets.0.subsets.0.is_reg", True)
    with pytest.raises(MedsynthError, match="every subset is is_reg = true"):
        validate_dataset_config(only_reg, source="dataset.toml")
    result = probe["all_reg"]
    assert not result["ok"] and "No data found" in result["error"], result
