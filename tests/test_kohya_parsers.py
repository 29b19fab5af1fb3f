"""sd-scripts' own parsers on files medsynth validates: what medsynth accepts, sd-scripts accepts with the right
values and types; what medsynth refuses in the dataset TOML, sd-scripts refuses too; where sd-scripts stays
silent (training TOML), medsynth is the one that refuses. All cases run in one child process (sd-scripts'
import takes seconds)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import toml
from kohya_samples import DATASET_TOML, PROMPTS, TRAIN_TOML, dataset, edited, train
from mask_helpers import build_demo

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya import lycoris_args as lycoris
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
    "zero_validation_interval": ("training.validate_every_n_epochs", 0),  # a modulo by zero at the first epoch end
    "misspelt_key": ("training.max_train_epoch", 10),
    "unknown_sampler": ("sample.sample_sampler", "dpm++_2m_karras"),
    "bad_mixed_precision": ("training.mixed_precision", "bf17"),
    "warmup_as_ratio": ("optimizer.lr_warmup_steps", 100.0),
}

# LyCORIS (network_module lycoris.kohya) at rank 8, alpha 4: network_args medsynth accepts, that lycoris silently
# ignores or misreads (medsynth refuses), and that abort the network's construction (medsynth refuses)
LOCON = ["algo=locon", "conv_dim=4", "conv_alpha=2"]
LYCORIS_CASES = {
    "locon": LOCON,
    "misspelt_arg": ["algo=locon", "conv_dims=4", "conv_alpha=2"],
    "string_false": ["algo=lokr", "decompose_both=false"],
    "unknown_algo": ["algo=locom"],
}
needs_lycoris = pytest.mark.skipif(lycoris.installed() is None, reason="lycoris-lora not installed: make setup-kohya")


def _lycoris_train(args: list[str]) -> dict[str, Any]:
    cfg = edited(edited(train(), "network.network_module", lycoris.MODULE), "network.network_args", args)
    return edited(edited(cfg, "network.network_dim", 8), "network.network_alpha", 4.0)


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
    plans = {}
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
    if lycoris.installed() is not None:
        for name, args in LYCORIS_CASES.items():
            cases[f"lycoris:{name}"] = {"train": _write(folder / f"t_lycoris_{name}.toml", _lycoris_train(args)),
                                        "dataset": folder / "dataset.toml"}
        plan = _default_preset_plan(folder / "locon", TIER_GPUS[0], sets=LOCON_SETS)
        cases["lycoris:rendered"] = {"train": _text(folder / "t_locon.toml", plan.files["train.toml"]),
                                     "dataset": _text(folder / "d_locon.toml", plan.files["dataset.toml"])}
    for split in VALIDATION_SPLITS:  # the validation split as rendered and counted by the dry run
        plan = _validation_plan(folder / f"val{split}", split)
        cases[f"validation:{split}"] = {"train": _text(folder / f"t_val{split}.toml", plan.files["train.toml"]),
                                        "dataset": _text(folder / f"d_val{split}.toml", plan.files["dataset.toml"])}
        plans[split] = plan
    plan = _validation_plan(folder / "by_patient", 0.34, patients=("p1", "p1", "p2", "p2", "p3", "p3"))
    _write_run(plan)   # the links sd-scripts reads
    cases["validation:by_patient"] = {"train": plan.run_dir / "train.toml", "dataset": plan.run_dir / "dataset.toml"}
    plans["by_patient"] = plan
    cases["held_out_dataset"] = {"train": folder / "train.toml", "dataset": _write(folder / "d_held_out.toml", _held_out(
        _image_folder(folder / "trained" / "3_melanoma", count=5), _image_folder(folder / "held_out" / "3_melanoma", count=3)))}
    cases["validation_split_above_one"] = {"train": folder / "train.toml", "dataset": _write(
        folder / "d_val_above_one.toml", edited(with_images, "general.validation_split", 1.5))}
    for gib in TIER_GPUS:  # the default preset as rendered for a GPU of that size, tier settings included
        plan = _default_preset_plan(folder / f"tier{gib}", gib)
        cases[f"tier:{gib}"] = {"train": _text(folder / f"t_tier{gib}.toml", plan.files["train.toml"]),
                                "dataset": _text(folder / f"d_tier{gib}.toml", plan.files["dataset.toml"])}
    masked = _default_preset_plan(folder / "masked", 139.8, sets=["masked_loss=true"],
                                  dataset=build_demo(folder / "masked" / "ds", masks="auto").out)
    cases["masked"] = {"train": _text(folder / "t_masked.toml", masked.files["train.toml"]),
                       "dataset": _text(folder / "d_masked.toml", masked.files["dataset.toml"])}
    cases["masked_without_alpha"] = {"train": folder / "t_masked.toml", "dataset": _write(
        folder / "d_masked_without_alpha.toml", _without_alpha_mask(toml.loads(masked.files["dataset.toml"])))}
    # reg images; two classes; both with masks and a validation split (tests/class_helpers.py)
    for name, plan in _class_plans(folder).items():
        cases[name] = {"train": _text(folder / f"t_{name}.toml", plan.files["train.toml"]),
                       "dataset": _text(folder / f"d_{name}.toml", plan.files["dataset.toml"])}
        plans[name] = plan
    results = run_sd_scripts_probe(list(cases.values()), sd_scripts_dir)
    return {**dict(zip(cases, results)), "_folder": folder, "_plans": plans}


TIER_GPUS = (139.8, 15.0)  # an H200, a 16 GB card
# the LoCon run of templates/sweeps/lora-vs-locon.toml, as `--set`s
LOCON_SETS = ('network_module="lycoris.kohya"', 'network_args=["algo=locon", "conv_dim=16", "conv_alpha=8"]',
              "network_dim=32", "network_alpha=16.0")
# shares of the 6-image test dataset: 0.25 holds out round(1.5) = 2 and trains on ceil(4.5) = 5, one image in both
VALIDATION_SPLITS = (0.5, 0.25, 0.34)


def _class_plans(root: Path) -> dict[str, Any]:
    from class_helpers import build, demo_rows, plan_for, two_classes

    from orchestrator.common.paths import DEMO_DIR

    prior = root / "prior"   # three nevi the combined build does not train on, renamed
    prior.mkdir()
    for row in demo_rows(melanoma=0, nevus=13)[10:]:
        shutil.copy(DEMO_DIR / "images" / f"{row['isic_id']}.jpg", prior / f"prior_{row['isic_id']}.jpg")
    combined = build(root / "combined", melanoma=5, nevus=10, diagnoses=("melanoma", "nevus"), balance_classes=True,
                     reg_images=prior, masks="auto")
    return {"reg": plan_for(build(root / "reg", repeats=2, reg_diagnosis="nevus"), root / "reg"),
            "classes": plan_for(two_classes(root / "classes"), root / "classes"),
            "combined": plan_for(combined, root / "combined", "validation_split=0.25", "masked_loss=true")}


def _text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _held_out(trained: Path, held_out: Path) -> dict[str, Any]:
    """A patient-level split as sd-scripts could take it: the trained images in one [[datasets]] (no split), the
    held-out patients' images in a second one with validation_split = 1.0 (all of them validate, none train)."""
    data = edited(edited(dataset(), "datasets.0.subsets.0.image_dir", str(trained)), "datasets.0.batch_size", 2)
    data = edited(edited(data, "datasets.0.subsets.0.num_repeats", 3), "general.validation_split", 0.0)
    val = edited(edited(data, "datasets.0.subsets.0.image_dir", str(held_out)), "datasets.0.validation_split", 1.0)
    data["datasets"].append(val["datasets"][0])
    return data


