"""A sweep from plan to summary: every run rendered and validated first, then written, then trained in turn.

Shared caches: sd-scripts writes disk caches next to the images (`<image>_<W>x<H>_sdxl.npz` latents,
`<image>_te_outputs.npz` text-encoder outputs) and reuses them in later runs. So that the source dataset
stays as `medsynth dataset build` wrote it, the runs of a sweep train on a shared copy of its images
(hard links where the file system allows, else copies) in runs/<sweep>/.cache/<dataset>-<res>px-<key>/, one per
(dataset, resolution, base model, VAE): the model and VAE are in the key because sd-scripts only checks a
cached file's shape, not what computed it. Runs of the sweep whose preset caches latents or text-encoder
outputs in memory get the `_to_disk` variant (unless the sweep file sets it), so the first run of a group
computes the caches and the others reuse them; the summary counts the .npz files each run found and wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import SD_SCRIPTS_COMMIT
from orchestrator.dataset.record import DatasetInfo, read_dataset
from orchestrator.runs.outputs import run_scalars
from orchestrator.runs.record import read_record
from orchestrator.runs.sweep_record import write_sweep_record
from orchestrator.sweep.spec import Sweep, SweepRun, describe_params
from orchestrator.train import launch
from orchestrator.train.command import Machines, child_env, python_executable
from orchestrator.train.config import Layer
from orchestrator.train.settings import Settings, merge_layers
from orchestrator.train.plan import RunPlan, prepare, training_resolution
from orchestrator.train.preflight import (SHARED_FILE_SYSTEMS, Gpu, disk_checked_by_caller, estimate_disk_bytes,
                                          filesystem_type, sd_scripts_commit)

CACHE_DIR = ".cache"
_TE_DISK = "kohya.cache_text_encoder_outputs_to_disk"
_LOSS = re.compile(rb"avr_loss=([-+0-9.eE]+|nan|inf)")


@dataclass(frozen=True)
class CacheGroup:
    """The shared image folder of the runs with the same dataset, resolution, model and VAE."""

    key: str
    source: DatasetInfo
    image_dir: Path             # runs/<sweep>/.cache/<group>/<repeats>_<class>/


@dataclass(frozen=True)
class PlannedRun:
    run: SweepRun
    plan: RunPlan
    cache: CacheGroup | None    # None: the run caches nothing on disk, it trains on the dataset itself


def plan_sweep(sweep: Sweep, base: Settings, *, gpus: Sequence[Gpu] | None, total_processes: int = 1,
               extra: Sequence[Layer] = ()) -> tuple[Path, list[PlannedRun]]:
    """Render and validate every run (nothing is written). One bad run -> an error naming it; none is planned."""
    for layer in extra:  # over a varying key it would make every run the same under different names
        clash = [k for k in layer.values if k in sweep.varying]
        if clash:
            raise MedsynthError(f"{layer.source} {clash[0]}: {sweep.path} varies it across its runs; drop it from "
                                f"{layer.source} or from the sweep file")
    planned: list[PlannedRun] = []
    errors: list[str] = []
    datasets: dict[Path, DatasetInfo] = {}
    sweep_dirs: set[Path] = set()
    for run in sweep.runs:
        try:
            layers = [*base.layers, sweep.base, sweep.fixed, run.layer, *extra]
            cfg, user_keys = merge_layers(base.preset, layers)
            if cfg.dataset is None:
                raise MedsynthError("no dataset: set 'dataset' in the sweep file or [dataset] out in medsynth.toml")
            if cfg.dataset not in datasets:
                datasets[cfg.dataset] = read_dataset(cfg.dataset)
            source = datasets[cfg.dataset]
            sweep_dir = (cfg.runs_dir / sweep.name).resolve()
            sweep_dirs.add(sweep_dir)
            own: dict[str, Any] = {"runs_dir": sweep_dir}
            if cfg.cache_latents and "cache_latents_to_disk" not in user_keys:
                own["cache_latents_to_disk"] = True
            if cfg.cache_text_encoder_outputs and _TE_DISK not in user_keys:
                own[_TE_DISK] = True
            layers.append(Layer(f"medsynth sweep {sweep.name}: run folder and shared disk caches", own))
            cfg, user_keys = merge_layers(base.preset, layers)
            on_disk = cfg.cache_latents_to_disk or bool(cfg.kohya.get("cache_text_encoder_outputs_to_disk"))
            group = _cache_group(sweep_dir, source, training_resolution(cfg, source),
                                 cfg.pretrained_model_name_or_path, cfg.vae) if on_disk else None
            settings = Settings(base.preset, tuple(layers), cfg, frozenset(user_keys))
            dataset = source.with_image_dir(group.image_dir) if group else source
            plan = prepare(settings, gpus=gpus, run_name=run.name, num_processes=total_processes,
                           dataset=dataset)
            planned.append(PlannedRun(run, plan, group))
        except MedsynthError as exc:
            errors.append(f"run '{run.name}' ({describe_params(run.params)}): {exc}")
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise MedsynthError(f"{sweep.path}: {len(errors)} of {len(sweep.runs)} runs invalid, nothing ran: "
                            f"{errors[0]}{more}")
    if len(sweep_dirs) != 1:
        raise MedsynthError(f"{sweep.path}: 'runs_dir' must be the same for every run of a sweep")
    return sweep_dirs.pop(), planned


def _cache_group(sweep_dir: Path, source: DatasetInfo, resolution: int, model: str, vae: Path | None) -> CacheGroup:
    what = [str(source.path), source.manifest_sha256, resolution, model, str(vae) if vae else None]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:10]
    folder = sweep_dir / CACHE_DIR / f"{source.path.name}-{resolution}px-{key}"
    return CacheGroup(key, source, folder / source.image_dir.name)


# ----------------------------------------------------------------------------------------------- writing

def check_new(sweep_dir: Path, planned: Sequence[PlannedRun]) -> None:
    """A sweep's run folders are written once; refuse before writing any of them."""
    taken = [p.plan.run_dir for p in planned if p.plan.run_dir.exists()]
    if taken:
        raise MedsynthError(f"{taken[0]} already exists ({len(taken)} of {len(planned)} run folders of this sweep "
                            f"do): rename the sweep ('name = ...') or move {sweep_dir} away")


