"""The typed run configuration of `medsynth train`: field defaults < preset < medsynth.toml [train] < --set.

Keys are sd-scripts' own option names where a value goes straight into the training TOML, so a user who knows
sd-scripts knows the key. A few keys are medsynth's own (they shape what gets rendered): `lr_scaling`,
`reference_batch_size`, `lr_warmup_images`, the `sample_*` prompt settings, `dataset`, `runs_dir`,
`dynamo_mode`/`dynamo_dynamic` (they go to `accelerate launch`, which hands them to torch.compile), and
`expandable_segments` (PyTorch's allocator setting, which only the environment carries).
Any other sd-scripts option can be passed through as `kohya.<option>` (a `[train.kohya]` table in
medsynth.toml, `--set kohya.noise_offset=0.05` on the command line); those are checked against the
pinned sd-scripts contract when the rendered file is validated, not here.

Batch size "auto" (the `default` preset) is resolved at launch from the GPU's memory with the preset's
`[[batch_tiers]]` table; see `choose_batch`. A tier may carry more train settings (the optimizer, VAE batch, ...)
that apply with it unless the user set them.
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
from orchestrator.common.paths import PRESETS_DIR  # noqa: F401  (the packaged presets; kept as config.PRESETS_DIR)
from orchestrator.common.suggest import did_you_mean

DEFAULT_PRESET = "default"
AUTO = "auto"
LR_SCALINGS = ("none", "sqrt", "linear")
DYNAMO_MODES = ("default", "reduce-overhead", "max-autotune")  # what accelerate 1.6.0's launcher accepts
_KOHYA_PREFIX = "kohya."
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


@dataclass(frozen=True)
class BatchTier:
    """At least `min_gpu_gib` of GPU memory -> this batch size and gradient checkpointing setting, plus any other
    train settings the tier carries (`settings`, converted like a [train] table)."""

    min_gpu_gib: float
    train_batch_size: int
    gradient_checkpointing: bool
    note: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    description: str
    min_gpu_gib: float
    values: Mapping[str, Any]                      # converted [train] table
    batch_tiers: tuple[BatchTier, ...]


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
    from orchestrator.kohya import validate  # the contract is read only once a kohya.* key is given

    contract = validate.load_contract()
    if option in contract.options or option in FIELDS:
        return  # kohya.<a medsynth setting> is refused by name once the layers are merged
    hint = validate.unknown_option_hint(option, contract, prefix=_KOHYA_PREFIX,
                                        settings=[name for name in FIELDS if name != "kohya"])
    raise MedsynthError(f"{source}: '{_KOHYA_PREFIX}{option}' is not an option of sd-scripts' "
                        f"sdxl_train_network.py{hint}")


def convert_value(key: str, value: Any, *, base: Path, source: str) -> Any:
    """Check one value against its field's type and convert it (paths resolved against `base`)."""
    if key.startswith(_KOHYA_PREFIX):
        option = key[len(_KOHYA_PREFIX):]
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
                out[_KOHYA_PREFIX + option] = convert_value(_KOHYA_PREFIX + option, v, base=base, source=source)
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
            raise MedsynthError(f"--set {item!r}: expected key=value")
        value = _parse_value(text.strip(), key)
        source = f"--set {key}"
        if key == "kohya" or key == "preset":
            raise MedsynthError(f"{source}: use kohya.<option>=value / --preset NAME")
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
        raise MedsynthError(f"--set {key}: cannot read value {text!r} (use TOML syntax: 1e-4, true, \"text\", [1, 2])")


# ----------------------------------------------------------------------------------------------- presets

def preset_names(folder: Path | None = None) -> list[str]:
    """The packaged presets and those in <project folder>/templates/presets."""
    return sorted({p.stem for d in paths.preset_dirs(folder) for p in d.glob("*.toml")})


