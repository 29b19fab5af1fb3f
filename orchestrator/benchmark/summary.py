"""The benchmark's summary: the plan a dry run prints, and the gathering of finished results into metrics with
patient-level CIs, strata, benchmark.json, benchmark.html and the table printed at the end."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
import numpy as np

from orchestrator.benchmark import record
from orchestrator.benchmark.data import BenchmarkData, strata_labels
from orchestrator.common.errors import MedsynthError
from orchestrator.benchmark.settings import BenchSettings, Task

SHOWN = (("auroc", "AUROC"), ("sens_at_spec95", "sens@95%spec"))


def _counts(table) -> dict:
    return {"images": len(table), "malignant": int(table["malignant"].astype(bool).sum()),
            "groups": int(table["group_id"].nunique())}


def describe_plan(s: BenchSettings, d: BenchmarkData, tasks: list[Task], done: Mapping[Path, object],
                  leakage: dict) -> str:
    lines = [f"split: {d.split.folds} folds by {d.split.group_kind}, test fold {d.test_fold}: "
             f"training {len(d.train)} images ({int(d.train['malignant'].astype(bool).sum())} malignant), "
             f"test {len(d.test)} images ({int(d.test['malignant'].astype(bool).sum())} malignant)",
             f"leakage: {leakage['status']}: {leakage['message']}"]
    for arm in d.arms:
        if arm.skipped:
            lines.append(f"  {arm.name:<16} skipped: {arm.skipped}")
            continue
        finished = sum(1 for t in tasks if t.arm is arm and done.get(t.path) is not None)
        lines.append(f"  {arm.name:<16} {len(arm.keys):>6} images, {sum(arm.labels):>5} malignant "
                     f"({arm.synthetic_images} synthetic, {arm.extra_real} extra real); "
                     f"{finished} of {s.seeds} seeds done")
    todo = sum(1 for t in tasks if done.get(t.path) is None)
    lines.append(f"{len(tasks)} trainings ({todo} to do): {s.model} at {s.image_size} px, {s.epochs} epochs, "
                 f"batch {s.batch_size}, into {s.out}")
    return "\n".join(lines)


def _arm_record(arm, results, y, groups, labels, baseline, s: BenchSettings) -> dict:
    from orchestrator.benchmark.metrics import METRICS, roc_curve, strata, summarise
    out = {"name": arm.name, "kind": arm.kind, "ratio": arm.ratio, "train_images": len(arm.keys),
           "train_malignant": sum(arm.labels), "synthetic_images": arm.synthetic_images,
           "extra_real": arm.extra_real, "skipped": arm.skipped}
    if arm.skipped:
        return out
    scores = np.stack([r.scores for r in results])
    summary = summarise(y, scores, groups, n_boot=s.n_boot, seed=0, baseline=baseline)
    fpr, tpr = roc_curve(y, scores.mean(axis=0))
    out.update(
        seeds=[{"seed": r.seed, "seconds": round(r.seconds, 3), "final_loss": r.losses[-1] if r.losses else None,
                **{m: METRICS[m](y, r.scores) for m in METRICS}} for r in results],
        metrics={m: summary[m] for m in METRICS}, vs_real=summary.get("vs_real"),
        roc={"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]},
        strata=strata(y, scores, groups, labels, n_boot=s.n_boot, seed=0))
    return out


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(arms: list[dict]) -> str:
    """The end-of-run table: one line per arm, the shown metrics with their CI and the difference to real-only."""
    lines = [f"{'arm':<16} {'images':>7}  " + "  ".join(f"{label + ' [95% CI]':<26}" for _, label in SHOWN)
             + "  AUROC vs real (p)"]
    for arm in arms:
        if arm["skipped"]:
            lines.append(f"{arm['name']:<16} skipped: {arm['skipped']}")
            continue
        cells = [f"{_fmt(arm['metrics'][m]['value'])} [{_fmt(arm['metrics'][m]['lo'])}, "
                 f"{_fmt(arm['metrics'][m]['hi'])}]" for m, _ in SHOWN]
        vs = (arm.get("vs_real") or {}).get("auroc")
        diff = "" if not vs or vs["diff"] is None else f"{vs['diff']:+.3f} (p {_fmt(vs['p'])})"
        lines.append(f"{arm['name']:<16} {arm['train_images']:>7}  " + "  ".join(f"{c:<26}" for c in cells)
                     + f"  {diff}")
    return "\n".join(lines)


def gather(s: BenchSettings, d: BenchmarkData, tasks: list[Task], done: Mapping[Path, object], leakage: dict,
           training: dict, *, progress: bool, say: Callable[[str], None]) -> Path:
    from orchestrator.benchmark.page import write_page
    from orchestrator.benchmark.tone import test_tones
    missing = [t for t in tasks if done.get(t.path) is None]
    if missing:
        raise MedsynthError(f"{len(missing)} of {len(tasks)} trainings have no result yet (first: "
                            f"{missing[0].arm.name} seed {missing[0].seed}, {missing[0].path})")
    y = d.test["malignant"].astype(bool).to_numpy().astype(int)
    groups = d.test["group_id"].astype(str).to_numpy()
    tones = test_tones(d.test, s.out / "cache", workers=s.workers, progress=progress)
    labels = {**strata_labels(d.test), "skin_tone": tones}
    by_arm = {arm.name: [done[t.path] for t in tasks if t.arm is arm] for arm in d.arms}
    baseline = np.stack([r.scores for r in by_arm["real"]])
    arms = []
    for arm in d.arms:
        arms.append(_arm_record(arm, by_arm[arm.name], y, groups, labels,
                                None if arm.kind == "real" else baseline, s))
    summary = {
        "settings": {"model": s.model, "image_size": s.image_size, "epochs": s.epochs, "seeds": list(range(s.seeds)),
                     "ratios": list(s.ratios), "rare_share": s.rare_share, "batch_size": s.batch_size,
                     "learning_rate": s.learning_rate, "weights": None if s.weights is None else str(s.weights),
                     "weights_sha256": training["weights_sha256"], "n_boot": s.n_boot,
                     "device": ", ".join(sorted({done[t.path].device for t in tasks}))},
        "split": {"file": None if d.split_file is None else str(d.split_file), "sha256": d.split.sha256 or None,
                  "folds": d.split.folds, "test_fold": d.test_fold, "group_kind": d.split.group_kind,
                  "train": _counts(d.train), "test": _counts(d.test), "left_out": d.dropped},
        "leakage": leakage, "synthetic": d.synthetic, "arms": arms}
    path = record.write_benchmark(s.out, summary)
    page = write_page(s.out, record.read_benchmark(path))
    say(table(arms))
    say(f"medsynth: {path} and {page}")
    return path

