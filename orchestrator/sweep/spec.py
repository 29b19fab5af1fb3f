"""A sweep file (SWEEP.toml): a base preset, settings shared by every run, and a grid or a list of runs.

    name = "lr-optimizer"              # the folder runs/<name>/ (default: the file's name)
    preset = "default"                 # the base preset (default: medsynth.toml's, else "default")
    dataset = "../datasets/melanoma"   # optional; relative to this file
    [fixed]                            # applied to every run
    max_train_epochs = 10
    [grid]                             # every combination (the first key changes slowest) ...
    learning_rate = [4e-7, 1e-5, 8e-5]
    optimizer_type = ["AdamW8bit", "Adafactor"]
    # ... or instead an explicit list, each table one run (`run_name` names it):
    # [[runs]]
    # learning_rate = 1e-5

Keys are `medsynth train --set` keys, converted and checked by orchestrator.train.config (unknown key -> did you
mean, wrong type -> the key), with `kohya.<option>` (or a [grid.kohya] / [fixed.kohya] table) for other
sd-scripts options. Run names are made from the values that vary: `lr4e-07_AdamW8bit_cosine`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import toml

from orchestrator.train.config import Layer, convert_value, layer_from_mapping
from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean

TOP_KEYS = ("name", "description", "preset", "dataset", "fixed", "grid", "runs")
RUN_NAME_KEY = "run_name"
MAX_NAME = 96
# short prefixes for numeric settings in run names; strings stand for themselves (AdamW8bit, cosine)
ABBREVIATIONS = {
    "learning_rate": "lr", "network_dim": "dim", "network_alpha": "alpha", "max_train_epochs": "ep",
    "train_batch_size": "bs", "resolution": "res", "gradient_accumulation_steps": "ga", "lr_warmup_images": "warm",
    "lr_warmup_steps": "warmsteps", "network_dropout": "drop", "max_grad_norm": "clip", "seed": "seed",
    "reference_batch_size": "refbs", "save_every_n_epochs": "save",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PATH_KEYS = ("dataset", "vae", "pretrained_model_name_or_path", "tokenizer_cache_dir", "sample_prompts_file")


@dataclass(frozen=True)
class SweepRun:
    """One run: its folder name, the values that vary across the sweep (as written), and all its own values."""

    name: str
    params: Mapping[str, Any]   # the varying keys only, as written in the file (for names, tables, sweep.json)
    layer: Layer                # every value this run sets, converted


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    description: str
    preset: str | None
    base: Layer                 # `dataset` of the file (empty when not given)
    fixed: Layer
    runs: tuple[SweepRun, ...]
    varying: tuple[str, ...]


def read_sweep(path: Path) -> Sweep:
    """Read, check and expand a sweep file (nothing is rendered here)."""
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read the sweep file: {exc.strerror}") from exc
    except toml.TomlDecodeError as exc:
        raise MedsynthError(f"{path}: not valid TOML: {exc}") from exc
    for key in data:
        if key not in TOP_KEYS:
            raise MedsynthError(f"{path}: unknown sweep key '{key}'{did_you_mean(key, TOP_KEYS)} "
                                f"(training settings go in [fixed], [grid] or [[runs]])")
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        given = "" if "name" in data else " (from the file name: set name = \"...\" in the file)"
        raise MedsynthError(f"{path}: 'name' {name!r}{given} becomes a folder: use letters, digits, '.', '_' or '-'")
    preset = data.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise MedsynthError(f"{path}: 'preset' must be a preset name, got {preset!r}")
    base_dir = path.parent.resolve()
    base = layer_from_mapping({"dataset": data["dataset"]} if "dataset" in data else {}, base=base_dir,
                              source=f"{path}")
    fixed = layer_from_mapping(_table(data.get("fixed", {}), path, "[fixed]"), base=base_dir, source=f"{path} [fixed]")
    for where in ("fixed", "grid"):
        if isinstance(data.get(where), Mapping) and "preset" in data[where]:
            raise MedsynthError(f"{path}: set 'preset' at the top of the file, not in [{where}]")
    if ("grid" in data) == ("runs" in data):
        raise MedsynthError(f"{path}: give either a [grid] table or a list of [[runs]] (exactly one of them)")
    if "grid" in data:
        combos = _expand_grid(_table(data["grid"], path, "[grid]"), path, base_dir)
    else:
        combos = _explicit_runs(data["runs"], path, base_dir)
    for values, _ in combos:
        both = sorted(set(values) & set(fixed.values))
        if both:
            raise MedsynthError(f"{path}: '{both[0]}' is in [fixed] and varies too: keep it in one place")
    varying = _varying([raw for _, raw in combos])
    runs = _name_runs(combos, varying, path)
    return Sweep(path, name, str(data.get("description", "")), preset, base, fixed, tuple(runs), tuple(varying))


def _table(value: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise MedsynthError(f"{path}: {where} must be a table of training settings")
    return dict(value)


def _flatten(table: Mapping[str, Any], path: Path, where: str) -> dict[str, Any]:
    """A nested `kohya` table becomes kohya.<option> keys, as in medsynth.toml."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "kohya":
            for option, v in _table(value, path, f"{where} kohya").items():
                out[f"kohya.{option}"] = v
        else:
            out[key] = value
    return out


