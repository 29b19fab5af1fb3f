"""The layered settings of a run: field defaults < preset < medsynth.toml [train] < --set, and the batch choice.

Batch size "auto" (the `default` preset) is resolved at launch from the GPU's memory with the preset's
`[[batch_tiers]]` table; see `choose_batch`. A tier may carry more train settings (the optimizer, VAE batch, ...)
that apply with it unless the user set them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toml

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean
from orchestrator.train.config import (AUTO, DEFAULT_PRESET, FIELDS, KOHYA_PREFIX, Layer, TrainConfig, check_config, layer_from_mapping, parse_set)

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
        if key.startswith(KOHYA_PREFIX) and key[len(KOHYA_PREFIX):] in FIELDS:
            raise MedsynthError(f"{source}: '{key}' is a medsynth setting: set '{key[len(KOHYA_PREFIX):]}' instead")
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
    kohya = {k[len(KOHYA_PREFIX):]: merged.pop(k) for k in list(merged) if k.startswith(KOHYA_PREFIX)}
    kohya = {k: v for k, v in kohya.items() if v is not None}
    overlap = sorted(set(kohya) & set(FIELDS))
    if overlap:
        raise MedsynthError(f"'kohya.{overlap[0]}' is a medsynth setting: set '{overlap[0]}' instead")
    cfg = TrainConfig(**merged, kohya=kohya)
    check_config(cfg)
    if cfg.train_batch_size == AUTO and not preset.batch_tiers:
        raise MedsynthError(f"train_batch_size = \"auto\": preset {preset.name} has no [[batch_tiers]] table to "
                            f"choose from ({preset.path}): set a number, or use the default preset")
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
        if key.startswith(KOHYA_PREFIX):
            kohya[key[len(KOHYA_PREFIX):]] = value
        else:
            plain[key] = value
    cfg = dataclasses.replace(cfg, **plain, kohya={k: v for k, v in kohya.items() if v is not None})
    check_config(cfg)
    return cfg


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


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
