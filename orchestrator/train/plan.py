"""A run's plan: settings + dataset + GPU memory -> batch size, step arithmetic and the three rendered files
(dataset.toml, train.toml, sample_prompts.txt), checked against the pinned sd-scripts contract; and the
content of its run.json. Nothing is written here: orchestrator.runs.folder writes the folder.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import toml

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import find_template
from orchestrator.dataset.record import DatasetInfo, read_dataset
from orchestrator.runs.folder import check_run_name
from orchestrator.train.config import (DATASET_TOML_FIELDS, SAMPLE_PROMPT_FIELDS, Layer, TrainConfig,
                                       config_as_dict)
from orchestrator.train.holdout import TRAIN_DIR, VALIDATION_DIR, HeldOut, hold_out, links
from orchestrator.train.schedule import Schedule, schedule
from orchestrator.train.settings import BatchChoice, Preset, Settings, choose_batch, resolve_batch
from orchestrator.train.preflight import Gpu
from orchestrator.train.render import render_template
from orchestrator.train.sample_prompts import SamplePrompt, sample_prompts

SDXL_RESOLUTION = 1024  # what SDXL base was trained at (and `dataset build`'s default --resolution)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run is: resolved settings and the rendered file texts. Nothing is written yet."""

    name: str
    run_dir: Path
    preset: Preset
    layers: tuple[Layer, ...]
    config: TrainConfig
    batch: BatchChoice
    schedule: Schedule
    dataset: DatasetInfo
    prompts: tuple[SamplePrompt, ...]
    output_name: str
    files: Mapping[str, str]
    links: Mapping[str, Path] = dataclasses.field(default_factory=dict)  # run-folder path -> dataset file
    held_out: HeldOut | None = None   # the patients/lesions held out for validation (None: none, or by image)


def default_run_name(dataset: DatasetInfo, preset: str) -> str:
    return f"{dataset.class_name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def _model_value(value: str) -> str | Path:
    """A local model path is written as an absolute path (sd-scripts runs in its own folder); a hub id as is."""
    path = Path(value).expanduser()
    return path.resolve() if path.exists() else value


def training_resolution(cfg: TrainConfig, dataset: DatasetInfo) -> int:
    """The side of sd-scripts' training area: the setting, else the size the dataset was resized to, else (a
    --no-resize dataset, images at their native size) SDXL's own 1024. Not the images' size, which differs
    from image to image: sd-scripts scales every image into a bucket of about resolution² pixels (or, without
    buckets, scales and centre-crops it to resolution × resolution), so the originals train at the model's
    resolution as a resized copy would."""
    return cfg.resolution or dataset.resolution or SDXL_RESOLUTION