def load_preset(name: str, presets_dir: Path | None = None, *, folder: Path | None = None) -> Preset:
    """templates/presets/<name>.toml: the project folder's own (`folder`, default the current project folder)
    before the packaged one; only `presets_dir` when given."""
    dirs = [presets_dir] if presets_dir is not None else paths.preset_dirs(folder)
    path = next((d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()), dirs[0] / f"{name}.toml")
    if not path.is_file():
        names = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
        raise MedsynthError(f"unknown preset '{name}'{did_you_mean(name, names)} (available: {', '.join(names)})")
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except (OSError, toml.TomlDecodeError) as exc:
        raise MedsynthError(f"{path}: cannot read preset: {exc}") from exc
    allowed = ("description", "min_gpu_gib", "train", "batch_tiers")
    for key in data:
        if key not in allowed:
            raise MedsynthError(f"{path}: unknown preset key '{key}'{did_you_mean(key, allowed)}")
    layer = layer_from_mapping(data.get("train", {}), base=path.parent, source=f"{path} [train]")
    tiers = tuple(_tier(t, path) for t in data.get("batch_tiers", []))
    if layer.values.get("train_batch_size") == AUTO and not tiers:
        raise MedsynthError(f"{path}: train_batch_size = \"auto\" needs a [[batch_tiers]] table")
    return Preset(name, path, str(data.get("description", "")), float(data.get("min_gpu_gib", 0)),
                  layer.values, tuple(sorted(tiers, key=lambda t: -t.min_gpu_gib)))


_TIER_KEYS = ("min_gpu_gib", "train_batch_size", "gradient_checkpointing", "note")
# settings that belong together: a tier's optimizer_args (fused=True) would break an optimizer the user chose
_TOGETHER = ({"optimizer_type", "optimizer_args"},)


def _tier(table: Any, path: Path) -> BatchTier:
    if not isinstance(table, Mapping):
        raise MedsynthError(f"{path}: bad [[batch_tiers]] entry {table!r}: not a table")
    own = {k: v for k, v in table.items() if k in _TIER_KEYS}
    try:
        tier = BatchTier(**own)
    except TypeError as exc:
        raise MedsynthError(f"{path}: bad [[batch_tiers]] entry {table!r}: {exc}") from exc
    if not isinstance(tier.train_batch_size, int) or tier.train_batch_size < 1:
        raise MedsynthError(f"{path}: [[batch_tiers]] train_batch_size must be a positive integer")
    source = f"{path} [[batch_tiers]] min_gpu_gib = {tier.min_gpu_gib:g}"
    rest = {k: v for k, v in table.items() if k not in _TIER_KEYS}
    settings = layer_from_mapping(rest, base=path.parent, source=source).values  # unknown keys: did-you-mean
    if "preset" in rest:
        raise MedsynthError(f"{source}: 'preset' cannot be set per tier")
    for key in settings:
        if key.startswith(_KOHYA_PREFIX) and key[len(_KOHYA_PREFIX):] in FIELDS:
            raise MedsynthError(f"{source}: '{key}' is a medsynth setting: set '{key[len(_KOHYA_PREFIX):]}' instead")
    return dataclasses.replace(tier, settings=settings)


# ----------------------------------------------------------------------------------------------- resolving

@dataclass(frozen=True)
class BatchChoice:
    """The batch size used and why: 'set' (explicit), 'tier' (from GPU memory), 'no-gpu' (smallest tier)."""

    train_batch_size: int
    gradient_checkpointing: bool
    how: str
    explanation: str


def choose_batch(tiers: Sequence[BatchTier], gpu_gib: float | None) -> tuple[BatchTier, bool]:
    """The first tier (largest first) the GPU's memory reaches; with no GPU, the smallest tier. -> (tier, gpu_seen)."""
    ordered = sorted(tiers, key=lambda t: -t.min_gpu_gib)
    if gpu_gib is None:
        return ordered[-1], False
    for tier in ordered:
        if gpu_gib >= tier.min_gpu_gib:
            return tier, True
    return ordered[-1], True


def tier_table(tiers: Sequence[BatchTier]) -> str:
    return ", ".join(f"≥{t.min_gpu_gib:g} GiB→{t.train_batch_size}{'+ckpt' if t.gradient_checkpointing else ''}"
                     for t in sorted(tiers, key=lambda t: -t.min_gpu_gib))


def merge_layers(preset: Preset, layers: Sequence[Layer]) -> tuple[TrainConfig, set[str]]:
    """Apply preset then layers over the field defaults; return the config and the keys set by the user layers."""
    merged: dict[str, Any] = dict(preset.values)
    user_keys: set[str] = set()
    for layer in layers:
        merged.update(layer.values)
        user_keys.update(layer.values)
    kohya = {k[len(_KOHYA_PREFIX):]: merged.pop(k) for k in list(merged) if k.startswith(_KOHYA_PREFIX)}
    kohya = {k: v for k, v in kohya.items() if v is not None}
    overlap = sorted(set(kohya) & set(FIELDS))
    if overlap:
        raise MedsynthError(f"'kohya.{overlap[0]}' is a medsynth setting: set '{overlap[0]}' instead")
    cfg = TrainConfig(**merged, kohya=kohya)
    _check(cfg)
    if cfg.train_batch_size == AUTO and not preset.batch_tiers:
        raise MedsynthError(f"train_batch_size = \"auto\": preset {preset.name} has no [[batch_tiers]] table to "
                            f"choose from ({preset.path}): set a number, or use --preset default")
    return cfg, user_keys


