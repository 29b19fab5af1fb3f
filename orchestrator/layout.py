"""Build the kohya training folder: select → image stage → captions → files, swapped into place atomically.

<out>/
  train/<repeats>_<class>/<image_id>.jpg + <image_id>.caption
  manifest.csv       one row per selected image (skipped ones too, with the reason)
  dataset.json       the settings and counts that `medsynth train` reads
  report.txt, report.png
The folder is built in a temporary sibling and renamed into place, so an interrupted build leaves the
previous dataset intact; a re-run reuses the earlier build's images (same content hash and size) and the
hair cache, so it does no image work. Because the swap replaces <out> whole, <out> must be new, empty or an
earlier build (it has dataset.json) and must not hold the sources (checked_out).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.captions import CaptionSettings, render_captions, write_captions
from orchestrator.dataset_settings import DatasetSettings
from orchestrator.errors import MedsynthError
from orchestrator.images import ImageJob, ImageResult, process_images
from orchestrator.ingest import read_metadata
from orchestrator.report import DatasetReport, summarise, write_report
from orchestrator.select import read_duplicates, select_lesions
from orchestrator.vision.skin_tone import BAND_NAMES, tone_band

MANIFEST_COLUMNS = (
    "image_id", "status", "skip_reason", "caption", "hair", "hair_score", "ita", "skin_tone", "output_path", "sha256",
    "width", "height", "out_width", "out_height",
    "patient_id", "sex", "age", "site", "diagnosis", "malignant",
    "source", "source_file", "source_line", "attribution", "license",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
CAPTION_EXTENSION = ".caption"
CACHE_NAME = ".medsynth-image-cache.json"


@dataclass(frozen=True)
class BuildResult:
    out: Path
    selected: int
    written: int
    skipped: int
    reused: int
    report: DatasetReport
    dry_run: bool


def class_dir_name(settings: DatasetSettings) -> str:
    return f"{settings.repeats}_{settings.class_name}"


def find_image(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The first `<name>.<jpg|jpeg|png>` in the image folders, in the order they were given."""
    for folder in dirs:
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.exists() or candidate.is_symlink():
                return candidate
    return None


def _previous_outputs(out: Path, resolution: int | None) -> dict[str, Path]:
    """sha256 -> image file of the dataset already at `out`, when it was built at the same size."""
    manifest, meta = out / "manifest.csv", out / "dataset.json"
    if not manifest.is_file() or not meta.is_file():
        return {}
    try:
        built = json.loads(meta.read_text(encoding="utf-8"))
        old = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return {}  # an unreadable earlier build is simply not reused
    if built.get("resolution") != resolution or "sha256" not in old or "output_path" not in old:
        return {}
    ok = old[(old["status"] == "ok") & (old["sha256"] != "")]
    return {sha: out / rel for sha, rel in zip(ok["sha256"], ok["output_path"]) if (out / rel).is_file()}


