"""Reading a run or a sweep for `medsynth review`: the sampling points a run's settings ask for, the training
images beside each prompt, the key settings (run.json, train.toml for what it lacks), and a sweep's runs
(sweep.json, else the run folders inside). The run folder itself is read by orchestrator.runs.facts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.runs.facts import Prompt, RunFacts
from orchestrator.runs.folder import lora_files
from orchestrator.runs.outputs import Column
from orchestrator.runs.record import is_run_dir, run_dirs_in
from orchestrator.runs.sweep_record import SweepListing, is_sweep_record_dir, read_sweep_record
from orchestrator.runs.tfevents import Point
from orchestrator.runs.validation import best_epoch
from orchestrator.dataset.age import age_band


# ----------------------------------------------------------------------------------------------- a run

def expected_columns(facts: RunFacts) -> list[Column]:
    """The sampling points the run's settings ask for (sd-scripts: sample_images in train_util)."""
    t, schedule = facts.train, facts.record.get("schedule") or {}
    columns = [Column("epoch", 0)] if t.get("sample_at_first") else []
    every_epochs, every_steps = t.get("sample_every_n_epochs"), t.get("sample_every_n_steps")
    if every_epochs:  # wins over sample_every_n_steps
        epochs = t.get("max_train_epochs") or schedule.get("epochs")
        if epochs:
            columns += [Column("epoch", e) for e in range(every_epochs, int(epochs) + 1, every_epochs)]
    elif every_steps:
        steps = schedule.get("total_steps") or t.get("max_train_steps")
        if steps:
            columns += [Column("step", s) for s in range(every_steps, int(steps) + 1, every_steps)]
    return columns


@dataclass(frozen=True)
class Reference:
    image_id: str
    path: Path
    caption: str


@dataclass(frozen=True)
class References:
    """Training images of the (sex, site, age band) a prompt was made from."""

    group: str | None
    images: tuple[Reference, ...]
    total: int


def _group_label(key: tuple[str, str, str]) -> str:
    return " / ".join(part or "?" for part in key)


def read_references(dataset_dir: Path, prompts: Sequence[Prompt], per_prompt: int) -> dict[int, References]:
    """Per prompt index: the training images sharing the prompt's (sex, site, age band). The group is that of
    the images whose caption is the prompt text (medsynth's prompts are the group's most frequent caption)."""
    manifest = dataset_dir / "manifest.csv"
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("status") == "ok" and r.get("output_path")]
    except OSError:
        return {}
    if rows and not {"caption", "sex", "site", "age"} <= set(rows[0]):
        raise MedsynthError(f"{manifest}: lacks caption/sex/site/age columns: rebuild the dataset")

    def key(row: Mapping[str, str]) -> tuple[str, str, str]:
        return (row["sex"] or "", row["site"] or "", age_band(row["age"]) or "")

    out = {}
    for prompt in prompts:
        keys = Counter(key(r) for r in rows if r["caption"] == prompt.text)
        if not keys:
            out[prompt.index] = References(None, (), 0)
            continue
        group = min(keys, key=lambda k: (-keys[k], k))
        members = sorted((r for r in rows if key(r) == group), key=lambda r: r["image_id"])
        images = tuple(Reference(r["image_id"], dataset_dir / r["output_path"], r["caption"])
                       for r in members[:per_prompt])
        out[prompt.index] = References(_group_label(group), images, len(members))
    return out


def read_masked_images(dataset_dir: Path, count: int) -> tuple[Path, ...]:
    """The first `count` training images (by image id) that carry a loss mask as alpha: the PNGs of a dataset
    built with --masks (orchestrator.dataset.masks)."""
    try:
        with (dataset_dir / "manifest.csv").open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("status") == "ok"
                    and (r.get("output_path") or "").endswith(".png")]
    except OSError:
        return ()
    return tuple(dataset_dir / r["output_path"] for r in sorted(rows, key=lambda r: r["image_id"])[:count])


