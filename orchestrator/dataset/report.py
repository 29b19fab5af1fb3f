"""The dataset report: counts by sex, age band, site, hair and (with --skin-tone) skin tone band, as text
and as a PNG of bar charts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from orchestrator.dataset.age import age_band
from orchestrator.vision.skin_tone import BAND_NAMES

MISSING = "(missing)"


@dataclass(frozen=True)
class FolderCount:
    """One folder of the build and its images: sd-scripts shows each training image `repeats` times an epoch."""

    folder: str
    images: int
    repeats: int
    is_reg: bool = False


@dataclass(frozen=True)
class DatasetReport:
    images: int
    skipped: int
    by_field: dict[str, dict[str, int]]
    skip_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0            # rows of the selected class left out as duplicates (--duplicates)
    missing: int = 0               # a plan's rows whose image is not in the image folders
    planned: bool = False          # a dry run's plan: `images` are the rows with an image, nothing was built
    folders: tuple[FolderCount, ...] = ()   # the class folders, then the reg folder


def _counts(values: Sequence) -> dict[str, int]:
    series = pd.Series([MISSING if v is None or v is pd.NA or pd.isna(v) else str(v) for v in values], dtype=object)
    counts = series.value_counts()
    # most frequent first, ties by name, so the text is stable between runs
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


UNRELIABLE = "unreliable"
FROM_METADATA = "(of these from metadata)"


def tone_counts(tones: Sequence[tuple[str, str, str]]) -> dict[str, int]:
    """Images per Chardon band, lightest first (the seed's point: darker bands are rare in ISIC), then
    UNRELIABLE (an ITA that the image cannot support, vision/skin_tone.py), MISSING (no tone at all) when
    any, and how many of the banded images took their band from the metadata's Fitzpatrick type. Each tone
    is (band, source, reason) as in the manifest; every band is listed, so empty ones show."""
    counts = {band: sum(t[0] == band for t in tones) for band in BAND_NAMES}
    counts[UNRELIABLE] = sum(not band and source == "ita" for band, source, _ in tones)
    missing = sum(not band and not source for band, source, _ in tones)
    return {**counts, **({MISSING: missing} if missing else {}),
            FROM_METADATA: sum(source == "metadata" for _, source, _ in tones)}


def summarise(table: pd.DataFrame, *, hair: Sequence[bool | None] | None, skipped: int,
              skip_reasons: Mapping[str, int] | None = None,
              skin_tones: Sequence[tuple[str, str, str]] | None = None, duplicates: int = 0, missing: int = 0,
              planned: bool = False, folders: Sequence[FolderCount] = ()) -> DatasetReport:
    by_field = {
        "sex": _counts(table["sex"].tolist()),
        "age band": _counts([age_band(a) for a in table["age"].tolist()]),
        "site": _counts(table["site"].tolist()),
    }
    if hair is not None:
        by_field["hair"] = _counts(["hairy" if h else ("not hairy" if h is not None else None) for h in hair])
    if skin_tones is not None:
        by_field["skin tone"] = tone_counts(skin_tones)
    return DatasetReport(images=len(table), skipped=skipped, by_field=by_field, skip_reasons=dict(skip_reasons or {}),
                         duplicates=duplicates, missing=missing, planned=planned, folders=tuple(folders))


def balance_lines(folders: Sequence[FolderCount]) -> list[str]:
    """Images × repeats per class folder and its share of an epoch; a reg folder's images are repeated by
    sd-scripts to the training count (orchestrator.dataset.classes)."""
    training = [f for f in folders if not f.is_reg]
    total = sum(f.images * f.repeats for f in training)
    lines = ["balance (images x repeats = per epoch):"]
    lines += [f"  {f.folder:<34} {f.images:>6} x {f.repeats:<3} = {f.images * f.repeats:>7}  "
              f"{100 * f.images * f.repeats / max(total, 1):5.1f}%" for f in training]
    lines += [f"  {f.folder:<34} {f.images:>6} reg images, repeated by sd-scripts to {total} per epoch"
              for f in folders if f.is_reg]
    return lines


def format_report(report: DatasetReport) -> str:
    if report.planned:  # nothing was built, so nothing was skipped: say what a build would take
        lines = [f"selected: {report.images + report.missing}   missing images: {report.missing}   "
                 f"duplicates dropped: {report.duplicates}   to build: {report.images}"]
    else:
        lines = [f"images: {report.images}   skipped: {report.skipped}   duplicates dropped: {report.duplicates}"]
    if len(report.folders) > 1:
        lines.extend(balance_lines(report.folders))
    if report.skip_reasons:
        lines.append("skipped because: " + ", ".join(f"{k} {v}" for k, v in report.skip_reasons.items()))
    for name, counts in report.by_field.items():
        lines.append(f"{name}:")
        lines.extend(f"  {value:<22} {count:>7}" for value, count in counts.items())
    return "\n".join(lines) + "\n"


def write_report(report: DatasetReport, text_path: Path, png_path: Path) -> None:
    text_path.write_text(format_report(report), encoding="utf-8")
    image = draw_report(report)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    image.save(tmp, format="PNG")
    os.replace(tmp, png_path)


def draw_report(report: DatasetReport):  # noqa: ANN201  (a PIL Image)
    """One panel of horizontal bars per field under a title line. Drawn with Pillow: importing and laying out
    a matplotlib figure cost ~0.6 s, a tenth of a whole build of a few hundred images."""
    from PIL import Image, ImageDraw, ImageFont

    font, title_font = ImageFont.load_default(size=12), ImageFont.load_default(size=15)
    fields = list(report.by_field.items())
    label_w = max((font.getlength(v) for _, counts in fields for v in counts), default=0) + 10
    bar_w, row_h, pad = 230, 18, 16
    panel_w = int(label_w + bar_w + 50)
    rows = max((len(counts) for _, counts in fields), default=0)
    width, height = max(1, len(fields)) * panel_w + pad, 40 + 26 + rows * row_h + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 10), f"{report.images} training images ({report.skipped} skipped, "
                         f"{report.duplicates} duplicates dropped)", font=title_font, fill="black")
    for i, (name, counts) in enumerate(fields):
        x0, y0 = pad + i * panel_w, 40
        draw.text((x0, y0), name, font=title_font, fill="black")
        top = max(counts.values(), default=0) or 1
        for j, (value, count) in enumerate(counts.items()):
            y = y0 + 26 + j * row_h
            draw.text((x0 + label_w - 6 - font.getlength(value), y + 2), value, font=font, fill="#333333")
            draw.rectangle((x0 + label_w, y + 2, x0 + label_w + max(1, round(bar_w * count / top)), y + row_h - 3),
                           fill="#8c564b")
            draw.text((x0 + label_w + round(bar_w * count / top) + 4, y + 2), str(count), font=font, fill="#333333")
    return image
