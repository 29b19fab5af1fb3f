"""Validation of rendered kohya files: each rule refuses a bad input with a one-line message and accepts a good one."""

from __future__ import annotations

from typing import Callable

import pytest
from kohya_samples import PROMPTS, dataset, edited, train

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.validate import (
    check_combinations, parse_sample_prompts, validate_dataset_config, validate_sample_prompts, validate_train_config,
)

def problem(check: Callable[[], None]) -> str | None:
    """The validator's message, or None where it accepts."""
    try:
        check()
    except MedsynthError as exc:
        return str(exc)
    return None


def refused(check: Callable[[], None]) -> str:
    with pytest.raises(MedsynthError) as info:
        check()
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------- training TOML

def test_rendered_like_training_toml_is_accepted():
    assert problem(lambda: validate_train_config(train(), source="train.toml")) is None


def test_misspelt_key_is_refused_with_did_you_mean():
    message = refused(lambda: validate_train_config(edited(train(), "optimizer.lerning_rate", 1e-4), source="train.toml"))
    assert message == "train.toml: [optimizer] lerning_rate: unknown key; did you mean 'learning_rate'?"


def test_key_set_in_two_sections_is_refused():
    cfg = edited(train(), "training.learning_rate", 1e-5)
    message = refused(lambda: validate_train_config(cfg, source="train.toml"))
    assert "[training] learning_rate" in message and "[optimizer]" in message


def test_dataset_key_in_training_toml_points_to_its_option():
    message = refused(lambda: validate_train_config(edited(train(), "training.num_repeats", 2), source="train.toml"))
    assert "dataset.toml key" in message and "dataset_repeats" in message


@pytest.mark.parametrize("path, value, fragment", [
    ("optimizer.learning_rate", "1e-4", "expected a float or an integer, got string '1e-4'"),
    ("network.network_dim", 128.0, "expected an integer, got float 128.0"),
    ("network.network_dim", True, "expected an integer, got boolean true"),
    ("training.gradient_checkpointing", "true", "expected a boolean"),
    ("training.validation_split", 0, "write 0.0"),
    ("network.network_args", "conv_dim=4", "expected an array"),
    ("network.network_args", ["conv_dim"], "item 0"),
    ("optimizer.optimizer_args", ["betas=(0.9"], "Python literal"),
    ("training.resolution", 1024, 'must be a string "W" or "W,H"'),
    ("training.resolution", "1024x1024", '"W" or "W,H"'),
    ("optimizer.lr_warmup_steps", 100.0, "ratio of the total steps"),
    ("optimizer.lr_warmup_steps", -5, "must not be negative"),
    ("training.mixed_precision", "bf17", "did you mean 'bf16'?"),
    ("sample.sample_sampler", "Euler_a", "case-sensitive"),
    ("sample.sample_sampler", "dpm++_2m_karras", "is not one of"),
    ("optimizer.optimizer_type", "AdamW9bit", "did you mean 'AdamW8bit'?"),
    ("optimizer.optimizer_type", "RAdam", "'torch.optim.RAdam'"),
    ("optimizer.optimizer_type", "torch.optim.", "is not an optimizer"),
    ("optimizer.lr_scheduler", "Constant", "did you mean 'constant'?"),
    ("sample.sample_prompts", "prompts.md", ".txt, .toml or .json"),
    ("training.max_train_epochs", 0, "at least 1"),
    ("training.save_model_as", "bin", "is not one of"),
])
def test_wrong_value_is_refused(path, value, fragment):
    message = refused(lambda: validate_train_config(edited(train(), path, value), source="train.toml"))
    assert message.startswith(f"train.toml: [{path.split('.')[0]}] {path.split('.')[1]}: ")
    assert fragment in message


@pytest.mark.parametrize("path, value", [
    ("optimizer.learning_rate", 1),  # float options take integers
    ("optimizer.lr_warmup_steps", 0.05),  # a ratio below 1
    ("optimizer.optimizer_type", "adamw8bit"),  # sd-scripts lower()s the known names
    ("optimizer.optimizer_type", "bitsandbytes.optim.AdEMAMix8bit"),  # a class path
    ("training.resolution", "1024"),
    ("training.text_encoder_lr", 1e-5),  # a list option sd-scripts also takes as one number
    ("training.text_encoder_lr", [1e-5, 2e-5]),
    ("optimizer.optimizer_args", ["weight_decay=0.01", "betas=(0.9,0.99)"]),
    ("training.max_token_length", 225),
])
def test_valid_value_is_accepted(path, value):
    cfg = edited(train(), path, value)
    section, key = path.split(".")
    assert cfg[section][key] == value  # the edit is in the file that is validated
    assert problem(lambda: validate_train_config(cfg, source="train.toml")) is None


