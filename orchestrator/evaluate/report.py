"""Writes an evaluation: evaluation.json (its contents and format: evaluate/record.py), evaluation.html
(templates/evaluation.html.j2) and its figures in evaluation_files/ (one histogram PNG per feature, real and
synthetic side by side; the skin-tone bands; with a run, the per-epoch trend; a thumbnail of each image of a
pair the memorization screen flagged). Links are relative, so the
folder can be moved as a whole. Every file is written to a temporary name and renamed into place."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from orchestrator.common.figures import pyplot, save_png
from orchestrator.common.htmlpage import write_page
from orchestrator.evaluate.features import FEATURES, UNRELIABLE, Evaluation, Feature, feature_values, read_image
from orchestrator.evaluate.record import evaluation_record, write_evaluation_record
from orchestrator.vision.skin_tone import BAND_NAMES

ASSETS = "evaluation_files"
PAIR_THUMB = 200  # px, long side of a flagged pair's thumbnails
REAL_COLOUR, SYNTH_COLOUR = "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Written:
    html: Path
    json: Path
    figures: tuple[Path, ...]


def _bins(feature: Feature, values: np.ndarray) -> np.ndarray:
    if feature.discrete:
        low, high = (int(values.min()), int(values.max())) if len(values) else (0, 1)
        return np.arange(low - 0.5, high + 1.5)
    if len(values) == 0 or values.min() == values.max():
        centre = float(values[0]) if len(values) else 0.0
        return np.linspace(centre - 0.5, centre + 0.5, 11)
    return np.linspace(values.min(), values.max(), 16)


def histogram(feature: Feature, real: Sequence[float], synth: Sequence[float], row: dict[str, Any],
              path: Path) -> None:
    """Two histograms (share of each set per bin) side by side on shared bins."""
    plt = pyplot()
    a, b = np.asarray(real, float), np.asarray(synth, float)
    bins = _bins(feature, np.concatenate([a, b]))
    width = (bins[1] - bins[0]) * 0.4
    centres = (bins[:-1] + bins[1:]) / 2
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    for values, offset, colour, name in ((a, -width / 2, REAL_COLOUR, "real"),
                                         (b, width / 2, SYNTH_COLOUR, "synthetic")):
        counts, _ = np.histogram(values, bins=bins)
        share = counts / max(len(values), 1)
        ax.bar(centres + offset, share, width=width, color=colour, label=f"{name} (n={len(values)})")
    ks = "" if row["ks"] is None else f"   KS D = {row['ks']:.3f}, p = {row['p_value']:.3g}"
    ax.set_title(f"{feature.label}{ks}", fontsize=9)
    ax.set_ylabel("share of images")
    if feature.discrete:
        ax.set_xticks(centres)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def tone_chart(real: dict[str, int], synth: dict[str, int], path: Path) -> None:
    plt = pyplot()
    labels = list(real)   # the bands, then "unreliable" (features.tone_counts)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for counts, offset, colour, name in ((real, -0.2, REAL_COLOUR, "real"), (synth, 0.2, SYNTH_COLOUR, "synthetic")):
        total = max(sum(counts.values()), 1)
        ax.bar(x + offset, [counts.get(b, 0) / total for b in labels], width=0.4, color=colour, label=name)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("share of images")
    ax.set_title("skin tone (ITA, Chardon bands)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def trend_chart(trend: list[dict[str, Any]], real_means: dict[str, float | None], path: Path) -> None:
    """KS against the real set per feature over the sampling points, and the TDS mean beside the real one."""
    plt = pyplot()
    labels = [t["label"].replace(" (before training)", "") for t in trend]
    x = np.arange(len(trend))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for feature in FEATURES:
        ks = [t["features"][feature.key]["ks"] for t in trend]
        left.plot(x, [np.nan if v is None else v for v in ks], marker="o", label=feature.key)
    left.set_ylim(0, 1.05)
    left.set_ylabel("KS D vs real (lower = closer)")
    left.legend(fontsize=6, ncol=2)
    tds = [t["features"]["tds"]["mean"] for t in trend]
    right.plot(x, [np.nan if v is None else v for v in tds], marker="o", color=SYNTH_COLOUR, label="samples")
    if real_means.get("tds") is not None:
        right.axhline(real_means["tds"], color=REAL_COLOUR, linestyle="--", label="real")
    right.set_ylabel("mean TDS estimate")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(x, labels, fontsize=7, rotation=30)
    fig.tight_layout()
    save_png(fig, path)


def thumbnail(source: Path, path: Path) -> bool:
    """A PAIR_THUMB px PNG of `source` at `path`; False when the file no longer decodes."""
    decoded = read_image(source, PAIR_THUMB)
    if decoded is None:
        return False
    image = decoded[0]
    scale = PAIR_THUMB / max(image.shape[:2])
    small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), small)
    os.replace(tmp, path)
    return True


def flagged_pairs(evaluation: Evaluation, out: Path) -> list[dict[str, Any]]:
    """Per flagged synthetic image: its name, its nearest real image, the similarity and both thumbnails' links
    (None where a file no longer decodes)."""
    for stale in (out / ASSETS).glob("memorized_*.png"):  # a pair an earlier run of this folder flagged
        stale.unlink()
    pairs = []
    for i, match in enumerate(evaluation.memorization.flagged):
        links = {}
        for side, root, name in (("synthetic", evaluation.synth.root, match.synthetic),
                                 ("real", evaluation.real.root, match.nearest_real)):
            path = out / ASSETS / f"memorized_{i:03d}_{side}.png"
            links[side] = f"{ASSETS}/{path.name}" if thumbnail(root / name, path) else None
        pairs.append({"synthetic": match.synthetic, "real": match.nearest_real, "similarity": match.similarity,
                      "synthetic_figure": links["synthetic"], "real_figure": links["real"]})
    return pairs


def write_evaluation(evaluation: Evaluation, out: Path) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    (out / ASSETS).mkdir(exist_ok=True)
    record = evaluation_record(evaluation)
    figures: list[Path] = []
    rows = []
    for feature, row in zip(FEATURES, record.features):
        path = out / ASSETS / f"hist_{feature.key}.png"
        histogram(feature, feature_values(evaluation.real_records, feature.key),
                  feature_values(evaluation.synth_records, feature.key), row, path)
        rows.append({**row, "figure": f"{ASSETS}/{path.name}"})
        figures.append(path)
    record = dataclasses.replace(record, features=rows)
    tone_path = out / ASSETS / "skin_tone.png"
    tone_chart(record.sets["real"]["skin_tone"], record.sets["synthetic"]["skin_tone"], tone_path)
    figures.append(tone_path)
    trend_figure = None
    if record.run is not None:
        trend_path = out / ASSETS / "trend.png"
        trend_chart(record.run["trend"], {r["key"]: r["real"]["mean"] for r in rows}, trend_path)
        figures.append(trend_path)
        trend_figure = f"{ASSETS}/{trend_path.name}"
    json_path = write_evaluation_record(out, record)
    context = {"summary": record, "features": rows, "tone_figure": f"{ASSETS}/{tone_path.name}",
               "trend_figure": trend_figure, "bands": (*BAND_NAMES, UNRELIABLE),
               "feature_keys": [f.key for f in FEATURES], "flagged_pairs": flagged_pairs(evaluation, out)}
    html_path = out / "evaluation.html"
    write_page(html_path, "evaluation.html.j2", context)
    return Written(html_path, json_path, tuple(figures))


def summary_lines(evaluation: Evaluation) -> list[str]:
    """One line per feature for the terminal: real vs synthetic means and medians, KS D and p."""
    lines = [f"{'feature':<22} {'real mean':>10} {'synth mean':>10} {'real med':>9} {'synth med':>9} "
             f"{'KS D':>6} {'p':>7}"]
    for row in evaluation.comparison():
        def fmt(v, w):
            return f"{'-':>{w}}" if v is None else f"{v:>{w}.3f}"
        lines.append(f"{row['key']:<22} {fmt(row['real']['mean'], 10)} {fmt(row['synthetic']['mean'], 10)} "
                     f"{fmt(row['real']['median'], 9)} {fmt(row['synthetic']['median'], 9)} "
                     f"{fmt(row['ks'], 6)} {fmt(row['p_value'], 7)}")
    return lines
