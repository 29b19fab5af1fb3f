"""One `medsynth benchmark`: read and split the real images, check the synthetic set for leaked test patients,
train every arm with every seed (each result kept in <out>/results/ as it finishes, so a killed benchmark continues
where it stopped), then gather: metrics with patient-level bootstrap CIs, strata, benchmark.json and the page.

With `task`, only that arm and seed is trained (a Slurm array task; `--emit slurm` writes the array), and a run
without `task` gathers what the tasks wrote, training whatever is still missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from orchestrator.benchmark import data as bdata
from orchestrator.benchmark import record
from orchestrator.benchmark.data import BenchmarkData
from orchestrator.benchmark.settings import BenchSettings, Task
from orchestrator.common.errors import MedsynthError, stop_signals_raise
from orchestrator.common.hashing import sha256_of
from orchestrator.common.filelock import exclusive


def _sha256(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return sha256_of(path)
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read the weights file: {exc.strerror or exc}") from None


def training_settings(s: BenchSettings) -> dict:
    """What a classifier's scores depend on besides its images and seed (the task key's `training`)."""
    return {"model": s.model, "image_size": s.image_size, "epochs": s.epochs, "batch_size": s.batch_size,
            "learning_rate": s.learning_rate, "weights_sha256": _sha256(s.weights)}


def tasks_of(s: BenchSettings, d: BenchmarkData, training: dict) -> list[Task]:
    test_keys = list(d.test["image_id"].astype(str))
    return [Task(arm, seed, record.task_key(arm_kind=arm.kind, keys=arm.keys, labels=arm.labels, seed=seed,
                                            test_keys=test_keys, training=training),
                 record.result_path(s.out, arm.slug, seed))
            for arm in d.arms if arm.skipped is None for seed in range(s.seeds)]


def check_leaks(s: BenchSettings, d: BenchmarkData) -> dict:
    """The leakage check of the synthetic set against this split's test fold (refuses on a leak)."""
    if s.synthetic is None:
        return {"status": "no synthetic set", "checked": [], "message": "no --synthetic folder: nothing to check"}
    from orchestrator.generate.provenance import check_synthetic_leaks
    check = check_synthetic_leaks(s.synthetic, d.split, d.test_fold, split_file=s.split_file)
    return {"status": check.status, "checked": [str(p) for p in check.checked], "message": check.message}


def _validate(s: BenchSettings) -> None:
    if not 0 < s.rare_share <= 1:
        raise MedsynthError(f"rare_share must be in (0, 1], got {s.rare_share:g}")
    if any(r < 0 for r in s.ratios):
        raise MedsynthError(f"ratios must be >= 0, got {', '.join(f'{r:g}' for r in s.ratios)}")
    if s.seeds < 1 or s.epochs < 1 or s.image_size < 16 or s.batch_size < 2 or s.n_boot < 100:
        raise MedsynthError("need seeds >= 1, epochs >= 1, image_size >= 16, batch_size >= 2 and n_boot >= 100")


def prepare(s: BenchSettings, warn: Callable[[str], None]) -> tuple[BenchmarkData, dict, list[Task], dict]:
    """(the data, the training settings, the tasks, the leakage check): everything before any training."""
    _validate(s)
    from orchestrator.benchmark.fit import check_model
    check_model(s.model)   # before any image is decoded
    d = bdata.load(s.csv, s.images, fmt=s.fmt, split_file=s.split_file, folds=s.folds, test_fold=s.test_fold,
                   split_seed=s.split_seed, synthetic_dir=s.synthetic, ratios=s.ratios, rare_share=s.rare_share,
                   warn=warn)
    leakage = check_leaks(s, d)
    if leakage["status"] == "untraced":
        warn(f"warning: synthetic set {leakage['message']}")
    training = training_settings(s)
    return d, training, tasks_of(s, d, training), leakage


def all_keys(d: BenchmarkData) -> list[str]:
    """Every image the arms and the test use, in one fixed order (the pixel cache's)."""
    keys = set(d.test["image_id"].astype(str))
    for arm in d.arms:
        keys.update(arm.keys)
    return sorted(keys)