def _without_alpha_mask(data: dict[str, Any]) -> dict[str, Any]:
    del data["datasets"][0]["subsets"][0]["alpha_mask"]
    return data


def _default_preset_plan(root: Path, gib: float, *, sets: tuple[str, ...] | list[str] = (),
                         dataset: Path | None = None):
    from train_helpers import make_dataset

    from orchestrator.train.settings import load_settings
    from orchestrator.train.plan import prepare
    from orchestrator.train.preflight import Gpu

    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(dataset or make_dataset(root / "ds")),
                                      "pretrained_model_name_or_path": str(root / "sdxl.safetensors")},
                             sets=[f"runs_dir={str(root / 'runs')!r}", *sets])
    return prepare(settings, gpus=[Gpu("GPU", gib)], run_name="tier")


def _write_run(plan) -> None:
    from orchestrator.runs.folder import write_run_dir
    from orchestrator.train.plan import run_record

    record = run_record(plan, argv=["python"], cwd=plan.run_dir.parent, env_changes={}, commits={}, packages={},
                        gpu={})
    write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record, links=plan.links)


def _validation_plan(root: Path, split: float, patients: tuple[str, ...] = ()):
    from train_helpers import make_dataset

    from orchestrator.train.plan import prepare
    from orchestrator.train.settings import load_settings

    sets = [f"runs_dir={str(root / 'runs')!r}", f"validation_split={split}", "train_batch_size=2"]
    if split == 0.5:
        sets += ["validate_every_n_epochs=2", "max_validation_steps=3", "validation_seed=7"]
    settings = load_settings(preset_name="default", cwd=root, sets=sets,
                             options={"dataset": str(make_dataset(root / "ds", repeats=3, patients=patients)),
                                      "pretrained_model_name_or_path": str(root / "sdxl.safetensors")})
    return prepare(settings, gpus=None, run_name="val")


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


