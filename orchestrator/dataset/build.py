"""Build the kohya training folder: select → image stage → captions → files, swapped into place atomically.

<out>/
  train/<repeats>_<class>/<image_id>.jpg + <image_id>.caption   (.png with the loss mask as alpha: --masks)
  manifest.csv       one row per selected image (skipped ones too, with the reason; its fold with a split)
  dataset.json       the settings and counts that `medsynth train` reads (orchestrator.dataset.record)
  report.txt, report.png
The folder is built in a temporary sibling and swapped into place under a lock (orchestrator.dataset.outfolder,
which also says what <out> may be), so an interrupted build leaves the previous dataset intact; a re-run
reuses the earlier build's images (same content hash and size) and the hair cache, so it does no image work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.dataset.captions import CaptionSettings, render_captions, write_captions
from orchestrator.dataset.settings import DatasetSettings, load_settings, selection_warnings
from orchestrator.common.errors import MedsynthError, stop_signals_raise
from orchestrator.dataset.images import ImageJob, ImageResult, process_images
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.masks import add_masks, check_masks_setting
from orchestrator.dataset.outfolder import building, checked_out, swap_into_place
from orchestrator.dataset.record import DatasetRecord, has_record, read_record, write_record
from orchestrator.dataset.report import DatasetReport, summarise, write_report
from orchestrator.dataset.select import read_duplicates, select_counting_duplicates
from orchestrator.dataset.split import Split, hold_out, read_split
from orchestrator.vision.skin_tone import BAND_NAMES, resolve_tone

MANIFEST_COLUMNS = (
    "image_id", "status", "skip_reason", "caption", "hair", "hair_score", "ita", "skin_tone", "skin_tone_source",
    "skin_tone_reason", "output_path", "sha256", "width", "height", "out_width", "out_height",
    "patient_id", "lesion_id", "sex", "age", "fitzpatrick", "site", "diagnosis", "malignant",
    "source", "source_file", "source_line", "attribution", "license", "fold",
)
# the names an ISIC download gives its images, looked up as written (a case-sensitive file system tells .JPG from
# .jpg)
SOURCE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
CAPTION_EXTENSION = ".caption"
CACHE_NAME = ".medsynth-image-cache.json"


@dataclass(frozen=True)
class BuildResult:
    settings: DatasetSettings
    out: Path
    selected: int
    written: int
    skipped: int
    reused: int
    report: DatasetReport
    dry_run: bool
    duplicates: int = 0            # rows of the selected class left out by --duplicates
    missing: int = 0               # selected rows whose image is in none of the image folders


def class_dir_name(settings: DatasetSettings) -> str:
    return f"{settings.repeats}_{settings.class_name}"


def find_image(name: str, dirs: tuple[Path, ...]) -> Path | None:
    """The first `<name>.<jpg|jpeg|png>` in the image folders, in the order they were given."""
    for folder in dirs:
        for suffix in SOURCE_IMAGE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.exists() or candidate.is_symlink():
                return candidate
    return None


def _previous_outputs(out: Path, resolution: int | None) -> dict[str, Path]:
    """sha256 -> image file of the dataset already at `out`, when it was built at the same size."""
    manifest = out / "manifest.csv"
    if not manifest.is_file() or not has_record(out):
        return {}
    try:
        built = read_record(out)
        old = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (MedsynthError, OSError, ValueError, pd.errors.ParserError):
        return {}  # an unreadable earlier build is simply not reused
    if built.resolution != resolution or "sha256" not in old or "output_path" not in old:
        return {}
    if built.masks is not None:  # its images carry their masks (PNG, RGBA): the image stage writes plain ones
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


def _tones(selected: pd.DataFrame, results: list[ImageResult | None], enabled: bool) -> list[tuple[str, str, str]]:
    """(skin_tone, skin_tone_source, skin_tone_reason) of each selected row (vision/skin_tone.resolve_tone): the
    metadata's Fitzpatrick type, else the ITA's band; all "" without --skin-tone and for skipped rows."""
    return [resolve_tone(_text(fitzpatrick) or None, result.tone) if enabled and result and result.error is None
            else ("", "", "") for fitzpatrick, result in zip(selected["fitzpatrick"], results)]


def _manifest_rows(selected: pd.DataFrame, results: list[ImageResult | None], captions: dict[str, str],
                   output_paths: dict[str, str], missing: dict[str, str],
                   tones: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    rows = []
    for (_, lesion), result, (band, source, reason) in zip(selected.iterrows(), results, tones):
        tone = result.tone if result else None
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
            "ita": f"{tone.ita:.2f}" if tone and tone.ita is not None else "",
            "skin_tone": band, "skin_tone_source": source, "skin_tone_reason": reason,
            "output_path": output_paths[image_id] if ok else "",
            "sha256": _text(result.sha256 if result else None),
            "width": _text(result.width if result else None),
            "height": _text(result.height if result else None),
            "out_width": _text(result.out_width if result and ok else None),
            "out_height": _text(result.out_height if result and ok else None),
        }
        for column in ("patient_id", "lesion_id", "sex", "age", "fitzpatrick", "site", "diagnosis", "source", "source_file",
                       "source_line", "attribution", "license"):
            row[column] = _text(lesion[column])
        row["malignant"] = _text(lesion["malignant"]).lower()
        row["fold"] = _text(lesion.get("fold"))   # only with a split
        rows.append(row)
    return rows


def _manifest_text(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@dataclass(frozen=True)
class _Plan:
    selected: pd.DataFrame         # the rows to train on, sorted by image id
    sources: dict[str, Path]       # image id -> its file, for the rows whose image was found
    missing: dict[str, str]        # image id -> "missing"
    duplicates: int                # rows of the selected class left out by --duplicates
    caption_settings: CaptionSettings
    class_dir: Path
    split: Split | None            # the split whose test fold was left out


def _plan(settings: DatasetSettings) -> _Plan:
    """Read, select and find the images: everything a dry run reports, and the build starts from."""
    for folder in settings.images:
        try:
            is_dir = stat.S_ISDIR(os.stat(folder).st_mode)
        except FileNotFoundError:
            raise MedsynthError(f"{folder}: image folder not found") from None
        except OSError as exc:  # a link loop, no permission
            raise MedsynthError(f"{folder}: cannot read the image folder: {exc.strerror or exc}") from exc
        if not is_dir:
            raise MedsynthError(f"{folder}: is not a folder")
    check_masks_setting(settings.masks, settings.images)
    try:
        table = read_metadata(list(settings.csv), settings.format)
    except OSError as exc:  # a link loop, no permission, an I/O error: one line naming the file
        name = exc.filename or ", ".join(map(str, settings.csv))
        raise MedsynthError(f"{name}: cannot read the metadata file: {exc.strerror or exc}") from exc
    split = read_split(settings.split_file) if settings.split_file else None
    if split is not None:   # the test patients' images are left out before anything else looks at them
        table = hold_out(table, split, settings.test_fold, settings.split_file)
    drop = read_duplicates(settings.duplicates) if settings.duplicates else set()
    selected, duplicates = select_counting_duplicates(
        table, diagnoses=None if settings.benign else settings.diagnoses, benign=settings.benign, drop_ids=drop)
    selected = selected.sort_values("image_id").reset_index(drop=True)
    caption_settings = CaptionSettings(template=settings.caption_template, trigger=settings.trigger,
                                       site_map=dict(settings.site_map))
    # a missing template or a template error shows now (dry run too), not after the image stage
    render_captions(selected.head(1), [False], caption_settings,
                    skin_tones=[BAND_NAMES[0]] if settings.skin_tone else None)

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
                            f"in {', '.join(map(str, settings.images))} ({len(missing)} missing in all; strict)")
    return _Plan(selected, sources, missing, duplicates, caption_settings, Path("train") / class_dir_name(settings),
                 split)


def build_from_options(*, config: Path | None, options: Mapping[str, Any], cwd: Path, dry_run: bool = False,
                       progress: bool = True, warn: Callable[[str], None]) -> BuildResult:
    """`medsynth dataset build`: the settings stacked (load_settings), what looks wrong in them given to `warn`
    before the work starts, then the build, which SIGINT, SIGTERM and SIGHUP stop through its clean-up (no
    partial folder is left behind)."""
    settings = load_settings(config=config, options=options, cwd=cwd)
    for warning in selection_warnings(settings):
        warn(warning)
    with stop_signals_raise():
        return build_dataset(settings, dry_run=dry_run, progress=progress)


def build_dataset(settings: DatasetSettings, *, dry_run: bool = False, progress: bool = True) -> BuildResult:
    out = checked_out(settings)
    if dry_run:
        plan = _plan(settings)
        found = plan.selected[[i not in plan.missing for i in plan.selected["image_id"]]]
        report = summarise(found, hair=None, skipped=0, duplicates=plan.duplicates, missing=len(plan.missing),
                           planned=True)
        return BuildResult(settings, out, len(plan.selected), 0, len(plan.missing), 0, report, dry_run=True,
                           duplicates=plan.duplicates, missing=len(plan.missing))

    with building(out) as tmp:
        return _build(settings, _plan(settings), out, tmp, progress)


def _build(settings: DatasetSettings, plan: _Plan, out: Path, tmp: Path, progress: bool) -> BuildResult:
    selected, sources, missing, class_dir = plan.selected, plan.sources, plan.missing, plan.class_dir
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
    failed = [(i, r.error) for i, r in results_by_id.items() if r.error]
    if settings.strict and failed:
        image_id, reason = failed[0]
        row = selected[selected["image_id"] == image_id].iloc[0]
        raise MedsynthError(f"{row['source_file']}:{row['source_line']}: image {sources[image_id]}: {reason} (strict)")
    if settings.masks is not None:
        results_by_id = add_masks(results_by_id, output_paths, tmp, masks=settings.masks,
                                  margin=settings.mask_margin, workers=settings.workers, strict=settings.strict,
                                  progress=progress)
    results = [results_by_id.get(i) for i in selected["image_id"]]

    ok_mask = [r is not None and r.error is None for r in results]
    ok_rows = selected[ok_mask].reset_index(drop=True)
    hairy = [r.hairy for r in results if r is not None and r.error is None]
    row_tones = _tones(selected, results, settings.skin_tone)
    tones = [tone for tone, ok in zip(row_tones, ok_mask) if ok]
    captions = dict(zip(ok_rows["image_id"], render_captions(ok_rows, hairy, plan.caption_settings,
                                                             skin_tones=[band or None for band, _, _ in tones]
                                                             if settings.skin_tone else None)))
    write_captions(tmp / class_dir, captions.items(), CAPTION_EXTENSION)

    rows = _manifest_rows(selected, results, captions, output_paths, missing, row_tones)
    manifest = _manifest_text(rows)
    (tmp / "manifest.csv").write_text(manifest, encoding="utf-8", newline="")
    written = sum(ok_mask)
    if written == 0:
        reasons = pd.Series([r["skip_reason"] for r in rows]).value_counts().to_dict()
        raise MedsynthError(f"no usable images among {len(rows)} selected rows (skipped: {reasons}); "
                            f"check the image folders ({', '.join(map(str, settings.images))})")
    report = summarise(ok_rows, hair=hairy, skipped=len(rows) - written,
                       skin_tones=tones if settings.skin_tone else None, duplicates=plan.duplicates,
                       skip_reasons=pd.Series([r["skip_reason"] for r in rows if r["skip_reason"]]).value_counts().to_dict())
    write_report(report, tmp / "report.txt", tmp / "report.png")
    write_record(tmp, DatasetRecord(
        class_name=settings.class_name, repeats=settings.repeats, resolution=resolution,
        image_dir=class_dir.as_posix(), images=written, skipped=len(rows) - written, trigger=settings.trigger,
        caption_extension=CAPTION_EXTENSION, manifest_sha256=hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
        caption_template=str(settings.caption_template), site_map=dict(settings.site_map),
        **({} if plan.split is None else {"split_sha256": plan.split.sha256, "test_fold": settings.test_fold,
                                          "group_kind": plan.split.group_kind,
                                          "split_file": str(Path(settings.split_file).resolve())}),
        **({} if settings.masks is None else {"masks": settings.masks, "mask_margin": settings.mask_margin})))
    swap_into_place(tmp, out)
    return BuildResult(settings, out, len(selected), written, len(rows) - written, reused, report, dry_run=False,
                       duplicates=plan.duplicates, missing=len(missing))