def plan_run(cfg: TrainConfig, *, preset: Preset, layers: Sequence[Layer], batch: BatchChoice,
             dataset: DatasetInfo, name: str, num_processes: int = 1) -> RunPlan:
    """Resolve the derived values and render the three files."""
    run_dir = (cfg.runs_dir / check_run_name(name)).resolve()
    if cfg.masked_loss and dataset.masks is None:
        raise MedsynthError(f"masked_loss = true needs loss masks, and the dataset {dataset.path} has none: rebuild "
                            f"it with 'medsynth dataset build --masks auto' (or --masks DIR of your masks)")
    # seeds which images (or patients) are held out, and sd-scripts' validation noise and timesteps
    validation_seed = (cfg.validation_seed if cfg.validation_seed is not None else cfg.seed) \
        if cfg.validation_split else None
    held = hold_out(dataset, cfg.validation_split, validation_seed) if validation_seed is not None else None
    sched = schedule(cfg, subsets=[(s.images, s.repeats, s.is_reg) for s in dataset.subsets],
                     num_processes=num_processes, held_out=held.counts if held else None,
                     by=held.by if held else "image")
    if cfg.validation_split and not sched.validation_images:
        counts = [s.images for s in dataset.subsets if not s.is_reg]  # sd-scripts splits each folder alone
        raise MedsynthError(f"validation_split {cfg.validation_split} of {sum(counts)} images holds out none "
                            f"(sd-scripts rounds {' and '.join(map(str, counts))} × {cfg.validation_split} to 0): "
                            f"raise it, or set validation_split=0.0")
    output_name = cfg.output_name or f"{dataset.class_name}_lora"
    resolution = training_resolution(cfg, dataset)
    prompts = tuple(sample_prompts(dataset.manifest, count=cfg.num_sample_prompts, base_seed=cfg.sample_seed,
                                   texts=cfg.sample_prompts, texts_file=cfg.sample_prompts_file))
    t: dict[str, Any] = {name_: getattr(cfg, name_) for name_ in config_as_dict(cfg)}
    t.update(
        pretrained_model_name_or_path=_model_value(cfg.pretrained_model_name_or_path),
        tokenizer_cache_dir=cfg.tokenizer_cache_dir.resolve() if cfg.tokenizer_cache_dir else None,
        vae=cfg.vae.resolve() if cfg.vae else None,
        resolution=f"{resolution},{resolution}",   # a string in the training TOML (an int crashes sd-scripts)
        learning_rate=sched.learning_rate,
        lr_warmup_steps=sched.warmup_steps,        # an int: a float would be read as a ratio of all steps
        train_batch_size=sched.batch_size,
        output_dir=run_dir, output_name=output_name,
        sample_prompts=run_dir / "sample_prompts.txt",
        sample_every_n_epochs=cfg.sample_every_n_epochs or cfg.save_every_n_epochs,
        logging_dir=cfg.logging_dir.resolve() if cfg.logging_dir else run_dir / "logs",
        # rendered whenever images are held out: sd-scripts seeds the split with it (the dataset's validation_seed
        # falls back to this option), not with whatever state the global RNG is in when the dataset is built
        validation_seed=validation_seed,
    )
    # the settings config.py declares at home in dataset.toml and sample_prompts.txt, plus what the dataset and
    # the schedule decide
    d: dict[str, Any] = {name_: getattr(cfg, name_) for name_ in DATASET_TOML_FIELDS}
    subsets = [{"image_dir": s.image_dir, "num_repeats": s.repeats, "class_tokens": s.trigger, "is_reg": s.is_reg,
                # the masks are the training images' alpha channel (orchestrator.dataset.masks); reg images
                # have none and train on the whole image (docs/training.md, masked loss)
                "alpha_mask": cfg.masked_loss and not s.is_reg} for s in dataset.subsets]
    d.update(caption_extension=dataset.caption_extension, resolution=resolution, batch_size=sched.batch_size,
             datasets=[{"validation_split": None, "subsets": subsets}])
    if held:   # by patient: the kept and held-out images are links in the run folder (orchestrator.train.holdout)
        def linked(where: str, s: dict[str, Any]) -> dict[str, Any]:
            return {**s, "image_dir": run_dir / where / s["image_dir"].name}
        d.update(validation_split=0.0, datasets=[
            {"validation_split": None, "subsets": [s if s["is_reg"] else linked(TRAIN_DIR, s) for s in subsets]},
            {"validation_split": 1.0,
             "subsets": [linked(VALIDATION_DIR, s) for s, n in zip(subsets, held.counts) if n]}])
    s: dict[str, Any] = {option: getattr(cfg, name_) for name_, option in SAMPLE_PROMPT_FIELDS.items()}
    s["sampler"] = cfg.sample_sampler  # at home in train.toml (sd-scripts' default), repeated on every prompt line
    files = {
        "dataset.toml": render_template("dataset.toml.j2", {"d": d}),
        "train.toml": render_template("train.toml.j2", {"t": t, "extra": dict(cfg.kohya)}),
        "sample_prompts.txt": render_template("sample_prompts.txt.j2", {"prompts": prompts, "s": s}),
    }
    return RunPlan(name, run_dir, preset, tuple(layers), cfg, batch, sched, dataset, prompts, output_name, files,
                   links(held, dataset) if held else {}, held)


def validate_files(files: Mapping[str, str], sources: Mapping[str, str]) -> None:
    """Check train.toml, dataset.toml and (when given) sample_prompts.txt against the pinned sd-scripts contract
    (raises MedsynthError); `sources` names each file in the messages."""
    from orchestrator.kohya import validate

    train = toml.loads(files["train.toml"])
    dataset = toml.loads(files["dataset.toml"])
    validate.validate_train_config(train, source=sources["train.toml"])
    validate.validate_dataset_config(dataset, source=sources["dataset.toml"])
    if "sample_prompts.txt" in files:
        validate.validate_sample_prompts(files["sample_prompts.txt"], source=sources["sample_prompts.txt"])
    validate.check_combinations(train, dataset, source=sources["train.toml"])