def _sha256_of(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None


def _text(value) -> str:
    return "" if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else str(value)


def _manifest_rows(selected: pd.DataFrame, results: list[ImageResult | None], captions: dict[str, str],
                   output_paths: dict[str, str], missing: dict[str, str]) -> list[dict[str, str]]:
    rows = []
    for (_, lesion), result in zip(selected.iterrows(), results):
        image_id = lesion["image_id"]
        error = missing.get(image_id) or (result.error if result is not None else None)
        ok = error is None
        row = {
            "image_id": image_id,
            "status": "ok" if ok else "skipped",
            "skip_reason": error or "",
            "caption": captions.get(image_id, ""),
            "hair": _text(result.hairy if result else None).lower(),
            "hair_score": f"{result.hair_score:.4f}" if result and result.hair_score is not None else "",
            "ita": f"{result.ita:.2f}" if result and result.ita is not None else "",
            "skin_tone": tone_band(result.ita) if result and result.ita is not None else "",
            "output_path": output_paths[image_id] if ok else "",
            "sha256": _text(result.sha256 if result else None),
            "width": _text(result.width if result else None),
            "height": _text(result.height if result else None),
            "out_width": _text(result.out_width if result and ok else None),
            "out_height": _text(result.out_height if result and ok else None),
        }
        for column in ("patient_id", "sex", "age", "site", "diagnosis", "source", "source_file",
                       "source_line", "attribution", "license"):
            row[column] = _text(lesion[column])
        row["malignant"] = _text(lesion["malignant"]).lower()
        rows.append(row)
    return rows


def _manifest_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp`; the old folder survives until the new one is in place."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.rename(out, old)
    os.rename(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def recover_interrupted(out: Path) -> None:
    """Undo what an interrupted build left: a half-built temporary folder, or a swap cut in the middle."""
    tmp, old = out.with_name(f".{out.name}.building"), out.with_name(f".{out.name}.old")
    if tmp.exists():
        shutil.rmtree(tmp)
    if old.exists() and not out.exists():
        os.rename(old, out)


def _sources(settings: DatasetSettings) -> list[Path]:
    optional = (settings.duplicates, settings.caption_template)
    return [*settings.csv, *settings.images, *(p for p in optional if p is not None)]


def checked_out(settings: DatasetSettings) -> Path:
    """The dataset folder as an absolute path, refused where the swap would destroy what is not an earlier
    build: the whole folder is replaced, so `--out .` or `--out ~/Documents` must not be taken literally."""
    out = Path(os.path.abspath(settings.out))
    if out.parent == out:
        raise MedsynthError(f"out {settings.out}: a file system root cannot be replaced by a dataset")
    target = Path(os.path.realpath(out))
    for source in _sources(settings):
        real = Path(os.path.realpath(source))
        if real == target or target in real.parents:
            raise MedsynthError(f"out {out} holds the source {source}: the build replaces the whole folder; "
                                f"choose another out folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MedsynthError(f"out {out} exists and is not a plain folder (a file or a link): "
                            f"choose another out folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "dataset.json").is_file():
        raise MedsynthError(f"out {out} is a non-empty folder without dataset.json (not an earlier dataset "
                            f"build): the build replaces the whole folder, so choose another out folder or empty it")
    return out


def build_dataset(settings: DatasetSettings, *, dry_run: bool = False, progress: bool = True) -> BuildResult:
    out = checked_out(settings)
    for folder in settings.images:
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "image folder not found"
            raise MedsynthError(f"{folder}: {what}")
    table = read_metadata(list(settings.csv), settings.format)
    drop = read_duplicates(settings.duplicates) if settings.duplicates else set()
    selected = select_lesions(table, diagnoses=None if settings.benign else settings.diagnoses,
                              benign=settings.benign, drop_ids=drop).sort_values("image_id").reset_index(drop=True)
    caption_settings = CaptionSettings(template=settings.caption_template, trigger=settings.trigger,
                                       site_map=dict(settings.site_map))
    # a missing template or a template error shows now (dry run too), not after the image stage
    render_captions(selected.head(1), [False], caption_settings,
                    skin_tones=[BAND_NAMES[0]] if settings.skin_tone else None)

    class_dir = Path("train") / class_dir_name(settings)
    sources: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for image_id, name in zip(selected["image_id"], selected["image_name"]):
        found = find_image(name, settings.images)
        if found is None:
            missing[image_id] = "missing"
        else:
            sources[image_id] = found
    if settings.strict and missing:
        first = selected[selected["image_id"] == next(iter(missing))].iloc[0]
        raise MedsynthError(f"{first['source_file']}:{first['source_line']}: image '{first['image_name']}' not found "
                            f"in {', '.join(map(str, settings.images))} ({len(missing)} missing in all; --strict)")

    if dry_run:
        report = summarise(selected, hair=None, skipped=len(missing))
        return BuildResult(out, len(selected), 0, len(missing), 0, report, dry_run=True)

    recover_interrupted(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.building")
    (tmp / class_dir).mkdir(parents=True)
    resolution = settings.resolution if settings.resize else None
    previous = _previous_outputs(out, resolution)

    jobs, output_paths, reused = [], {}, 0
    for image_id in selected["image_id"]:
        src = sources.get(image_id)
        if src is None:
            continue
        suffix = ".jpg" if settings.resize else src.suffix.lower()
        rel = class_dir / f"{image_id}{suffix}"
        output_paths[image_id] = rel.as_posix()
        reuse = previous.get(_sha256_of(src)) if previous else None
        reused += reuse is not None
        jobs.append(ImageJob(image_id=image_id, src=src, dst=tmp / rel, resolution=resolution, reuse=reuse,
                             skin_tone=settings.skin_tone))
    # the cache sits beside the dataset, outside the swapped folder, so it outlives interrupted builds
    results_by_id = {r.image_id: r for r in process_images(
        jobs, workers=settings.workers, cache_path=out.parent / CACHE_NAME, progress=progress)}
    results = [results_by_id.get(i) for i in selected["image_id"]]

    failed = [(i, r.error) for i, r in results_by_id.items() if r.error]
    if settings.strict and failed:
        image_id, reason = failed[0]
        row = selected[selected["image_id"] == image_id].iloc[0]
        shutil.rmtree(tmp)
        raise MedsynthError(f"{row['source_file']}:{row['source_line']}: image {sources[image_id]}: {reason} (--strict)")

    ok_mask = [r is not None and r.error is None for r in results]
    ok_rows = selected[ok_mask].reset_index(drop=True)
    hairy = [r.hairy for r in results if r is not None and r.error is None]
    tones = [tone_band(r.ita) if r.ita is not None else None for r in results if r is not None and r.error is None]
    captions = dict(zip(ok_rows["image_id"], render_captions(ok_rows, hairy, caption_settings,
                                                             skin_tones=tones if settings.skin_tone else None)))
    write_captions(tmp / class_dir, captions.items(), CAPTION_EXTENSION)

    rows = _manifest_rows(selected, results, captions, output_paths, missing)
    manifest = _manifest_text(rows)
    (tmp / "manifest.csv").write_text(manifest, encoding="utf-8", newline="")
    written = sum(ok_mask)
    if written == 0:
        shutil.rmtree(tmp)
        reasons = pd.Series([r["skip_reason"] for r in rows]).value_counts().to_dict()
        raise MedsynthError(f"no usable images among {len(rows)} selected rows (skipped: {reasons}); "
                            f"check --images ({', '.join(map(str, settings.images))})")
    report = summarise(ok_rows, hair=hairy, skipped=len(rows) - written,
                       skin_tones=tones if settings.skin_tone else None,
                       skip_reasons=pd.Series([r["skip_reason"] for r in rows if r["skip_reason"]]).value_counts().to_dict())
    write_report(report, tmp / "report.txt", tmp / "report.png")
    meta = {
        "class_name": settings.class_name, "repeats": settings.repeats,
        "resolution": resolution, "image_dir": class_dir.as_posix(), "images": written,
        "skipped": len(rows) - written, "trigger": settings.trigger, "caption_extension": CAPTION_EXTENSION,
        # how the captions were worded, so `medsynth generate` words its prompts the same way
        "caption_template": str(settings.caption_template), "site_map": dict(settings.site_map),
        "manifest_sha256": hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
    }
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _swap_into_place(tmp, out)
    return BuildResult(out, len(selected), written, len(rows) - written, reused, report, dry_run=False)