def run_task(s: BenchSettings, task: Task, d: BenchmarkData, pixels: np.ndarray, index: dict[str, int],
             *, device: str, progress: bool) -> record.TaskResult:
    from orchestrator.benchmark.fit import train_and_score
    busy = (lambda pid: f"{s.out}: another medsynth benchmark{pid} is training {task.arm.name} seed {task.seed}; "
                        f"wait for it, then run again to gather")
    with exclusive(task.path.with_name(f".{task.path.stem}.lock"), busy=busy,
                   cannot_write=f"{s.out}: cannot write in {task.path.parent}"):
        test_rows = [index[k] for k in d.test["image_id"].astype(str)]
        scores, losses, seconds = train_and_score(
            pixels[[index[k] for k in task.arm.keys]], task.arm.labels, pixels[test_rows], model=s.model,
            weights=s.weights, epochs=s.epochs, batch_size=s.batch_size, learning_rate=s.learning_rate,
            seed=task.seed, oversample=task.arm.kind == "oversample", device=device,
            desc=f"{task.arm.name} seed {task.seed}", progress=progress)
        result = record.TaskResult(task.arm.name, task.seed, task.key, scores, losses, seconds, device)
        record.write_result(task.path, result)
    return result


def run_benchmark(s: BenchSettings, *, task: int | None = None, dry_run: bool = False, slurm: dict | None = None,
                  progress: bool = True, say: Callable[[str], None] = print,
                  warn: Callable[[str], None] = print) -> Path | None:
    """Train what is missing (only task number `task` when given) and, without `task`, gather into
    benchmark.json and benchmark.html; the benchmark.json path (None after a task, a dry run or `slurm`).
    With `slurm` (the sbatch options: gpus, time, partition, account), decode the images into the cache and write
    the array script instead of training."""
    from orchestrator.benchmark.summary import describe_plan, gather
    d, training, tasks, leakage = prepare(s, warn)
    test_images = len(d.test)
    done = {t.path: record.read_result(t.path, key=t.key, test_images=test_images) for t in tasks}
    if dry_run:
        say(describe_plan(s, d, tasks, done, leakage))
        say("dry run: nothing trained or written")
        return None
    if task is not None and not 0 <= task < len(tasks):
        raise MedsynthError(f"--task {task}: this benchmark has tasks 0 to {len(tasks) - 1}")
    todo = [t for i, t in enumerate(tasks) if done[t.path] is None and (task is None or i == task)]
    with stop_signals_raise():
        (s.out / record.RESULTS_DIR).mkdir(parents=True, exist_ok=True)
        if todo or slurm is not None:
            from orchestrator.benchmark.fit import device_name
            from orchestrator.benchmark.pixels import load_pixels
            keys = all_keys(d)
            # every task reads this one cache: decoded here, once, before a Slurm array starts them together
            pixels = load_pixels(keys, d.paths, s.image_size, s.out / "cache", workers=s.workers,
                                 progress=progress)
            index = {k: i for i, k in enumerate(keys)}
        if slurm is not None:
            from orchestrator.benchmark.slurm import write_script
            script = write_script(s, tasks=len(tasks), **slurm)
            say(f"medsynth: {script}: {len(tasks)} tasks ({len(todo)} without a result yet); submit with "
                f"'sbatch {script}', then run this command again without --emit to gather")
            return None
        for number, t in enumerate(todo, start=1):
            device = device_name()
            say(f"medsynth: training {t.arm.name}, seed {t.seed} ({number} of {len(todo)} to train, "
                f"{len(tasks)} in all) on {device}")
            done[t.path] = run_task(s, t, d, pixels, index, device=device, progress=progress)
        if task is not None:
            say(f"medsynth: task {task} ({tasks[task].arm.name}, seed {tasks[task].seed}) done: "
                f"{tasks[task].path}")
            return None
        return gather(s, d, tasks, done, leakage, training, progress=progress, say=say)