def resolve_batch(cfg: TrainConfig, preset: Preset, user_keys: set[str], gpu_gib: float | None,
                  gpu_desc: str = "") -> tuple[TrainConfig, BatchChoice]:
    """Replace train_batch_size "auto" by a number, and gradient checkpointing and the tier's other settings by
    the tier's, where the user did not set them."""
    if cfg.train_batch_size != AUTO:
        how = "set" if "train_batch_size" in user_keys else "preset"
        origin = "--set/medsynth.toml" if how == "set" else f"preset {preset.name}"
        return cfg, BatchChoice(int(cfg.train_batch_size), cfg.gradient_checkpointing, how,
                                f"{cfg.train_batch_size} ({origin})")
    tier, seen = choose_batch(preset.batch_tiers, gpu_gib)
    ckpt = cfg.gradient_checkpointing if "gradient_checkpointing" in user_keys else tier.gradient_checkpointing
    cfg = dataclasses.replace(cfg, train_batch_size=tier.train_batch_size, gradient_checkpointing=ckpt)
    # a key the user set keeps the user's value, and takes the keys that only make sense with the tier's along
    taken = set(user_keys) | {k for group in _TOGETHER if user_keys & group for k in group}
    applied = {k: v for k, v in tier.settings.items() if k not in taken}
    cfg = _with_settings(cfg, applied)
    extra = "".join(f", {k} {_show(v)}" for k, v in applied.items())
    if seen:
        text = (f"auto: {tier.train_batch_size} for {gpu_gib:.0f} GiB {gpu_desc}".rstrip()
                + f" (tier ≥{tier.min_gpu_gib:g} GiB, gradient checkpointing {'on' if ckpt else 'off'}{extra})")
        return cfg, BatchChoice(tier.train_batch_size, ckpt, "tier", text)
    text = (f"auto (no GPU visible: would use {tier.train_batch_size}{extra} here; at launch it comes from GPU "
            f"memory: {tier_table(preset.batch_tiers)})")
    return cfg, BatchChoice(tier.train_batch_size, ckpt, "no-gpu", text)


