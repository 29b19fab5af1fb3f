"""A run directory, runs/<name>/, and the plan it is written from.

  dataset.toml        --dataset_config for sd-scripts (templates/dataset.toml.j2)
  train.toml          --config_file for sd-scripts (templates/train.toml.j2)
  sample_prompts.txt  the training-time sample prompts (templates/sample_prompts.txt.j2)
  command.sh          the exact command medsynth runs (cd + environment + argv), runnable by hand
  run.json            preset, overrides, resolved config, batch choice, step arithmetic, commits, package
                      versions, dataset manifest hash, seed; status and LoRA files after the run
  train.log           everything the training process printed
and, written by sd-scripts: <output_name>[-NNNNNN].safetensors, <output_name>[-NNNNNN]-state/, sample/, logs/.
The first five are written into a temporary sibling and renamed into place together.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import toml

from orchestrator.train.config import BatchChoice, Layer, Preset, Schedule, TrainConfig, config_as_dict, schedule
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import find_template
from orchestrator.train.sample_prompts import SamplePrompt, sample_prompts
from orchestrator.train.render import render_template
from orchestrator.common.atomic import write_atomic
from orchestrator.dataset.record import DatasetInfo

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RENDERED = ("dataset.toml", "train.toml", "sample_prompts.txt")
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


def default_run_name(dataset: DatasetInfo, preset: str) -> str:
    return f"{dataset.class_name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_run_name(name: str) -> str:
    if not _RUN_NAME.match(name):
        raise MedsynthError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (not starting with '.' or '-')")
    return name


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
    sched = schedule(cfg, images=dataset.images, repeats=dataset.repeats, num_processes=num_processes)
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
    )
    d = dict(caption_extension=dataset.caption_extension, shuffle_caption=cfg.shuffle_caption,
             enable_bucket=cfg.enable_bucket, min_bucket_reso=cfg.min_bucket_reso,
             max_bucket_reso=cfg.max_bucket_reso, bucket_reso_steps=cfg.bucket_reso_steps,
             bucket_no_upscale=cfg.bucket_no_upscale, resolution=resolution, batch_size=sched.batch_size,
             image_dir=dataset.image_dir, num_repeats=dataset.repeats, flip_aug=cfg.flip_aug,
             class_tokens=dataset.trigger)
    s = dict(negative_prompt=cfg.negative_prompt, width=cfg.sample_width, height=cfg.sample_height,
             cfg_scale=cfg.sample_cfg_scale, steps=cfg.sample_steps, sampler=cfg.sample_sampler)
    files = {
        "dataset.toml": render_template("dataset.toml.j2", {"d": d}),
        "train.toml": render_template("train.toml.j2", {"t": t, "extra": dict(cfg.kohya)}),
        "sample_prompts.txt": render_template("sample_prompts.txt.j2", {"prompts": prompts, "s": s}),
    }
    return RunPlan(name, run_dir, preset, tuple(layers), cfg, batch, sched, dataset, prompts, output_name, files)


def validate_plan(plan: RunPlan) -> None:
    """Check both TOMLs and the prompts against the pinned sd-scripts contract (raises MedsynthError)."""
    from orchestrator.kohya import validate

    # the files are checked before any is written (a dry run writes none): name what they are rendered from
    train_src, dataset_src, prompts_src = (f"{name} (rendered from {find_template(name + '.j2')}, not written)"
                                           for name in ("train.toml", "dataset.toml", "sample_prompts.txt"))
    train = toml.loads(plan.files["train.toml"])
    dataset = toml.loads(plan.files["dataset.toml"])
    validate.validate_train_config(train, source=train_src)
    validate.validate_dataset_config(dataset, source=dataset_src)
    validate.validate_sample_prompts(plan.files["sample_prompts.txt"], source=prompts_src)
    validate.check_combinations(train, dataset, source=train_src)


# ----------------------------------------------------------------------------------------------- writing

def command_script(argv: Sequence[str], cwd: Path, env_changes: Mapping[str, str]) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in env_changes.items())
    return ("#!/bin/sh\n# The exact command medsynth ran for this run (written by medsynth).\n"
            f"cd {shlex.quote(str(cwd))} || exit 1\n"
            f"{env + ' ' if env else ''}exec {' '.join(shlex.quote(a) for a in argv)}\n")


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
                    "manifest_sha256": plan.dataset.manifest_sha256},
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


def write_run_dir(plan: RunPlan, *, command_sh: str, record: Mapping[str, Any]) -> Path:
    """Create runs/<name>/ with its five files, all at once (temporary sibling + rename)."""
    if plan.run_dir.exists():
        raise MedsynthError(f"{plan.run_dir} already exists: choose another --run-name, or --resume it")
    plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{plan.name}.", dir=plan.run_dir.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700); a run folder gets the usual mode
        for name in RENDERED:
            (tmp / name).write_text(plan.files[name], encoding="utf-8")
        (tmp / "command.sh").write_text(command_sh, encoding="utf-8")
        (tmp / "command.sh").chmod(0o755)
        (tmp / "run.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, plan.run_dir)
        except OSError as exc:  # another process created it since the check above
            raise MedsynthError(f"{plan.run_dir} already exists: choose another --run-name ({exc.strerror})") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return plan.run_dir


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def update_run_json(run_dir: Path, **changes: Any) -> dict[str, Any]:
    path = run_dir / "run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(changes)
    write_atomic(path, json.dumps(record, indent=1) + "\n")
    return record


def running_mark() -> dict[str, Any]:
    """Stored with status "running": the medsynth process that trains the run, so that a later command can tell a
    run still training from one whose process was killed (its status then stays "running")."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): a reused pid differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def still_training(record: Mapping[str, Any]) -> bool | None:
    """Whether the process that marked this run "running" is alive: True / False, None where it cannot be told
    (marked on another host, or by a medsynth without the mark)."""
    mark = record.get("running_mark")
    if record.get("status") != "running":
        return False
    if not isinstance(mark, Mapping) or mark.get("host") != socket.gethostname():
        return None
    pid = mark.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    started = _process_start(pid)
    return started is None or mark.get("pid_started") is None or started == mark.get("pid_started")