def _modules(case: dict[str, Any]) -> dict[str, tuple[str, int, float]]:
    """The stand-in U-Net's adapted layers (conv1: a 3x3 conv, to_q: a linear layer) as (class, rank, scale)."""
    return {name.rsplit("_", 1)[-1] if name.endswith("conv1") else name.rsplit("_", 2)[-2] + "_q":
            (m["class"], m["dim"], m["scale"]) for name, m in case["network"].items()}


@needs_lycoris
def test_lycoris_builds_locon_from_the_network_args_medsynth_accepts(probe):
    validate_train_config(_lycoris_train(LOCON), source="train.toml")
    case = probe["lycoris:locon"]
    assert case["ok"], case
    assert case["args"]["network_args"]["value"] == LOCON
    # the 3x3 conv at conv_dim 4 / conv_alpha 2, the linear layer at network_dim 8 / network_alpha 4
    assert _modules(case) == {"conv1": ("LoConModule", 4, 0.5), "to_q": ("LoConModule", 8, 0.5)}


@needs_lycoris
def test_lycoris_accepts_the_locon_run_medsynth_renders(probe):
    case = probe["lycoris:rendered"]
    assert case["ok"], case
    assert case["args"]["network_module"]["value"] == "lycoris.kohya"
    assert _modules(case) == {"conv1": ("LoConModule", 16, 0.5), "to_q": ("LoConModule", 32, 0.5)}


@needs_lycoris
@pytest.mark.parametrize("name", ["misspelt_arg", "string_false"])
def test_network_args_lycoris_misreads_silently_are_refused_by_medsynth(probe, name):
    case = probe[f"lycoris:{name}"]
    assert case["ok"], case
    with pytest.raises(MedsynthError, match=r"\[network\] network_args: item 1"):
        validate_train_config(_lycoris_train(LYCORIS_CASES[name]), source="train.toml")
    if name == "misspelt_arg":  # conv_dims ignored: the conv got network_dim's rank instead of 4
        assert _modules(case)["conv1"][1] == 8


@needs_lycoris
def test_an_algorithm_lycoris_cannot_build_is_refused_by_medsynth(probe):
    case = probe["lycoris:unknown_algo"]
    assert not case["ok"] and case["stage"] == "network", case
    with pytest.raises(MedsynthError, match=r"did you mean 'locon'\?"):
        validate_train_config(_lycoris_train(LYCORIS_CASES["unknown_algo"]), source="train.toml")
@pytest.mark.parametrize("split", VALIDATION_SPLITS)
def test_sd_scripts_holds_out_the_images_the_dry_run_counts(probe, split):
    result, plan = probe[f"validation:{split}"], probe["_plans"][split]
    assert result["ok"], result
    (ds,) = result["datasets"]
    seed = 7 if split == 0.5 else plan.config.seed  # medsynth renders the run's seed when none is given
    assert (ds["params"]["validation_split"], ds["params"]["validation_seed"]) == (split, seed)
    group, sched = result["dataset_group"], plan.schedule
    assert group["images"] == [sched.images * plan.dataset.repeats]  # the repeats apply to what is left
    assert group["validation_images"] == [sched.validation_images]
    assert sched.validation_overlap == (1 if split == 0.25 else 0)
    assert min(group["validation_batches"], plan.config.max_validation_steps or 99) == sched.validation_batches


def test_a_second_dataset_with_validation_split_one_validates_on_all_its_images_and_trains_on_none(probe):
    """sd-scripts (48d368fa) builds a validation dataset from every [[datasets]] with validation_split > 0 and a
    training dataset from every one (config_util.py:474-521): at 1.0 it trains on ceil(n × 0) = 0 images. The
    training group keeps working (its empty subset is skipped, no "No data found"), and the validation group
    holds the second dataset's images exactly, unrepeated: whole patients could be held out this way."""
    result = probe["held_out_dataset"]
    assert result["ok"], result
    assert [d["params"]["validation_split"] for d in result["datasets"]] == [0.0, 1.0]
    group = result["dataset_group"]
    assert (group["images"], group["batches"]) == ([5 * 3, 0], 8)  # ceil(15 / batch 2): the held-out add none
    assert (group["validation_images"], group["validation_batches"]) == ([3], 2)
    validate_dataset_config(toml.load(probe["_folder"] / "d_held_out.toml"), source="dataset.toml")  # medsynth too