def _fmt(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def final_value(scalars: Mapping[str, list[Point]], tag: str) -> float | None:
    points = scalars.get(tag)
    return points[-1].value if points else None


def _best_text(best: Point | None) -> str:
    return "- (none logged)" if best is None else \
        f"{best.value:.4g} at epoch {best.step}"


def _batch_text(batch: Any, explanation: str | None) -> str:
    """run.json's explanation already starts with the size ("12 (H200 tier ...)"); else add it in brackets."""
    if explanation and str(explanation).startswith(str(batch)):
        return str(explanation)
    return _fmt(batch) + (f" ({explanation})" if explanation else "")


def run_settings(facts: RunFacts, scalars: Mapping[str, list[Point]]) -> tuple[tuple[str, str], ...]:
    """The run's key settings, labelled, from run.json (train.toml for what run.json lacks)."""
    r, t = facts.record, facts.train
    cfg, sched, dataset = r.table("config"), r.table("schedule"), r.table("dataset")
    status = facts.status if r.get("status") == "running" else _fmt(r.get("status"))
    if r.get("exit_code") not in (None, 0):
        status += f" (exit code {r['exit_code']})"
    lr = sched.get("learning_rate", t.get("learning_rate"))
    batch = sched.get("batch_size", t.get("train_batch_size"))
    epochs = sched.get("epochs", t.get("max_train_epochs"))
    loras = [p.name for p in lora_files(facts.run_dir, facts.output_name)] if facts.output_name else []
    rows = [
        ("run", facts.name),
        ("status", status),
        ("preset", _fmt(r.get("preset"))),
        ("learning rate", _fmt(lr) + (f" ({sched['lr_note']})" if sched.get("lr_note") else "")),
        ("batch size", _batch_text(batch, r.table("batch").get("explanation"))),
        ("epochs", _fmt(epochs) + (f" ({sched['total_steps']} steps)" if sched.get("total_steps") else "")),
        ("optimizer", " ".join([_fmt(t.get("optimizer_type", cfg.get("optimizer_type")))]
                               + [str(a) for a in t.get("optimizer_args", cfg.get("optimizer_args")) or []])),
        ("scheduler", _fmt(t.get("lr_scheduler", cfg.get("lr_scheduler")))
         + (f", {t['lr_warmup_steps']} warmup steps" if t.get("lr_warmup_steps") else "")),
        ("network", f"{_fmt(t.get('network_module', cfg.get('network_module')))} dim "
                    f"{_fmt(t.get('network_dim', cfg.get('network_dim')))} alpha "
                    f"{_fmt(t.get('network_alpha', cfg.get('network_alpha')))}"),
        ("resolution", _fmt(t.get("resolution"))),
        ("mixed precision", _fmt(t.get("mixed_precision", cfg.get("mixed_precision")))),
        ("seed", _fmt(t.get("seed", r.get("seed")))),
        ("dataset", f"{_fmt(dataset.get('path'))} ({_fmt(dataset.get('images'))} images x "
                    f"{_fmt(dataset.get('repeats'))} repeats)"),
        ("sampler", f"{_fmt(t.get('sample_sampler', cfg.get('sample_sampler')))}, "
                    f"{_fmt(cfg.get('sample_steps'))} steps, CFG {_fmt(cfg.get('sample_cfg_scale'))}"),
        ("final loss (average)", _fmt(final_value(scalars, "loss/average"))),
        ("last epoch average loss", _fmt(final_value(scalars, "loss/epoch_average"))),
        ("lowest validation loss", _best_text(best_epoch(scalars))),
        ("LoRA files", ", ".join(loras) or "-"),
        ("created", _fmt(r.get("created_at"))),
    ]
    return tuple(rows)


# ----------------------------------------------------------------------------------------------- a sweep

def is_sweep_dir(path: Path) -> bool:
    return is_sweep_record_dir(path) or (
        not is_run_dir(path) and bool(run_dirs_in(path)))


def sweep_listing(root: Path) -> tuple[str, list[SweepListing]]:
    """(sweep name, its runs) from sweep.json, else the run folders inside (no params, no status)."""
    if is_sweep_record_dir(root):
        record = read_sweep_record(root)
        return record.name, list(record.runs)
    return root.name, [SweepListing(d.name, d, {}, None) for d in run_dirs_in(root)]


def differing_settings(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the config values that differ between the runs (when sweep.json gives no params)."""
    configs = [dict(r.get("config") or {}) for r in records]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if k not in ("runs_dir",)
                 and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [{k: c.get(k) for k in differing} for c in configs]