def _with_settings(cfg: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """cfg with converted train settings applied (kohya.<option> keys go into its kohya table), re-checked."""
    if not values:
        return cfg
    kohya = dict(cfg.kohya)
    plain = {}
    for key, value in values.items():
        if key.startswith(_KOHYA_PREFIX):
            kohya[key[len(_KOHYA_PREFIX):]] = value
        else:
            plain[key] = value
    cfg = dataclasses.replace(cfg, **plain, kohya={k: v for k, v in kohya.items() if v is not None})
    _check(cfg)
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check(cfg: TrainConfig) -> None:
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
    if cfg.sample_prompts and cfg.sample_prompts_file is not None:
        raise MedsynthError("set either 'sample_prompts' or 'sample_prompts_file', not both")


# ----------------------------------------------------------------------------------------------- schedule

@dataclass(frozen=True)
class Schedule:
    """The step arithmetic of a run, as printed by --dry-run and stored in run.json."""

    images: int
    repeats: int
    batch_size: int
    num_processes: int
    gradient_accumulation_steps: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    learning_rate: float
    lr_note: str

    def describe(self) -> str:
        per = f"{self.batch_size}" + (f" × {self.num_processes} processes" if self.num_processes > 1 else "") \
            + (f" × {self.gradient_accumulation_steps} accumulation" if self.gradient_accumulation_steps > 1 else "")
        images = self.warmup_steps * self.batch_size * self.gradient_accumulation_steps
        unit = "steps" if self.num_processes == 1 else \
            f"scheduler steps (sd-scripts steps the scheduler {self.num_processes}× per optimizer step)"
        return "\n".join([
            f"steps: {self.images} images × {self.repeats} repeats ÷ batch {per} = {self.steps_per_epoch} steps/epoch"
            f" × {self.epochs} epochs = {self.total_steps} steps"
            " (bucketing can add up to one partial batch per bucket and epoch)",
            f"warmup: {self.warmup_steps} {unit} ({images} images)"
            + ("  WARNING: warmup is not shorter than the run"
               if self.warmup_steps >= self.total_steps * self.num_processes else ""),
            f"learning rate: {self.learning_rate:.3g} ({self.lr_note})",
        ])


def schedule(cfg: TrainConfig, *, images: int, repeats: int, num_processes: int = 1) -> Schedule:
    """Steps, warmup and the effective learning rate for a resolved (numeric batch) config.

    Rules (docs/training.md): epochs count images seen, so they do not change with the batch; warmup is
    counted in images (lr_warmup_images) unless lr_warmup_steps is set; the learning rate is given at
    reference_batch_size and scaled to the effective batch by lr_scaling (sqrt or linear) or not at all.
    sd-scripts counts lr_warmup_steps in scheduler steps, and steps the scheduler once per process per
    optimizer step (num_training_steps = max_train_steps × num_processes), so the processes cancel out.
    """
    batch = int(cfg.train_batch_size)
    effective = batch * num_processes * cfg.gradient_accumulation_steps
    per_epoch = max(1, math.ceil(images * repeats / effective))
    total = per_epoch * cfg.max_train_epochs
    if cfg.lr_warmup_steps is not None:
        warmup = cfg.lr_warmup_steps
    elif cfg.lr_scheduler == "constant":
        warmup = 0  # sd-scripts refuses warmup with the constant scheduler
    else:
        warmup = math.ceil(cfg.lr_warmup_images / (batch * cfg.gradient_accumulation_steps))
    ratio = effective / cfg.reference_batch_size
    factor = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[cfg.lr_scaling]
    lr = cfg.learning_rate * factor
    note = (f"{cfg.learning_rate:.3g} at batch {cfg.reference_batch_size}, {cfg.lr_scaling} scaling to {effective}"
            if cfg.lr_scaling != "none" else "not scaled with the batch")
    return Schedule(images, repeats, batch, num_processes, cfg.gradient_accumulation_steps, cfg.max_train_epochs,
                    per_epoch, total, warmup, lr, note)


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


# ----------------------------------------------------------------------------------------------- loading

@dataclass(frozen=True)
class Settings:
    """The inputs of a run before the GPU is known: preset, the user's layers, the merged config."""

    preset: Preset
    layers: tuple[Layer, ...]
    config: TrainConfig
    user_keys: frozenset[str]


def load_settings(*, preset_name: str | None = None, project: Path | None = None,
                  project_tables: Mapping[str, Mapping[str, Any]] | None = None, sets: Sequence[str] = (),
                  options: Mapping[str, Any] | None = None, cwd: Path) -> Settings:
    """Preset < medsynth.toml [train] < command-line shortcuts (--dataset, --model) < --set.

    `project_tables` is the parsed project file (orchestrator.common.project_file); its [dataset] `out` is the
    default dataset, so `medsynth train` trains on what `medsynth dataset build` wrote.
    """
    layers: list[Layer] = []
    train_table = dict((project_tables or {}).get("train", {}))
    base = project.parent.resolve() if project is not None else cwd
    paths.set_project_dir(base)  # the rendered templates come from here too (<base>/templates before the packaged)
    if project is not None:
        dataset_out = (project_tables or {}).get("dataset", {}).get("out")
        if isinstance(dataset_out, str) and "dataset" not in train_table:
            train_table["dataset"] = dataset_out
        layers.append(layer_from_mapping(train_table, base=base, source=f"{project} [train]"))
    name = preset_name or train_table.get("preset") or DEFAULT_PRESET
    if not isinstance(name, str):
        raise MedsynthError(f"{project} [train]: 'preset' must be a preset name, got {name!r}")
    preset = load_preset(name, folder=base)
    if options:
        layers.append(layer_from_mapping({k: v for k, v in options.items() if v is not None}, base=cwd,
                                         source="command line"))
    if sets:
        layers.append(parse_set(sets, base=cwd))
    cfg, user_keys = merge_layers(preset, layers)
    if "runs_dir" not in user_keys and "runs_dir" not in preset.values:
        cfg = dataclasses.replace(cfg, runs_dir=paths.default_runs_dir(base))  # beside the project file, else ./runs
    return Settings(preset, tuple(layers), cfg, frozenset(user_keys))