def test_sd_scripts_validates_on_the_held_out_patients_and_trains_on_the_others_as_the_dry_run_counts(probe):
    result, plan = probe["validation:by_patient"], probe["_plans"]["by_patient"]
    assert result["ok"], result
    group, sched = result["dataset_group"], plan.schedule
    assert sched.validation_by == "patient" and (sched.images, sched.validation_images) == (4, 2)
    assert group["images"] == [sched.images * plan.dataset.repeats, 0] and group["batches"] == sched.steps_per_epoch
    assert (group["validation_images"], group["validation_batches"]) == ([2], sched.validation_batches)
    assert [d["params"]["validation_seed"] for d in result["datasets"]] == [plan.config.seed] * 2


def test_sd_scripts_reads_the_validation_options_medsynth_renders(probe):
    args = {k: v["value"] for k, v in probe["validation:0.5"]["args"].items()}
    assert (args["validate_every_n_epochs"], args["max_validation_steps"], args["validation_seed"]) == (2, 3, 7)
    assert args["validate_every_n_steps"] is None and args["validation_split"] == 0.0  # the dataset's split is used


def test_validation_split_above_one_is_skipped_silently_by_sd_scripts_and_refused_by_medsynth(probe):
    result = probe["validation_split_above_one"]
    assert result["ok"] and result["dataset_group"]["validation_images"] == [], result
    with pytest.raises(MedsynthError, match=r"validation_split: must be between 0.0 and 1.0"):
        validate_dataset_config(edited(dataset(), "general.validation_split", 1.5), source="dataset.toml")


def test_sd_scripts_accepts_masked_loss_with_the_alpha_masks_medsynth_renders(probe):
    result = probe["masked"]
    assert result["ok"], result
    assert result["args"]["masked_loss"]["value"] is True
    (ds,) = result["datasets"]
    (subset,) = ds["subsets"]
    assert subset["alpha_mask"] is True and "conditioning_data_dir" not in subset   # a DreamBooth subset
    assert result["dataset_group"]["images"] == [20]


def test_masked_loss_without_masks_passes_sd_scripts_silently_and_medsynth_refuses_it(probe):
    folder = probe["_folder"]
    assert probe["masked_without_alpha"]["ok"], probe["masked_without_alpha"]
    with pytest.raises(MedsynthError, match="would train it without a mask"):
        check_combinations(toml.loads((folder / "t_masked.toml").read_text(encoding="utf-8")),
                           toml.loads((folder / "d_masked_without_alpha.toml").read_text(encoding="utf-8")),
                           source="")


def test_sd_scripts_reads_the_reg_subset_and_counts_the_plans_steps(probe):
    result, plan = probe["reg"], probe["_plans"]["reg"]
    assert result["ok"], result
    subsets = result["datasets"][0]["subsets"]
    assert [(s["num_repeats"], s["is_reg"], s["class_tokens"]) for s in subsets] == [(2, False, "me1anoma"),
                                                                                        (1, True, "nevus")]
    # train_util.py:2163-2182: the 20 reg images are repeated to the 40 training images; batch 1: one step each
    assert result["dataset_group"]["images"] == [40] and result["dataset_group"]["reg_images"] == [20]
    assert result["dataset_group"]["batches"] == plan.schedule.steps_per_epoch == 80


def test_sd_scripts_reads_one_subset_per_class_with_its_repeats_and_trigger(probe):
    result, plan = probe["classes"], probe["_plans"]["classes"]
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


def test_sd_scripts_splits_each_class_but_not_the_reg_folder_as_the_plan_counts(probe):
    """Two classes, a reg folder, validation_split and masked loss together: sd-scripts' own dataset counts the
    training, reg and validation images and the batches the dry run prints."""
    result, plan = probe["combined"], probe["_plans"]["combined"]
    assert result["ok"], result
    sched, group = plan.schedule, result["dataset_group"]
    subsets = result["datasets"][0]["subsets"]
    assert [(s["is_reg"], s["alpha_mask"]) for s in subsets] == [(False, True), (False, True), (True, False)]
    classes = [s for s in plan.dataset.subsets if not s.is_reg]
    assert sched.validation_images == sum(round(s.images * 0.25) for s in classes) > 0  # split per class
    assert group["validation_images"] == [sched.validation_images]   # no reg image is held out
    assert group["images"] == [sched.samples]                       # the repeats apply to what is left
    (reg,) = [s for s in plan.dataset.subsets if s.is_reg]
    assert group["reg_images"] == [reg.images] and sched.reg_samples == sched.samples
    assert group["batches"] == sched.steps_per_epoch == 2 * sched.samples   # batch 1: reg repeated to match