# ----------------------------------------------------------------------------------------------- outputs

def lora_files(run_dir: Path, output_name: str) -> list[Path]:
    """The LoRA files sd-scripts saved: <name>-NNNNNN.safetensors per epoch, <name>.safetensors at the end."""
    pattern = re.compile(rf"^{re.escape(output_name)}(-\d{{6}}|-step\d{{8}})?\.safetensors$")
    return sorted(p for p in run_dir.iterdir() if p.is_file() and pattern.match(p.name))


def _state_step(state: Path) -> int:
    try:
        return int(json.loads((state / "train_state.json").read_text(encoding="utf-8"))["current_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def newest_state(run_dir: Path) -> Path | None:
    """The *-state folder to resume from: the highest saved step (train_state.json), then the newest."""
    states = [p for p in run_dir.glob("*-state") if p.is_dir()]
    if not states:
        return None
    return max(states, key=lambda p: (_state_step(p), p.stat().st_mtime_ns, p.name))


def _record(record_path: Path) -> dict[str, Any]:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _status(record_path: Path) -> str | None:
    return _record(record_path).get("status")


def _training(record_path: Path) -> bool:
    return bool(still_training(_record(record_path)))


def newest_resumable_run(runs_dir: Path) -> Path | None:
    """The most recently updated run with a state folder that has not finished (a finished run cannot go on) and
    is not training right now."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.glob("*/run.json")
            if newest_state(p.parent) is not None and _status(p) != "finished" and not _training(p)]
    return max(runs, key=lambda p: p.stat().st_mtime_ns).parent if runs else None