def validate_plan(plan: RunPlan) -> None:
    # the files are checked before any is written (a dry run writes none): name what they are rendered from
    validate_files(plan.files, {name: f"{name} (rendered from {find_template(name + '.j2')}, not written)"
                                for name in plan.files})


def prepare(settings: Settings, *, gpus: Sequence[Gpu] | None, run_name: str | None = None,
            num_processes: int = 1, dataset: DatasetInfo | None = None, name_suffix: str = "") -> RunPlan:
    """Dataset + GPU memory -> batch size -> rendered and validated files (nothing written).

    `num_processes` is the total over all machines (it sets the step arithmetic); `dataset` replaces the one
    read from the config (a sweep trains on a shared copy of it)."""
    cfg = settings.config
    if dataset is None:
        if cfg.dataset is None:
            raise MedsynthError("no dataset: set 'dataset' to a dataset folder, or [dataset] out in medsynth.toml")
        dataset = read_dataset(cfg.dataset)
    smallest = min(gpus, key=lambda g: g.total_gib) if gpus else None  # it limits the batch
    gib = smallest.total_gib if smallest else None
    desc = smallest.name if smallest else ""
    cfg, batch = resolve_batch(cfg, settings.preset, set(settings.user_keys), gib, desc)
    name = (run_name or default_run_name(dataset, settings.preset.name)) + name_suffix
    plan = plan_run(cfg, preset=settings.preset, layers=settings.layers, batch=batch, dataset=dataset,
                    name=name, num_processes=num_processes)
    validate_plan(plan)
    return plan


def batch_warnings(plan: RunPlan, gpus: Sequence[Gpu] | None) -> list[str]:
    """A batch size set by hand above what the preset's tier table gives this GPU may run out of memory."""
    if not gpus or not plan.preset.batch_tiers or plan.batch.how != "set":
        return []
    gib = min(g.total_gib for g in gpus)
    tier, _ = choose_batch(plan.preset.batch_tiers, gib)
    if plan.batch.train_batch_size <= tier.train_batch_size:
        return []
    return [f"warning: batch {plan.batch.train_batch_size} is above the {tier.train_batch_size} the preset's tiers "
            f"give {gib:.0f} GiB: it may run out of GPU memory"]


def run_record(plan: RunPlan, *, argv: Sequence[str], cwd: Path, env_changes: Mapping[str, str],
               commits: Mapping[str, Any], packages: Mapping[str, Any], gpu: Mapping[str, Any]) -> dict[str, Any]:
    """The content of run.json at creation time."""
    from orchestrator import __version__

    return {
        "run_name": plan.name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "medsynth_version": __version__,
        "preset": plan.preset.name,
        "preset_file": str(plan.preset.path),
        "overrides": [{"source": layer.source, "values": _jsonable(dict(layer.values))} for layer in plan.layers],
        "config": config_as_dict(plan.config),
        "batch": dataclasses.asdict(plan.batch),
        "gpu": dict(gpu),
        "schedule": dataclasses.asdict(plan.schedule),
        "seed": plan.config.seed,
        "dataset": {"path": str(plan.dataset.path), "class_name": plan.dataset.class_name,
                    "images": plan.dataset.images, "repeats": plan.dataset.repeats,
                    "manifest_sha256": plan.dataset.manifest_sha256,
                    "subsets": [{**dataclasses.asdict(s), "image_dir": str(s.image_dir)}
                                for s in plan.dataset.subsets]},
        "held_out": {"by": plan.held_out.by, "groups": list(plan.held_out.groups)} if plan.held_out else None,
        "sample_prompts": [dataclasses.asdict(p) for p in plan.prompts],
        "output_name": plan.output_name,
        "commits": dict(commits),
        "packages": dict(packages),
        "command": list(argv),
        "cwd": str(cwd),
        "env": dict(env_changes),
        "status": "created",
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))