@pytest.mark.parametrize("key", ["config_file", "dataset_config", "output_config", "train_data_dir",
                                 "caption_extention", "use_8bit_adam"])
def test_keys_sd_scripts_reads_but_medsynth_sets_elsewhere_are_refused(key):
    value = True if key in ("output_config", "use_8bit_adam") else "x"
    message = refused(lambda: validate_train_config(edited(train(), f"training.{key}", value), source="train.toml"))
    assert f"{key}: not allowed in the training TOML" in message


def test_top_level_keys_count_as_options():
    cfg = train()
    cfg["seed"] = 42
    validate_train_config(cfg, source="train.toml")
    cfg["sed"] = 1
    assert "(top level) sed: unknown key; did you mean 'seed'?" in refused(
        lambda: validate_train_config(cfg, source="train.toml"))


@pytest.mark.parametrize("edits, fragment", [
    ({"training.max_train_epochs": None}, "max_train_epochs: missing"),
    ({"network.network_train_unet_only": False}, "network_train_unet_only: must be true"),
    ({"optimizer.lr_scheduler": "constant"}, "lr_warmup_steps: must be 0 with lr_scheduler 'constant'"),
    ({"training.lr_scheduler_type": "CosineAnnealingLR"}, "must be 0 with lr_scheduler_type"),
    ({"optimizer.optimizer_type": "Adafactor"}, "relative_step"),
    ({"training.persistent_data_loader_workers": True, "training.max_data_loader_n_workers": 0},
     "persistent_data_loader_workers: needs max_data_loader_n_workers > 0"),
    ({"training.full_bf16": True}, 'full_bf16: needs mixed_precision = "bf16"'),
    ({"training.fp8_base": True, "training.mixed_precision": "no"}, "fp8_base: needs mixed_precision"),
    ({"training.fused_backward_pass": True}, "fused_backward_pass: works only with optimizer_type Adafactor"),
    ({"training.v2": True}, "v2: cannot be true"),
    ({"training.adaptive_noise_scale": 0.01}, "adaptive_noise_scale: needs noise_offset"),
    ({"training.log_with": "tensorboard", "training.logging_dir": None}, "log_with: needs logging_dir"),
    ({"optimizer.lr_scheduler": "cosine_with_min_lr"}, "needs lr_scheduler_min_lr_ratio"),
    ({"optimizer.lr_scheduler": "adafactor"}, 'needs optimizer_type = "Adafactor"'),
    ({"training.max_train_steps": 10}, "max_train_steps: ignored: max_train_epochs overrides it"),
])
def test_option_combination_that_aborts_sd_scripts_is_refused(edits, fragment):
    cfg = train()
    for path, value in edits.items():
        cfg = edited(cfg, path, value)
    assert fragment in refused(lambda: validate_train_config(cfg, source="train.toml"))


@pytest.mark.parametrize("edits", [
    {"optimizer.lr_scheduler": "constant", "optimizer.lr_warmup_steps": 0},
    {"optimizer.lr_scheduler": "cosine_with_min_lr", "optimizer.lr_scheduler_min_lr_ratio": 0.1},
    {"optimizer.optimizer_type": "Adafactor", "optimizer.lr_warmup_steps": 0},
    {"optimizer.optimizer_type": "Adafactor", "optimizer.optimizer_args": ["relative_step=False"]},
    {"optimizer.optimizer_type": "AdamWScheduleFree", "optimizer.lr_scheduler": "constant"},  # dummy scheduler
    {"training.full_fp16": True},
    {"training.persistent_data_loader_workers": True},
    {"training.cache_text_encoder_outputs": False, "network.network_train_unet_only": False},
])
def test_compatible_option_combination_is_accepted(edits):
    cfg = train()
    for path, value in edits.items():
        cfg = edited(cfg, path, value)
    assert problem(lambda: validate_train_config(cfg, source="train.toml")) is None


# ------------------------------------------------------------------------------------------- dataset TOML

def test_rendered_like_dataset_toml_is_accepted():
    assert problem(lambda: validate_dataset_config(dataset(), source="dataset.toml")) is None