def _expand_grid(grid: Mapping[str, Any], path: Path, base_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every combination, first key slowest -> [(converted values, raw values)]."""
    flat = _flatten(grid, path, "[grid]")
    if not flat:
        raise MedsynthError(f"{path}: [grid] is empty")
    axes: list[list[tuple[Any, Any]]] = []
    for key, values in flat.items():
        if key == RUN_NAME_KEY:
            raise MedsynthError(f"{path}: [grid] cannot hold '{RUN_NAME_KEY}' (names come from the values)")
        if not isinstance(values, list) or not values:
            raise MedsynthError(f"{path} [grid]: '{key}' must be a non-empty list of values, got {values!r} "
                                f"(one value for every run goes in [fixed])")
        axes.append([(convert_value(key, v, base=base_dir, source=f"{path} [grid]"), v) for v in values])
    keys = list(flat)
    return [({k: c for k, (c, _) in zip(keys, combo)}, {k: r for k, (_, r) in zip(keys, combo)})
            for combo in itertools.product(*axes)]


def _explicit_runs(runs: Any, path: Path, base_dir: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    if not isinstance(runs, list) or not runs or not all(isinstance(r, Mapping) for r in runs):
        raise MedsynthError(f"{path}: [[runs]] must be a non-empty list of tables")
    out = []
    for i, table in enumerate(runs, 1):
        raw = _flatten(table, path, f"[[runs]] #{i}")
        named = raw.pop(RUN_NAME_KEY, None)
        layer = layer_from_mapping(raw, base=base_dir, source=f"{path} [[runs]] #{i}")
        if named is not None:
            if not isinstance(named, str) or not _NAME.match(named):
                raise MedsynthError(f"{path} [[runs]] #{i}: '{RUN_NAME_KEY}' {named!r}: use letters, digits, '.', "
                                    f"'_' or '-'")
            raw[RUN_NAME_KEY] = named
        out.append((dict(layer.values), raw))
    return out


def _varying(raws: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose value differs between runs (or that only some runs set), in first-seen order."""
    keys: list[str] = []
    for raw in raws:
        keys += [k for k in raw if k not in keys and k != RUN_NAME_KEY]
    missing = object()
    return [k for k in keys if len({json.dumps(r.get(k, missing), default=repr, sort_keys=True) for r in raws}) > 1]


def name_part(key: str, value: Any) -> str:
    """One setting's piece of a run name: lr4e-07, AdamW8bit, dim64, flip_aug / no-flip_aug."""
    short = ABBREVIATIONS.get(key, key.removeprefix("kohya."))
    if value is None:
        text = f"no-{short}"
    elif isinstance(value, bool):
        text = short if value else f"no-{short}"
    elif isinstance(value, (int, float)):
        text = f"{short}{value:g}" if isinstance(value, float) else f"{short}{value}"
    elif isinstance(value, list):
        text = f"{short}-" + "+".join(map(str, value)) if value else f"no-{short}"
    elif key in _PATH_KEYS:
        text = Path(str(value)).name
    else:
        text = str(value)
    return _UNSAFE.sub("-", text).strip("-.") or short


def _name_runs(combos: Sequence[tuple[dict[str, Any], dict[str, Any]]], varying: Sequence[str],
               path: Path) -> list[SweepRun]:
    """Readable, filesystem-safe, unique names; a clash gets -2, -3 ... (compared ignoring case, as macOS does)."""
    runs: list[SweepRun] = []
    taken: set[str] = set()
    explicit = [raw[RUN_NAME_KEY] for _, raw in combos if RUN_NAME_KEY in raw]
    dupes = [n for n in explicit if [e.casefold() for e in explicit].count(n.casefold()) > 1]
    if dupes:
        raise MedsynthError(f"{path}: run_name '{dupes[0]}' is used by more than one run")
    reserved = {n.casefold() for n in explicit}
    for values, raw in combos:
        params = {k: raw[k] for k in varying if k in raw}
        if RUN_NAME_KEY in raw:
            name = raw[RUN_NAME_KEY]
        else:
            name = "_".join(name_part(k, v) for k, v in params.items()) or "base"
            if len(name) > MAX_NAME:  # keep it a usable folder name; the hash keeps it distinct
                digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=repr).encode()).hexdigest()[:8]
                name = f"{name[:MAX_NAME - 9].rstrip('-._')}-{digest}"
            stem, n = name, 1
            while name.casefold() in taken or name.casefold() in reserved:
                n += 1
                name = f"{stem}-{n}"
        taken.add(name.casefold())
        runs.append(SweepRun(name, params, Layer(f"{path} run {name}", values)))
    return runs


def describe_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in params.items()) or "(base settings)"