def share_images(group: CacheGroup) -> Path:
    """The group's image folder: links to the dataset's images and captions, made once (temp folder + rename)."""
    if group.image_dir.is_dir():
        return group.image_dir
    group.image_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{group.image_dir.name}.", dir=group.image_dir.parent))
    try:
        for src in sorted(group.source.image_dir.iterdir()):
            if src.is_file() and not src.name.endswith(".npz"):
                try:
                    os.link(src, tmp / src.name)
                except OSError:  # another file system, or links not allowed
                    shutil.copy2(src, tmp / src.name)
        os.rename(tmp, group.image_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return group.image_dir


def planning_launcher(*, sd_scripts: Path, gpus: Sequence[Gpu] | None, num_processes: int, offline: bool,
                      cpu: bool, min_gpu_gib: float) -> launch.Launcher:
    """For run folders rendered here and trained elsewhere (--emit slurm): nothing probed, the node checks."""
    env, changes = child_env(sd_scripts, offline=offline, cpu=cpu)
    commit, how = sd_scripts_commit(sd_scripts) if sd_scripts.is_dir() else (None, "not present when rendered")
    commits = {**launch.project_commit(), "sd_scripts": commit, "sd_scripts_how": how,
               "sd_scripts_pinned": SD_SCRIPTS_COMMIT}
    return launch.Launcher(sd_scripts, python_executable(), env, changes, None, list(gpus) if gpus else None,
                           commits, [], num_processes, (), Machines(), offline, cpu, min_gpu_gib)


def write_sweep(sweep: Sweep, sweep_dir: Path, planned: Sequence[PlannedRun], launcher: launch.Launcher, *,
                trained_here: bool = True, say: Callable[[str], None] = print) -> dict:
    """Shared image folders, every run folder, and sweep.json (status 'created').

    trained_here=False: the runs train on other machines (--emit slurm); see check_sweep_disk."""
    check_new(sweep_dir, planned)
    for p in planned:
        launch.check_config(launcher, p.plan.config)
    for warning in check_sweep_disk(sweep_dir, planned, trained_here=trained_here):
        say(warning)
    for group in {p.cache.key: p.cache for p in planned if p.cache}.values():
        share_images(group)
    # each run's own disk check would refuse on this machine's free space again
    with contextlib.nullcontext() if trained_here else disk_checked_by_caller():
        for p in planned:
            launch.create(launcher, p.plan)
    record = {
        "name": sweep.name, "sweep_file": str(sweep.path.resolve()), "description": sweep.description,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "varying": list(sweep.varying),
        "runs": [{"name": p.run.name, "path": p.plan.run_dir.relative_to(sweep_dir).as_posix(),
                  "params": dict(p.run.params), "status": "created", "exit_code": None, "wall_s": None,
                  "final_loss": None,
                  "cache": {"dir": p.cache.image_dir.relative_to(sweep_dir).as_posix() if p.cache else None,
                            "npz_before": None, "npz_after": None}} for p in planned],
    }
    write_sweep_record(sweep_dir, record)
    return record


def check_sweep_disk(sweep_dir: Path, planned: Sequence[PlannedRun], *, trained_here: bool = True) -> list[str]:
    """All runs' LoRA files and state folders stay, so they must fit together (each run checks only itself).
    -> the warnings to print.

    Runs trained elsewhere (--emit slurm) write at the same paths on the compute nodes. On a file system the
    nodes share (NFS, Lustre, ...) the free space seen here is theirs: too little is refused. On a disk of this
    machine it is not where they write: too little is a warning."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    need = sum(estimate_disk_bytes(p.plan.config) for p in planned)
    free = shutil.disk_usage(sweep_dir).free
    if free >= need:
        return []
    short = (f"{free / 1e9:.1f} GB free, the {len(planned)} runs may write ~{need / 1e9:.1f} GB "
             f"(LoRA files + state folders)")
    fix = "free space, run fewer, or set save_last_n_epochs / save_last_n_epochs_state in [fixed]"
    if trained_here:
        raise MedsynthError(f"{sweep_dir}: {short}: {fix}")
    kind = filesystem_type(sweep_dir)
    if kind in SHARED_FILE_SYSTEMS:
        raise MedsynthError(f"{sweep_dir}: {short} on this {kind} file system, which the compute nodes write to too: "
                            f"{fix}")
    return [f"warning: {sweep_dir}: {short}, but this machine's {kind or 'local'} disk is not where the runs write: "
            f"they write on the nodes that train them; make sure {sweep_dir} has room there"]


# ----------------------------------------------------------------------------------------------- running

def count_npz(folder: Path | None) -> int | None:
    return sum(1 for p in folder.glob("*.npz")) if folder is not None and folder.is_dir() else None


def final_loss(run_dir: Path, logging_dir: Path | None = None) -> float | None:
    """The run's last `loss/epoch_average` from its TensorBoard events (read as `medsynth review` reads them),
    else the last running average sd-scripts printed (`avr_loss=` in train.log): logs/ stays empty when the
    training interpreter has no tensorboard."""
    try:
        scalars = run_scalars(run_dir, logging_dir)
    except MedsynthError:  # a damaged event file: fall back to the log
        scalars = {}
    for tag in ("loss/epoch_average", "loss/average"):
        if scalars.get(tag):
            return scalars[tag][-1].value
    log = run_dir / "train.log"
    if not log.is_file():
        return None
    found = _LOSS.findall(log.read_bytes())
    return float(found[-1]) if found else None


def run_sweep(sweep_dir: Path, record: dict, *, out: IO[bytes] | None = None,
              say: Callable[[str], None] = print) -> dict:
    """Train the created runs one after another; a failed run does not stop the others, Ctrl-C does.

    sweep.json is rewritten after every run, so a reader sees the sweep's progress."""
    runs = record["runs"]
    stop = False
    for i, entry in enumerate(runs, 1):
        if stop:
            entry["status"] = "skipped"
            continue
        run_dir = sweep_dir / entry["path"]
        cache = sweep_dir / entry["cache"]["dir"] if entry["cache"]["dir"] else None
        entry["cache"]["npz_before"] = count_npz(cache)
        say(f"medsynth sweep: [{i}/{len(runs)}] {entry['name']} ({describe_params(entry['params'])})")
        entry["status"] = "running"
        write_sweep_record(sweep_dir, record)
        started = time.monotonic()
        try:
            launch.launch_created(run_dir, out=out)
        except MedsynthError as exc:  # a check failed, or the run exited 0 without a LoRA file
            say(f"medsynth sweep: {entry['name']}: error: {exc}")
        entry["wall_s"] = round(time.monotonic() - started, 1)
        outcome = read_record(run_dir)
        entry["exit_code"] = outcome.field("exit_code", int, None)
        entry["status"] = outcome.status if outcome.status not in (None, "created", "running") else "failed"
        logging_dir = outcome.field("config.logging_dir", str, None)
        entry["final_loss"] = final_loss(run_dir, Path(logging_dir) if logging_dir else None)
        entry["cache"]["npz_after"] = count_npz(cache)
        write_sweep_record(sweep_dir, record)
        stop = entry["exit_code"] == 130  # Ctrl-C: the user wants the sweep to stop, not the next run to start
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_sweep_record(sweep_dir, record)
    return record


# ----------------------------------------------------------------------------------------------- tables

def plan_table(sweep_dir: Path, planned: Sequence[PlannedRun]) -> str:
    rows = [("run", "settings", "batch", "steps", "lr", "cache group", "folder")]
    for p in planned:
        s = p.plan.schedule
        rows.append((p.run.name, describe_params(p.run.params), str(s.batch_size), str(s.total_steps),
                     f"{s.learning_rate:.3g}", p.cache.key if p.cache else "-",
                     p.plan.run_dir.relative_to(sweep_dir.parent).as_posix()))
    return _format(rows)


def summary_table(sweep_dir: Path, record: Mapping[str, Any]) -> str:
    rows = [("run", "status", "wall", "final loss", "caches", "folder")]
    for entry in record["runs"]:
        loss = entry.get("final_loss")
        rows.append((entry["name"], entry["status"],
                     f"{entry['wall_s']:.1f} s" if entry.get("wall_s") is not None else "-",
                     f"{loss:.4g}" if loss is not None else "-", _cache_text(entry["cache"]),
                     (sweep_dir / entry["path"]).as_posix()))
    return _format(rows) + "\n" + cache_summary(record)


def _cache_text(cache: Mapping[str, Any]) -> str:
    before, after = cache.get("npz_before"), cache.get("npz_after")
    if cache.get("dir") is None:
        return "not on disk"
    if before is None or after is None:
        return "-"
    return f"reused {before}, wrote {max(after - before, 0)}"


def cache_summary(record: Mapping[str, Any]) -> str:
    counted = [e["cache"] for e in record["runs"] if e["cache"].get("dir") and e["cache"].get("npz_after") is not None]
    written = sum(max(c["npz_after"] - c["npz_before"], 0) for c in counted)
    reused = sum(c["npz_before"] for c in counted)
    reusing = sum(1 for c in counted if c["npz_before"])
    groups = len({c["dir"] for c in counted})
    return (f"caches: {written} .npz files computed, {reused} reused by {reusing} of {len(counted)} runs "
            f"({groups} shared image folder{'s' if groups != 1 else ''})")


def _format(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