@pytest.mark.parametrize("path, value, fragment", [
    ("datasets.0.subsets.0.num_repeat", 2, "datasets[0].subsets[0] num_repeat: unknown key; did you mean 'num_repeats'?"),
    ("datasets.0.subsets.0.num_repeats", 1.0, "num_repeats: expected an integer, got float 1.0"),
    ("datasets.0.subsets.0.num_repeats", 0, "would skip the subset"),
    ("datasets.0.resolution", "1024", "not a string"),
    ("datasets.0.resolution", [1024], "expected an integer or [W, H] integers"),
    ("datasets.0.resolution", [1024.0, 1024.0], "expected an integer or [W, H] integers"),
    ("datasets.0.resolution", [1024, 0], "must be positive"),
    ("general.validation_split", 0, "the dataset schema rejects integers here; write 0.0"),
    ("general.face_crop_aug_range", [1, 2], "pair of floats"),
    ("general.image_dir", "x", "[general] image_dir: not allowed in [general]; it belongs in [[datasets.subsets]]"),
    ("datasets.0.subsets.0.batch_size", 2, "not allowed in [[datasets.subsets]]; it belongs in [general] or [[datasets]]"),
    ("datasets.0.subsets.0.metadata_file", "meta.json", "DreamBooth-style"),
    ("datasets.0.subsets.0.image_dir", None, "image_dir: missing (required)"),
    ("datasets.0.subsets.0.image_dir", " ", "must not be empty"),
    ("datasets.0.subsets", {"image_dir": "x"}, "array of tables"),
    ("datasets.0.subsets", [], "needs at least one [[datasets.subsets]]"),
    ("datasets", [], "needs at least one [[datasets]]"),
    ("general", "x", "must be a table"),
    ("dataset", [], "unknown top-level key"),
])
def test_wrong_dataset_config_is_refused(path, value, fragment):
    message = refused(lambda: validate_dataset_config(edited(dataset(), path, value), source="dataset.toml"))
    assert message.startswith("dataset.toml: ")
    assert fragment in message


def test_duplicate_subset_is_refused():
    cfg = dataset()
    cfg["datasets"][0]["subsets"].append(dict(cfg["datasets"][0]["subsets"][0]))
    assert "same as datasets[0].subsets[0]" in refused(lambda: validate_dataset_config(cfg, source="dataset.toml"))


@pytest.mark.parametrize("path, value", [
    ("datasets.0.resolution", [1024, 768]),
    ("general.token_warmup_step", 0.5),  # int or float both allowed here
    ("general.caption_dropout_rate", 0),
    ("datasets.0.subsets.0.custom_attributes", {"site": "torso"}),
    ("general.face_crop_aug_range", [1.0, 2.0]),
])
def test_valid_dataset_value_is_accepted(path, value):
    assert problem(lambda: validate_dataset_config(edited(dataset(), path, value), source="dataset.toml")) is None


def test_missing_image_dir_on_disk_is_left_to_preflight():
    missing = edited(dataset(), "datasets.0.subsets.0.image_dir", "/nonexistent/1_x")
    assert problem(lambda: validate_dataset_config(missing, source="d.toml")) is None


# ------------------------------------------------------------------------------------------- both files

@pytest.mark.parametrize("path, value, fragment", [
    ("general.shuffle_caption", True, "dataset.toml [general] shuffle_caption = true conflicts with train.toml "
                                      "[training] cache_text_encoder_outputs = true"),
    ("datasets.0.subsets.0.caption_dropout_rate", 0.1, "datasets[0].subsets[0] caption_dropout_rate = 0.1"),
    ("datasets.0.caption_tag_dropout_rate", 0.2, "caption_tag_dropout_rate"),
    ("datasets.0.subsets.0.token_warmup_step", 5, "token_warmup_step"),
    ("datasets.0.subsets.0.color_aug", True, "conflicts with train.toml [training] cache_latents = true"),
    ("general.random_crop", True, "random_crop = true conflicts"),
    ("datasets.0.bucket_reso_steps", 48, "not a multiple of 32"),
    ("datasets.0.resolution", 4096, "datasets[0] resolution 4096x4096 is above max_bucket_reso"),
    ("datasets.0.min_bucket_reso", 1536, "datasets[0] resolution 1024x1024 is below min_bucket_reso 1536"),
    ("datasets.0.resolution", [768, 2560], "resolution 768x2560 is above max_bucket_reso"),
])
def test_cross_file_combination_that_aborts_sd_scripts_is_refused(path, value, fragment):
    message = refused(lambda: check_combinations(train(), edited(dataset(), path, value), source="runs/demo"))
    assert message.startswith("runs/demo: ") and fragment in message


