"""Writes benchmark.html (templates/benchmark.html.j2) beside benchmark.json, with its figures in benchmark_files/:
the ROC curves of every arm that ran, and each headline metric against the synthetic ratio. The page reads only the
record (its format: BENCH_DESIGN.md, benchmark/record.py), so it can be rewritten from benchmark.json alone. Links
are relative, so the folder can be moved as a whole; every file is written to a temporary name and renamed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.common.figures import pyplot, save_png
from orchestrator.common.htmlpage import write_page as render

ASSETS = "benchmark_files"
# the page's names of the record's metrics, in the record's order
METRIC_LABELS = {"auroc": "AUROC", "pauroc": "pAUROC (FPR ≤ 0.1)", "sens_at_spec90": "sens @ 90% spec",
                 "sens_at_spec95": "sens @ 95% spec", "balanced_accuracy": "balanced accuracy"}
RATIO_METRICS = ("auroc", "sens_at_spec95")  # the two the issue asks to see against the ratio
REFERENCE_KINDS = ("oversample", "control")  # arms without a ratio: drawn as horizontal lines
DASH = "—"


def number(value: float | None, sign: str = "") -> str:
    return DASH if value is None else f"{value:{sign}.3f}"


def p_value(p: float | None) -> str:
    """'= 0.012'; '< 0.001' when no bootstrap replicate crossed zero (0.000 would claim certainty)."""
    return f"= {DASH}" if p is None else "< 0.001" if p < 0.0005 else f"= {p:.3f}"


def interval(ci: dict[str, Any] | None, key: str = "value", sign: str = "") -> str:
    """'0.812 [0.700, 0.900]'; a dash for a metric that is undefined (a class absent), the interval left off
    when only it is."""
    if ci is None or ci.get(key) is None:
        return DASH
    if ci.get("lo") is None or ci.get("hi") is None:
        return number(ci[key], sign)
    return f"{number(ci[key], sign)} [{number(ci['lo'], sign)}, {number(ci['hi'], sign)}]"


def _text(label: str) -> str:
    return label.replace("$", r"\$")  # matplotlib reads $...$ in a label as mathtext; an arm name is plain text


def ran(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [arm for arm in record["arms"] if not arm.get("skipped")]


def roc_figure(arms: list[dict[str, Any]], path: Path) -> None:
    """One ROC curve per arm (of its seed-averaged scores), the chance diagonal, AUROC in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="chance")
    for arm in arms:
        auroc = (arm.get("metrics") or {}).get("auroc")
        ax.plot(arm["roc"]["fpr"], arm["roc"]["tpr"], linewidth=1.4,
                label=_text(f"{arm['name']} (AUROC {interval(auroc)})"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title("ROC on the held-out real test fold", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def _point(metric: dict[str, Any] | None) -> tuple[float, float, float]:
    """(value, distance down to lo, up to hi), NaN for an undefined value so the point is not drawn."""
    if metric is None or metric.get("value") is None:
        return np.nan, 0.0, 0.0
    value = metric["value"]
    lo = value if metric.get("lo") is None else metric["lo"]
    hi = value if metric.get("hi") is None else metric["hi"]
    return value, value - lo, hi - value


def ratio_figure(arms: list[dict[str, Any]], path: Path) -> None:
    """Each RATIO_METRICS metric against the ratio of synthetic to real rare-class images, with its 95% CI: the
    real-only arm at ratio 0, the synthetic arms at theirs; oversampling and the real control as reference lines."""
    plt = pyplot()
    series = sorted((a for a in arms if a["ratio"] is not None), key=lambda a: a["ratio"])
    ratios = [a["ratio"] for a in series]
    references = [a for a in arms if a["kind"] in REFERENCE_KINDS]
    fig, axes = plt.subplots(1, len(RATIO_METRICS), figsize=(5.0 * len(RATIO_METRICS), 3.8))
    for ax, key in zip(axes, RATIO_METRICS):
        points = np.array([_point((a.get("metrics") or {}).get(key)) for a in series]).reshape(-1, 3)
        ax.errorbar(ratios, points[:, 0], yerr=points[:, 1:].T, marker="o", capsize=4, color="#d62728",
                    label="real + synthetic (ratio 0 = real only)")
        for arm, style in zip(references, ("--", "-.", ":")):
            value = _point((arm.get("metrics") or {}).get(key))[0]
            if not np.isnan(value):
                ax.axhline(value, linestyle=style, color="#555", linewidth=1,
                           label=_text(f"{arm['name']}: {number(value)}"))
        ax.set_xscale("symlog", linthresh=1)  # ratio 0 stays on the axis, 0.5 to 10 spread out
        if ratios:
            ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        ax.set_xlabel("synthetic : real rare-class images")
        ax.set_ylabel(METRIC_LABELS[key])
        ax.set_title(f"{METRIC_LABELS[key]} (95% CI over patients)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def arm_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary table: per arm its sizes, each metric with its CI and its difference from the real-only arm."""
    rows = []
    for arm in record["arms"]:
        metrics, vs_real = arm.get("metrics") or {}, arm.get("vs_real") or {}
        cells = []
        for key in METRIC_LABELS:
            diff = vs_real.get(key)
            cells.append({"key": key, "value": interval(metrics.get(key)),
                          "sd": number((metrics.get(key) or {}).get("seed_sd")),
                          "diff": None if diff is None else interval(diff, "diff", "+"),
                          "p": None if diff is None else p_value(diff.get("p"))})
        ratio = "" if arm["ratio"] is None else f"{arm['ratio']:g}"
        rows.append({"name": arm["name"], "kind": arm["kind"], "ratio": ratio,
                     "train_images": arm.get("train_images"), "train_malignant": arm.get("train_malignant"),
                     "synthetic_images": arm.get("synthetic_images"), "extra_real": arm.get("extra_real"),
                     "seeds": len(arm.get("seeds") or []), "skipped": arm.get("skipped"), "cells": cells})
    return rows


def strata_rows(arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per field and value (in the order the arms give them): n and positives (the same test images for every
    arm) and each arm's AUROC with its CI, a dash where an arm has no such stratum or the AUROC is undefined."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for index, arm in enumerate(arms):
        for field, values in (arm.get("strata") or {}).items():
            for value, stratum in values.items():
                row = rows.setdefault((field, value), {"field": field, "value": value, "n": stratum["n"],
                                                       "positives": stratum["positives"], "auroc": [DASH] * len(arms)})
                row["auroc"][index] = interval(stratum.get("auroc"))
    return list(rows.values())


def write_page(out_dir: Path, record: dict[str, Any]) -> Path:
    """out_dir/benchmark.html and its figures from a benchmark.json record; returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ASSETS).mkdir(exist_ok=True)
    arms = ran(record)
    figures = {"roc": out_dir / ASSETS / "roc.png", "ratio": out_dir / ASSETS / "ratio.png"}
    roc_figure(arms, figures["roc"])
    ratio_figure(arms, figures["ratio"])
    context = {"record": record, "settings": record["settings"], "split": record["split"],
               "leakage": record["leakage"], "synthetic": record.get("synthetic"),
               "metric_labels": METRIC_LABELS, "arms": arm_rows(record), "ran": [a["name"] for a in arms],
               "strata": strata_rows(arms), "figures": {k: f"{ASSETS}/{p.name}" for k, p in figures.items()}}
    html = out_dir / "benchmark.html"
    render(html, "benchmark.html.j2", context)
    return html
