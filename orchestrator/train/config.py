"""The typed run configuration of `medsynth train`: field defaults < preset < medsynth.toml [train] < --set.

Keys are sd-scripts' own option names where a value goes straight into the training TOML, so a user who knows
sd-scripts knows the key. Every field is rendered by templates/train.toml.j2 under its own name, except those
in MEDSYNTH_ONLY (they shape what gets rendered or how it is launched), DATASET_TOML_FIELDS and
SAMPLE_PROMPT_FIELDS; tests/test_config.py holds the templates to that.
Any other sd-scripts option can be passed through as `kohya.<option>` (a `[train.kohya]` table in
medsynth.toml, `--set kohya.noise_offset=0.05` on the command line); those are checked against the
pinned sd-scripts contract when the rendered file is validated, not here.

Here: the config's fields and their conversion and checks. Presets, the layering and the batch choice are in
orchestrator/train/settings.py; the step arithmetic in orchestrator/train/schedule.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toml

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean

DEFAULT_PRESET = "default"
AUTO = "auto"
LR_SCALINGS = ("none", "sqrt", "linear")
DYNAMO_MODES = ("default", "reduce-overhead", "max-autotune")  # what accelerate 1.6.0's launcher accepts
KOHYA_PREFIX = "kohya."
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting a run is rendered from. None = leave the key out of the TOML (sd-scripts' default)."""

    # --- model
    pretrained_model_name_or_path: str = "stabilityai/stable-diffusion-xl-base-1.0"  # file, Diffusers folder or hub id
    tokenizer_cache_dir: Path | None = None       # holds the two CLIP tokenizer folders (needed offline)
    vae: Path | None = None
    # --- network (LoRA-LierLa: networks.lora without conv_dim)
    network_module: str = "networks.lora"
    network_dim: int = 128
    network_alpha: float = 128.0                  # sd-scripts defaults to 1: always set it
    network_args: tuple[str, ...] = ()
    network_dropout: float | None = None
    network_train_unet_only: bool = True
    # --- optimizer and schedule
    optimizer_type: str = "AdamW8bit"
    optimizer_args: tuple[str, ...] = ()           # "key=value" strings, e.g. "weight_decay=0.01"
    learning_rate: float = 1e-4                    # the rate at reference_batch_size; see lr_scaling
    lr_scaling: str = "none"                       # none | sqrt | linear: how the rate follows the effective batch
    reference_batch_size: int = 1
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int | None = None             # None: derived from lr_warmup_images
    lr_warmup_images: int = 100                    # warmup counted in images, so it means the same at any batch
    max_grad_norm: float = 1.0
    # --- training
    train_batch_size: int | str = 1                # an int, or "auto" (from the GPU's memory and [[batch_tiers]])
    max_train_epochs: int = 10                     # always rendered: otherwise sd-scripts' max_train_steps=1600 wins
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "bf16"
    save_precision: str = "fp16"
    full_bf16: bool = False
    sdpa: bool = True
    no_half_vae: bool = False
    cache_latents: bool = True
    cache_latents_to_disk: bool = False
    cache_text_encoder_outputs: bool = True
    vae_batch_size: int | None = None
    seed: int = 42
    resolution: int | None = None                  # None: the dataset's resolution (dataset.json)
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 2048
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    flip_aug: bool = False
    shuffle_caption: bool = False
    # --- validation loss (sd-scripts' docs/validation.md): a share of the images held out, by image
    validation_split: float = 0.0                  # 0: no validation; rendered into dataset.toml [general]
    validation_seed: int | None = None             # None: the run's seed (which images are held out, and the noise)
    validate_every_n_epochs: int | None = None     # None: every epoch
    validate_every_n_steps: int | None = None      # also every N steps (loss/validation/step_average)
    max_validation_steps: int | None = None        # None: all validation batches
    masked_loss: bool = False                      # loss only inside the dataset's masks (dataset build --masks)
    # --- speed knobs (rendered only when set; names checked against sd-scripts' parser)
    max_data_loader_n_workers: int | None = None
    persistent_data_loader_workers: bool = False
    torch_compile: bool = False
    dynamo_backend: str | None = None              # None: sd-scripts' default (inductor)
    dynamo_mode: str | None = None                 # None: torch's "default"; see DYNAMO_MODES
    dynamo_dynamic: bool = False                   # compile shape-generic graphs (buckets, short last batches)
    expandable_segments: bool = False              # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: less fragmenting
    # --- saving
    output_name: str | None = None                 # None: "<class>_lora"
    save_model_as: str = "safetensors"
    save_every_n_epochs: int = 1
    save_last_n_epochs: int | None = None
    save_state: bool = True                        # --resume needs the *-state folders
    save_last_n_epochs_state: int | None = 2       # state folders are large: keep the newest two
    # --- samples (one per prompt at every save)
    sample_every_n_epochs: int | None = None       # None: same as save_every_n_epochs
    sample_at_first: bool = False
    sample_sampler: str = "euler_a"
    sample_steps: int = 28
    sample_cfg_scale: float = 8.0
    sample_width: int = 1024
    sample_height: int = 1024
    sample_seed: int = 1000                        # prompt i gets seed sample_seed + i, the same every epoch
    num_sample_prompts: int = 4
    negative_prompt: str = "blurry, low quality, lowres, jpeg artifacts, text, watermark, ruler, deformed"
    sample_prompts: tuple[str, ...] = ()           # prompt texts replacing the ones made from the manifest
    sample_prompts_file: Path | None = None        # a text file of prompt texts, one per line (# = comment)
    # --- where
    dataset: Path | None = None                    # None: the [dataset] out of medsynth.toml
    runs_dir: Path = field(default_factory=paths.default_runs_dir)  # load_settings: runs/ in the project folder
    logging_dir: Path | None = None                # None: runs/<name>/logs
    kohya: Mapping[str, Any] = field(default_factory=dict)  # other sd-scripts options, passed through


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
# medsynth's own settings, never a key of train.toml: the learning-rate and warmup rules, the prompts' source,
# where things are, what `accelerate launch` (dynamo_*) or the environment (expandable_segments) carries, and the
# kohya.* pass-through options (train.toml's [extra] table)
MEDSYNTH_ONLY = frozenset({
    "lr_scaling", "reference_batch_size", "lr_warmup_images", "num_sample_prompts", "sample_prompts_file",
    "sample_seed", "dataset", "runs_dir", "dynamo_mode", "dynamo_dynamic", "expandable_segments", "kohya"})