def test_bucket_limits_are_compared_as_sd_scripts_rounds_them():
    # sd-scripts rounds max_bucket_reso up and min_bucket_reso down to bucket_reso_steps before asserting
    high = edited(edited(dataset(), "datasets.0.resolution", 1024), "datasets.0.max_bucket_reso", 1000)
    assert problem(lambda: check_combinations(train(), high, source="runs/demo")) is None  # 1000 -> 1024
    low = edited(dataset(), "datasets.0.min_bucket_reso", 1030)
    assert problem(lambda: check_combinations(train(), low, source="runs/demo")) is None  # 1030 -> 1024
    no_buckets = edited(edited(dataset(), "datasets.0.enable_bucket", False), "datasets.0.resolution", 4096)
    assert problem(lambda: check_combinations(train(), no_buckets, source="runs/demo")) is None  # buckets only


def test_training_toml_value_inherited_by_subsets_counts():
    cfg = edited(train(), "training.shuffle_caption", True)
    ds = edited(dataset(), "general.shuffle_caption", None)
    assert "train.toml [training] shuffle_caption = true conflicts" in refused(
        lambda: check_combinations(cfg, ds, source="runs/demo"))


def test_dataset_value_overrides_training_toml_value():
    cfg = edited(train(), "training.shuffle_caption", True)
    assert problem(lambda: check_combinations(cfg, dataset(), source="runs/demo")) is None


def test_resolution_must_be_set_in_one_of_the_files():
    ds = edited(dataset(), "datasets.0.resolution", None)
    check_combinations(train(), ds, source="runs/demo")  # train.toml's resolution is inherited
    assert "resolution: not set" in refused(
        lambda: check_combinations(edited(train(), "training.resolution", None), ds, source="runs/demo"))


def test_combinations_pass_without_caching():
    cfg = edited(edited(train(), "training.cache_latents", False), "training.cache_text_encoder_outputs", False)
    ds = edited(edited(dataset(), "general.shuffle_caption", True), "general.random_crop", True)
    assert problem(lambda: check_combinations(cfg, ds, source="runs/demo")) is None


# ------------------------------------------------------------------------------------------- sample prompts

def test_prompts_parse_like_sd_scripts():
    prompts = parse_sample_prompts(PROMPTS, source="prompts.txt")
    assert prompts[0] == {"prompt": "photo of female skin, me1anoma on lower extremity, at age 50",
                          "negative_prompt": "blurry, text", "width": 1024, "height": 1024, "seed": 42,
                          "scale": 7.5, "sample_steps": 28, "sample_sampler": "euler_a"}
    assert prompts[1]["width"] == 1024 and "sample_sampler" not in prompts[1]
    assert len(prompts) == 2


@pytest.mark.parametrize("line, fragment", [
    ("a --w 1020", "multiple of 8"),
    ("a --h 32", "at least 64"),
    ("a --w 1024px", "expected a whole number"),
    ("a --ss Euler_a", "did you mean 'euler_a'?"),
    ("a --ss euler_a  --n blurry", "'euler_a '"),
    ("a --ss dpm++_2m_karras", "not a sampler"),
    ("a --foo 3", "unknown option --foo"),
    ("a --g 3.5", "not used by the SDXL LoRA trainer"),
    ("a --s 0", "1..1000"),
    ("a --l 7.5.1", "expected a number"),
    ("a --d -1", "expected a whole number"),
    ("a --w 1024 --w 768", "given twice"),
    ("--n blurry", "no prompt text"),
    ("n of lesions --w 1024", "starts like an option"),
    ("  # not a comment", "'#' after leading whitespace"),
    ("a\x0bb", "control character U+000B"),
    ("a\u2028b", "control character U+2028"),
])
def test_bad_prompt_line_is_refused_naming_its_line(line, fragment):
    message = refused(lambda: validate_sample_prompts(f"# header\nok prompt --w 1024\n{line}\n", source="p.txt"))
    assert message.startswith("p.txt: line 3: ") and fragment in message


def test_carriage_return_ends_a_line_like_newline():
    assert len(parse_sample_prompts("a --w 1024\r\nb --w 1024\rc", source="p.txt")) == 3


def test_prompt_file_without_prompts_is_refused():
    assert "no prompts" in refused(lambda: validate_sample_prompts("# only a comment\n\n", source="p.txt"))
