"""Validate rendered kohya files against the contract before anything launches.

sd-scripts does not check its training TOML (kohya-interface.md §0.1): the file is flattened one level into an
argparse Namespace, so unknown keys are ignored and values skip argparse's type= and choices=. Its dataset TOML
is checked by voluptuous, but only when training has already started. Each function here raises MedsynthError
with one line naming the file, the section and the key.

Decisions (sd-scripts facts are cited in kohya-interface.md):
- training TOML: sections are free names; keys inside must be options of sdxl_train_network.py; a key set in two
  sections is an error (sd-scripts keeps the last silently). Float options accept integers (sd-scripts does not
  convert them; Python arithmetic treats them alike), except options ConfigSanitizer re-checks with an exact type
  (`sanitized_as` in the contract, e.g. validation_split): there an integer aborts sd-scripts, so it is refused.
  Integer options refuse booleans (stricter than voluptuous, which takes True for an int).
- keys refused in the training TOML although sd-scripts reads them: see FORBIDDEN_TRAIN_KEYS.
- network_args of network_module "lycoris.kohya": checked against the installed lycoris-lora (kohya/lycoris_args.py),
  which ignores unknown keys and misreads some values silently; refused when lycoris-lora is not installed.
- dataset TOML: checked structurally only, never against the filesystem (it may be rendered for another
  machine); the launcher's preflight checks that image_dir exists and holds images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya import lycoris_args as lycoris
from orchestrator.kohya.contract import Contract, DatasetKey, load_contract
from orchestrator.kohya.prompts import parse_sample_prompts, validate_sample_prompts
from orchestrator.kohya.train_toml import settings
from orchestrator.common.suggest import did_you_mean
from orchestrator.kohya.values import (ADAFACTOR, OPTION_FOR_DATASET_KEY, describe_kinds, is_kind,
                                       option_problem, short_repr, show_value, unknown_option_hint)

__all__ = [
    "check_combinations", "flatten_train_config", "parse_sample_prompts", "validate_dataset_config",
    "validate_sample_prompts", "validate_train_config",
]

# keys sd-scripts reads from the training TOML that medsynth refuses there, with the reason
FORBIDDEN_TRAIN_KEYS = {
    "config_file": "the launcher passes it on the command line, which overrides the file",
    "dataset_config": "the launcher passes it on the command line, which overrides the file",
    "output_config": "it makes sd-scripts write its config and exit without training",
    "train_data_dir": "sd-scripts ignores it when a dataset config is given; images are listed in dataset.toml",
    "reg_data_dir": "sd-scripts ignores it when a dataset config is given; images are listed in dataset.toml",
    "in_json": "sd-scripts ignores it when a dataset config is given; images are listed in dataset.toml",
    "dataset_class": "it replaces dataset.toml by an arbitrary Python class",
    "caption_extention": "it is a misspelt alias that silently overrides caption_extension; use caption_extension",
    "use_8bit_adam": "it is a deprecated alias; use optimizer_type = \"AdamW8bit\"",
    "use_lion_optimizer": "it is a deprecated alias; use optimizer_type = \"Lion\"",
}
_LEVEL_LABELS = {"general": "[general]", "dataset": "[[datasets]]", "subset": "[[datasets.subsets]]"}


@dataclass(frozen=True)
class Setting:
    """One key of the flattened training TOML and the section it came from (for messages)."""

    section: str
    value: Any


# ----------------------------------------------------------------------------------------------- training TOML

def flatten_train_config(cfg: Mapping, *, source: str) -> dict[str, Setting]:
    """The key -> value mapping sd-scripts builds (read_config_from_file, train_util.py:4748-4761), refusing
    a key set twice (sd-scripts would keep the last one without a word)."""
    flat: dict[str, Setting] = {}
    for name, key, value in settings(cfg):
        section = "(top level)" if name is None else f"[{name}]"
        if key in flat:
            raise MedsynthError(f"{source}: {section} {key}: also set in {flat[key].section}; "
                                "sd-scripts would silently keep only the last one")
        flat[key] = Setting(section, value)
    return flat


def validate_train_config(cfg: Mapping, *, source: str) -> None:
    """cfg = toml.loads(train.toml). Keys, types, choices, and the option combinations that abort sd-scripts."""
    contract = load_contract()
    flat = flatten_train_config(cfg, source=source)
    for key, setting in flat.items():
        where = f"{source}: {setting.section} {key}"
        option = contract.options.get(key)
        if option is None:
            raise MedsynthError(f"{where}: unknown key{unknown_option_hint(key, contract)}")
        if key in FORBIDDEN_TRAIN_KEYS:
            raise MedsynthError(f"{where}: not allowed in the training TOML: {FORBIDDEN_TRAIN_KEYS[key]}")
        problem = option_problem(option, setting.value, contract)
        if problem:
            raise MedsynthError(f"{where}: {problem}")
    _check_train_combinations(flat, contract, source)


def _check_train_combinations(flat: dict[str, Setting], contract: Contract, source: str) -> None:
    def get(key: str) -> Any:
        return flat[key].value if key in flat else contract.options[key].default

    def fail(key: str, problem: str) -> None:
        section = f"{flat[key].section} " if key in flat else ""
        raise MedsynthError(f"{source}: {section}{key}: {problem}")

    if "max_train_epochs" not in flat:
        fail("max_train_epochs", "missing: without it sd-scripts trains max_train_steps (default 1600) steps "
                                 "whatever the dataset size")
    if "max_train_steps" in flat:  # silently ignored otherwise: sd-scripts recomputes it from the epochs
        fail("max_train_steps", "ignored: max_train_epochs overrides it (train_network.py:799); "
                                "set max_train_epochs instead")
    te_cached = get("cache_text_encoder_outputs") or get("cache_text_encoder_outputs_to_disk")
    if te_cached and not get("network_train_unet_only"):
        fail("network_train_unet_only", "must be true when the text encoder outputs are cached "
                                        "(cache_text_encoder_outputs); sd-scripts asserts it")
    if get("persistent_data_loader_workers") and get("max_data_loader_n_workers") == 0:
        fail("persistent_data_loader_workers", "needs max_data_loader_n_workers > 0 (torch's DataLoader raises)")
    for flag, precision in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
        if get(flag) and get("mixed_precision") != precision:
            fail(flag, f'needs mixed_precision = "{precision}" (sd-scripts asserts it)')
    for flag in ("fp8_base", "fp8_base_unet"):
        if get(flag) and get("mixed_precision") == "no":
            fail(flag, 'needs mixed_precision "fp16" or "bf16" (sd-scripts asserts it)')
    optimizer = str(get("optimizer_type") or "AdamW").lower()
    if get("fused_backward_pass") and (optimizer != ADAFACTOR or get("gradient_accumulation_steps") != 1):
        fail("fused_backward_pass", "works only with optimizer_type Adafactor and gradient_accumulation_steps 1")
    if get("v2"):
        fail("v2", "cannot be true for SDXL training (sd-scripts asserts it)")
    if get("adaptive_noise_scale") is not None and get("noise_offset") is None:
        fail("adaptive_noise_scale", "needs noise_offset (sd-scripts raises ValueError)")
    if get("scale_v_pred_loss_like_noise_pred") and not get("v_parameterization"):
        fail("scale_v_pred_loss_like_noise_pred", "needs v_parameterization (sd-scripts raises ValueError)")
    if get("v_pred_like_loss") and get("v_parameterization"):
        fail("v_pred_like_loss", "cannot be used with v_parameterization (sd-scripts raises ValueError)")
    if get("log_with") in ("tensorboard", "all") and get("logging_dir") is None:
        fail("log_with", "needs logging_dir (sd-scripts raises ValueError)")
    if get("network_module") == lycoris.MODULE:
        package = lycoris.installed()
        if package is None:
            fail("network_module", lycoris.NOT_INSTALLED)
        elif problem := package.problem(get("network_args") or []):
            fail("network_args", problem)
    _check_scheduler_combinations(get, fail, optimizer, contract)


def _check_scheduler_combinations(get: Callable[[str], Any], fail: Callable[[str, str], None],
                                  optimizer: str, contract: Contract) -> None:
    if optimizer.endswith("schedulefree"):
        return  # sd-scripts gives schedule-free optimizers a dummy scheduler
    scheduler = get("lr_scheduler")
    relative_step = optimizer == ADAFACTOR and "relative_step=False" not in (get("optimizer_args") or [])
    if scheduler == ADAFACTOR and optimizer != ADAFACTOR:
        fail("lr_scheduler", '"adafactor" needs optimizer_type = "Adafactor" (sd-scripts asserts it)')
    needs = contract.schedulers.get(scheduler)
    if needs and not get(needs) and not get("lr_scheduler_type"):
        fail("lr_scheduler", f"{scheduler!r} needs {needs} to be set (sd-scripts cannot build it otherwise)")
    # get_scheduler_fix: these schedulers raise ValueError when a warmup is given
    warmup_free = (f"lr_scheduler_type {get('lr_scheduler_type')!r}" if get("lr_scheduler_type")
                   else "Adafactor's relative_step schedule" if relative_step
                   else f"lr_scheduler {scheduler!r}" if scheduler in ("constant", ADAFACTOR) else None)
    if warmup_free and get("lr_warmup_steps") != 0:
        fail("lr_warmup_steps", f"must be 0 with {warmup_free}: sd-scripts raises ValueError "
                                "(use constant_with_warmup for a warmup)")


# ----------------------------------------------------------------------------------------------- dataset TOML

def validate_dataset_config(cfg: Mapping, *, source: str) -> None:
    """cfg = toml.loads(dataset.toml). Exactly ConfigSanitizer's DreamBooth schema, plus the empty and
    ignored cases sd-scripts only warns about (no datasets, no subsets, num_repeats < 1, duplicate subsets)."""
    schema = load_contract().dataset
    levels = {"general": schema.general, "dataset": schema.dataset, "subset": schema.subset}
    for key in cfg:
        if key not in schema.top_level:
            hint = ("; dataset keys go in [general] or [[datasets]]" if any(key in lv for lv in levels.values())
                    else did_you_mean(key, schema.top_level))
            raise MedsynthError(f"{source}: {key}: unknown top-level key (only [general] and [[datasets]]){hint}")
    general = cfg.get("general", {})
    if not isinstance(general, Mapping):
        raise MedsynthError(f"{source}: general: must be a table ([general]), got {show_value(general)}")
    _check_table(general, "general", "[general]", levels, source)
    datasets = cfg.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise MedsynthError(f"{source}: datasets: needs at least one [[datasets]] table (an array of tables); "
                            "without one sd-scripts finds no images and exits 0 without training")
    for i, dataset in enumerate(datasets):
        where = f"datasets[{i}]"
        if not isinstance(dataset, Mapping):
            raise MedsynthError(f"{source}: {where}: must be a table, got {show_value(dataset)}")
        _check_table({k: v for k, v in dataset.items() if k != "subsets"}, "dataset", where, levels, source)
        subsets = dataset.get("subsets")
        if not isinstance(subsets, list) or not subsets:
            raise MedsynthError(f"{source}: {where} subsets: needs at least one [[datasets.subsets]] table "
                                "(an array of tables: a single [datasets.subsets] table is rejected by sd-scripts)")
        seen: dict[Any, int] = {}
        for j, subset in enumerate(subsets):
            sub_where = f"{where}.subsets[{j}]"
            if not isinstance(subset, Mapping):
                raise MedsynthError(f"{source}: {sub_where}: must be a table, got {show_value(subset)}")
            _check_table(subset, "subset", sub_where, levels, source)
            for key, spec in levels["subset"].items():
                if spec.required and key not in subset:
                    raise MedsynthError(f"{source}: {sub_where} {key}: missing (required)")
            identity = repr(sorted(subset.items()))
            if identity in seen:
                raise MedsynthError(f"{source}: {sub_where}: same as {where}.subsets[{seen[identity]}]; "
                                    "sd-scripts would ignore the duplicate")
            seen[identity] = j
        if all(isinstance(subset, Mapping) and subset.get("is_reg") is True for subset in subsets):
            # train_util.py:2163-2182 adds reg images only up to the training images' count: none here
            raise MedsynthError(f"{source}: {where} subsets: every subset is is_reg = true; sd-scripts trains on "
                                "reg images only beside training images and would find no data")


def _check_table(table: Mapping, level: str, where: str, levels: dict[str, dict[str, DatasetKey]],
                 source: str) -> None:
    allowed = levels[level]
    for key, value in table.items():
        spec = allowed.get(key)
        if spec is None:
            homes = [_LEVEL_LABELS[name] for name, keys in levels.items() if key in keys]
            if key == "metadata_file":
                problem = "not supported: medsynth writes DreamBooth-style subsets (image_dir + caption files)"
            elif homes:
                problem = f"not allowed in {_LEVEL_LABELS[level]}; it belongs in {' or '.join(homes)}"
            else:
                problem = "unknown key" + did_you_mean(key, [*allowed, *(["subsets"] if level == "dataset" else [])])
            raise MedsynthError(f"{source}: {where} {key}: {problem}")
        problem = _dataset_value_problem(key, value, spec.types)
        if problem:
            raise MedsynthError(f"{source}: {where} {key}: {problem}")


def _dataset_value_problem(key: str, value: Any, kinds: tuple[str, ...]) -> str | None:
    if not any(is_kind(value, k) for k in kinds):
        if "float" in kinds and "int" not in kinds and is_kind(value, "int"):
            return f"expected a float, got {show_value(value)}: the dataset schema rejects integers here; write {value}.0"
        if key == "resolution" and isinstance(value, str):
            return (f"expected an integer or [W, H], got {show_value(value)}: in dataset.toml resolution is a number, "
                    "not a string (unlike train.toml)")
        return f"expected {describe_kinds(kinds)}, got {show_value(value)}"
    if key in ("num_repeats", "batch_size") and value < 1:
        return f"must be at least 1, got {value}" + (" (sd-scripts would skip the subset)" if key == "num_repeats" else "")
    if key == "resolution" and min(value if isinstance(value, list) else [value]) < 1:
        return f"must be positive, got {value}"
    if key == "validation_split" and not 0.0 <= value <= 1.0:
        return f"must be between 0.0 and 1.0, got {value} (sd-scripts only logs a warning and holds out nothing)"
    if key == "image_dir" and not value.strip():
        return "must not be empty"
    return None


# ----------------------------------------------------------------------------------------------- both files

def _check_bucket_limits(resolution: Any, steps: Any, low: tuple[Any, str], high: tuple[Any, str],
                         where: str) -> None:
    """DreamBoothDataset asserts min_bucket_reso <= min(resolution) and max(resolution) <= max_bucket_reso,
    after rounding min down and max up to bucket_reso_steps (train_util.adjust_min_max_bucket_reso_by_steps)."""
    if isinstance(resolution, str):
        parts = resolution.split(",")
    else:
        parts = resolution if isinstance(resolution, list) else [resolution]
    try:
        size = [int(p) for p in parts] * (2 if len(parts) == 1 else 1)
        step = int(steps) if steps else 1
        (minimum, min_origin), (maximum, max_origin) = low, high
        minimum = int(minimum) - int(minimum) % step if minimum is not None else None
        maximum = int(maximum) + (-int(maximum)) % step if maximum is not None else None
    except (TypeError, ValueError):
        return  # a malformed value is reported by the per-file checks
    shown = f"{size[0]}x{size[1]}"
    if minimum is not None and min(size) < minimum:
        raise MedsynthError(f"{where} resolution {shown} is below min_bucket_reso {minimum} ({min_origin}): "
                            f"sd-scripts asserts min_bucket_reso <= the resolution")
    if maximum is not None and max(size) > maximum:
        raise MedsynthError(f"{where} resolution {shown} is above max_bucket_reso {maximum} ({max_origin}): "
                            f"sd-scripts asserts max_bucket_reso >= the resolution")


def check_combinations(train: Mapping, dataset: Mapping, *, source: str, train_name: str = "train.toml",
                       dataset_name: str = "dataset.toml") -> None:
    """The aborts that depend on both files: dataset values fall back subset -> dataset -> [general] ->
    training TOML -> argparse default (config_util.BlueprintGenerator), and the caching options forbid some of
    them in any subset. Call after validate_train_config and validate_dataset_config."""
    contract = load_contract()
    prefix = f"{source}: " if source else ""
    flat = flatten_train_config(train, source=f"{prefix}{train_name}")

    def option(key: str) -> tuple[Any, str]:
        name = OPTION_FOR_DATASET_KEY.get(key, key)
        if name in flat:
            return flat[name].value, f"{train_name} {flat[name].section} {name}"
        return (contract.options[name].default if name in contract.options else None), f"default {name}"

    def effective(key: str, *tables: tuple[Mapping, str]) -> tuple[Any, str]:
        for table, label in tables:
            if table.get(key) is not None:
                return table[key], f"{dataset_name} {label} {key}"
        return option(key)

    general = dataset.get("general", {})
    te_cache = next((k for k in ("cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk") if option(k)[0]), None)
    latent_cache = next((k for k in ("cache_latents", "cache_latents_to_disk") if option(k)[0]), None)
    masked = option("masked_loss")[1] if option("masked_loss")[0] else None
    for i, ds in enumerate(dataset.get("datasets", [])):
        scope = [(ds, f"datasets[{i}]"), (general, "[general]")]
        resolution, _ = effective("resolution", *scope)
        if resolution is None:
            raise MedsynthError(f"{prefix}{dataset_name} datasets[{i}] resolution: not set here, in [general] nor in "
                                f"{train_name}; sd-scripts asserts it is set")
        steps, origin = effective("bucket_reso_steps", *scope)
        if steps is not None and steps % 32:
            raise MedsynthError(f"{prefix}{origin}: {steps} is not a multiple of 32 (sdxl_train_network asserts it)")
        if effective("enable_bucket", *scope)[0]:
            _check_bucket_limits(resolution, steps, effective("min_bucket_reso", *scope),
                                 effective("max_bucket_reso", *scope), f"{prefix}{dataset_name} datasets[{i}]")
        for j, subset in enumerate(ds.get("subsets", [])):
            subset_scope = [(subset, f"datasets[{i}].subsets[{j}]"), *scope]
            # train_network.py:471 with neither: apply_masked_loss returns the loss unmasked, without a word. A
            # reg subset is meant to: its images have no mask (sd-scripts fills a missing mask with ones,
            # train_util.py:1790-1800), and alpha_mask would read a reg PNG's own transparency as one
            if masked and not effective("alpha_mask", *subset_scope)[0] and "conditioning_data_dir" not in subset \
                    and subset.get("is_reg") is not True:
                raise MedsynthError(f"{prefix}{dataset_name} datasets[{i}].subsets[{j}]: {masked} = true but the "
                                    f"subset has neither alpha_mask = true nor conditioning_data_dir: sd-scripts "
                                    f"would train it without a mask")
            conflicts = ([(te_cache, k) for k in ("shuffle_caption", "caption_dropout_rate",
                                                  "caption_tag_dropout_rate", "token_warmup_step")] if te_cache else [])
            conflicts += [(latent_cache, k) for k in ("color_aug", "random_crop")] if latent_cache else []
            for cache, key in conflicts:
                value, origin = effective(key, *subset_scope)
                if value:
                    raise MedsynthError(f"{prefix}{origin} = {short_repr(value)} conflicts with "
                                        f"{option(cache)[1]} = true: sd-scripts aborts; turn one of them off")