# rendered into dataset.toml (templates/dataset.toml.j2, under the same names), not train.toml
DATASET_TOML_FIELDS = frozenset({
    "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale", "flip_aug",
    "shuffle_caption", "validation_split"})
# train.toml keys that do something only when images are held out (validation_split > 0)
VALIDATION_FIELDS = ("validation_seed", "validate_every_n_epochs", "validate_every_n_steps", "max_validation_steps")
# rendered into every line of sample_prompts.txt (templates/sample_prompts.txt.j2), as the prompt option they set
SAMPLE_PROMPT_FIELDS = {"sample_width": "width", "sample_height": "height", "sample_cfg_scale": "cfg_scale",
                        "sample_steps": "steps", "negative_prompt": "negative_prompt"}


@dataclass(frozen=True)
class Layer:
    """One source of settings, already converted: where it came from and its values."""

    source: str
    values: Mapping[str, Any]


# ----------------------------------------------------------------------------------------------- conversion

def _type_name(name: str) -> str:
    return str(FIELDS[name].type)


def _check_kohya_option(option: str, source: str) -> None:
    """sd-scripts ignores a training option it does not know, so a kohya.<option> that sdxl_train_network.py
    lacks is refused here, where the file or --set that gave it is known."""
    # imported here: the contract is read only once a kohya.* key is given
    from orchestrator.kohya.contract import load_contract
    from orchestrator.kohya.values import unknown_option_hint

    contract = load_contract()
    if option in contract.options or option in FIELDS:
        return  # kohya.<a medsynth setting> is refused by name once the layers are merged
    hint = unknown_option_hint(option, contract, prefix=KOHYA_PREFIX,
                               settings=[name for name in FIELDS if name != "kohya"])
    raise MedsynthError(f"{source}: '{KOHYA_PREFIX}{option}' is not an option of sd-scripts' "
                        f"sdxl_train_network.py{hint}")


def convert_value(key: str, value: Any, *, base: Path, source: str) -> Any:
    """Check one value against its field's type and convert it (paths resolved against `base`)."""
    if key.startswith(KOHYA_PREFIX):
        option = key[len(KOHYA_PREFIX):]
        if not _OPTION_NAME.match(option):
            raise MedsynthError(f"{source}: '{key}' is not a valid sd-scripts option name")
        _check_kohya_option(option, source)
        return value
    if key not in FIELDS or key == "kohya":
        raise MedsynthError(f"{source}: unknown train setting '{key}'{did_you_mean(key, FIELDS)} "
                            f"(other sd-scripts options go in as 'kohya.<option>')")
    kind = _type_name(key)
    where = f"{source}: '{key}'"
    if value is None:
        if "None" in kind:
            return None
        raise MedsynthError(f"{where} cannot be unset")
    if kind.startswith("Path"):
        if not isinstance(value, str) or not value:
            raise MedsynthError(f"{where} must be a non-empty path string, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if kind.startswith("tuple[str"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise MedsynthError(f"{where} must be a list of strings, got {value!r}")
        return tuple(items)
    if kind == "int | str":  # train_batch_size
        if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise MedsynthError(f"{where} must be a positive integer or \"auto\", got {value!r}")
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise MedsynthError(f"{where} must be an integer, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MedsynthError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise MedsynthError(f"{where} must be true or false, got {value!r}")
        return value
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise MedsynthError(f"{where} must be a string, got {value!r}")
        if key == "pretrained_model_name_or_path" and (base / value).exists():
            return str(base / value)  # a local file or folder, relative to the file or folder it was given in
        return value
    raise AssertionError(f"no converter for {key}: {kind}")  # a field added without a converter


def layer_from_mapping(values: Mapping[str, Any], *, base: Path, source: str) -> Layer:
    """Convert a [train] table (a nested `kohya` table is flattened to kohya.<option> keys)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "kohya":
            if not isinstance(value, Mapping):
                raise MedsynthError(f"{source}: 'kohya' must be a table of sd-scripts options")
            for option, v in value.items():
                out[KOHYA_PREFIX + option] = convert_value(KOHYA_PREFIX + option, v, base=base, source=source)
        elif key == "preset":
            continue  # chooses the preset; read by load_layers' caller
        else:
            out[key] = convert_value(key, value, base=base, source=source)
    return Layer(source, out)


def parse_set(assignments: Sequence[str], *, base: Path) -> Layer:
    """--set key=value items; the value is TOML value syntax (1e-4, true, "x", [1, 2]); a bare word is a string."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MedsynthError(f"setting {item!r}: expected key=value")
        value = _parse_value(text.strip(), key)
        if key == "kohya" or key == "preset":
            raise MedsynthError(f"setting {key!r}: use kohya.<option>=value for sd-scripts options; the preset is "
                                f"chosen by name, not set")
        out[key] = convert_value(key, value, base=base, source="--set")
    return Layer("--set", out)


def _parse_value(text: str, key: str) -> Any:
    if text == "":
        return None  # `--set vae=` unsets an optional key
    try:
        return toml.loads(f"v = {text}")["v"]
    except (toml.TomlDecodeError, IndexError, ValueError):
        if re.fullmatch(r"[^\s\"'\[\]{}=#]+", text):
            return text  # a bare word such as AdamW8bit or a path
        raise MedsynthError(f"setting {key!r}: cannot read value {text!r} (use TOML syntax: 1e-4, true, \"text\", [1, 2])")


def check_config(cfg: TrainConfig) -> None:
    """Range checks that the sd-scripts contract cannot express."""
    if cfg.lr_scaling not in LR_SCALINGS:
        raise MedsynthError(f"'lr_scaling' must be one of {', '.join(LR_SCALINGS)}, got {cfg.lr_scaling!r}"
                            f"{did_you_mean(cfg.lr_scaling, LR_SCALINGS)}")
    positive = ("network_dim", "max_train_epochs", "gradient_accumulation_steps", "save_every_n_epochs",
                "reference_batch_size", "sample_steps", "num_sample_prompts", "sample_width", "sample_height")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise MedsynthError(f"'{key}' must be >= 1, got {getattr(cfg, key)}")
    if not 0 <= cfg.seed < 2**32:  # sd-scripts hands it to numpy.random.seed, which raises outside this range
        raise MedsynthError(f"'seed' must be between 0 and {2**32 - 1}, got {cfg.seed}")
    if cfg.learning_rate <= 0:
        raise MedsynthError(f"'learning_rate' must be > 0, got {cfg.learning_rate}")
    if cfg.lr_warmup_images < 0 or (cfg.lr_warmup_steps is not None and cfg.lr_warmup_steps < 0):
        raise MedsynthError("warmup ('lr_warmup_steps' / 'lr_warmup_images') must be >= 0")
    if cfg.sample_every_n_epochs is not None and cfg.sample_every_n_epochs < 1:
        raise MedsynthError(f"'sample_every_n_epochs' must be >= 1, got {cfg.sample_every_n_epochs}")
    if cfg.resolution is not None and not 64 <= cfg.resolution <= 8192:
        raise MedsynthError(f"'resolution' must be between 64 and 8192, got {cfg.resolution}")
    if cfg.output_name is not None and not _OUTPUT_NAME.match(cfg.output_name):
        raise MedsynthError(f"'output_name' {cfg.output_name!r}: use letters, digits, '.', '_' or '-' "
                            f"(it becomes file names inside the run folder)")
    for key in ("save_last_n_epochs", "save_last_n_epochs_state"):
        # sd-scripts deletes epoch (now - save_every_n_epochs * N): with 0 that is the file it has just saved
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise MedsynthError(f"'{key}' must be >= 1 (0 deletes each epoch's file right after saving it); "
                                f"leave it unset to keep every epoch")
    if cfg.dynamo_mode is not None and cfg.dynamo_mode not in DYNAMO_MODES:
        raise MedsynthError(f"'dynamo_mode' must be one of {', '.join(DYNAMO_MODES)}, got {cfg.dynamo_mode!r}"
                            f"{did_you_mean(cfg.dynamo_mode, DYNAMO_MODES)}")
    if not cfg.torch_compile:  # sd-scripts reads these only when it compiles: otherwise they would do nothing
        for key, unset in (("dynamo_backend", None), ("dynamo_mode", None), ("dynamo_dynamic", False)):
            if getattr(cfg, key) != unset:
                raise MedsynthError(f"'{key}' takes effect only with torch_compile = true (set it, or drop '{key}')")
    _check_validation(cfg)
    if cfg.sample_prompts and cfg.sample_prompts_file is not None:
        raise MedsynthError("set either 'sample_prompts' or 'sample_prompts_file', not both")


def _check_validation(cfg: TrainConfig) -> None:
    if not 0 <= cfg.validation_split < 1:  # sd-scripts only warns outside [0, 1] and 1 leaves nothing to train on
        raise MedsynthError(f"'validation_split' must be at least 0 and below 1 (the share of images held out), "
                            f"got {cfg.validation_split}")
    for key in ("validate_every_n_epochs", "validate_every_n_steps", "max_validation_steps"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise MedsynthError(f"'{key}' must be >= 1, got {getattr(cfg, key)}")
    if cfg.validation_seed is not None and not 0 <= cfg.validation_seed < 2**32:
        raise MedsynthError(f"'validation_seed' must be between 0 and {2**32 - 1}, got {cfg.validation_seed}")
    if cfg.validation_split == 0:  # sd-scripts builds no validation set: these would do nothing
        for key in VALIDATION_FIELDS:
            if getattr(cfg, key) is not None:
                raise MedsynthError(f"'{key}' takes effect only with validation_split > 0 (set it, e.g. "
                                    f"validation_split=0.1, or drop '{key}')")


def config_as_dict(cfg: TrainConfig) -> dict[str, Any]:
    """JSON-friendly view (paths as strings) for run.json."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out
