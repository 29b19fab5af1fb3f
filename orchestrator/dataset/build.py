"""Build the kohya training folder: select → image stage → captions → files, swapped into place atomically.

<out>/
  train/<repeats>_<class>/<image_id>.jpg + <image_id>.caption   one per class (orchestrator.dataset.classes);
                     .png with the loss mask as alpha: --masks
  reg/1_<class>/...  regularization images, when asked for (never masked: they train on the whole image)
  manifest.csv       one row per selected image (skipped ones too, with the reason; its fold with a split; its
                     folder and trigger)
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.dataset.classes import SOURCE_IMAGE_SUFFIXES, Folder, plan_folders
from orchestrator.dataset.captions import CaptionSettings, render_captions, write_captions
from orchestrator.dataset.settings import DatasetSettings, load_settings, selection_warnings
from orchestrator.common.hashing import sha256_of
from orchestrator.common.errors import MedsynthError, stop_signals_raise
from orchestrator.dataset.images import ImageJob, ImageResult, process_images
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.masks import add_masks, check_masks_setting
from orchestrator.dataset.outfolder import building, checked_out, swap_into_place
from orchestrator.dataset.record import DatasetRecord, has_record, read_record, write_record
from orchestrator.dataset.report import DatasetReport, FolderCount, summarise, write_report
from orchestrator.dataset.select import read_duplicates, select_counting_duplicates
from orchestrator.dataset.split import Split, hold_out, read_split
from orchestrator.vision.skin_tone import BAND_NAMES, resolve_tone

MANIFEST_COLUMNS = (
    "image_id", "status", "skip_reason", "caption", "hair", "hair_score", "ita", "skin_tone", "skin_tone_source",
    "skin_tone_reason", "output_path", "sha256", "width", "height", "out_width", "out_height",
    "patient_id", "lesion_id", "sex", "age", "fitzpatrick", "site", "diagnosis", "malignant",
    "source", "source_file", "source_line", "attribution", "license", "fold", "folder", "trigger",
)
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
        return sha256_of(path)
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
                   tones: list[tuple[str, str, str]], folder_of: Mapping[str, Folder]) -> list[dict[str, str]]:
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
        # the folder (train/<repeats>_<class>, reg/...) and the trigger its captions were rendered with
        row["folder"], row["trigger"] = folder_of[image_id].path.as_posix(), folder_of[image_id].trigger
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
    selected: pd.DataFrame         # the rows of every folder, folder by folder, each sorted by image id
    sources: dict[str, Path]       # image id -> its file, for the rows whose image was found
    missing: dict[str, str]        # image id -> "missing"
    duplicates: int                # rows of the selected class left out by --duplicates
    caption_settings: CaptionSettings
    folders: list[Folder]          # the training folders, then the reg folder (orchestrator.dataset.classes)
    folder_of: dict[str, Folder]   # image id -> its folder
    split: Split | None            # the split whose test fold was left out


def _find(rows: pd.DataFrame, dirs: tuple[Path, ...], sources: dict[str, Path], missing: dict[str, str]) -> None:
    for image_id, name in zip(rows["image_id"], rows["image_name"]):
        found = find_image(name, dirs)
        if found is None:
            missing[image_id] = "missing"
        else:
            sources[image_id] = found


def _plan(settings: DatasetSettings) -> _Plan:
    """Read, select and find the images: everything a dry run reports, and the build starts from."""
    for folder in (*settings.images, *((settings.reg_images,) if settings.reg_images else ())):
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
    _find(selected, settings.images, sources, missing)
    folders = plan_folders(settings, table, selected, found=set(sources), drop=drop)
    for folder in folders[1:]:
        if folder.is_reg:
            _find(folder.rows, folder.image_dirs, sources, missing)
    everything = pd.concat([f.rows for f in folders], ignore_index=True)
    if settings.strict and missing:
        first = everything[everything["image_id"] == next(iter(missing))].iloc[0]
        raise MedsynthError(f"{first['source_file']}:{first['source_line']}: image '{first['image_name']}' not found "
                            f"in {', '.join(map(str, settings.images))} ({len(missing)} missing in all; strict)")
    folder_of = {image_id: folder for folder in folders for image_id in folder.rows["image_id"]}
    return _Plan(everything, sources, missing, duplicates, caption_settings, folders, folder_of, split)


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
        training = pd.Series([not plan.folder_of[i].is_reg for i in found["image_id"]], index=found.index, dtype=bool)
        report = summarise(found[training], hair=None, skipped=0, duplicates=plan.duplicates,
                           missing=len(plan.missing), planned=True, folders=_balance(plan, found["image_id"]))
        return BuildResult(settings, out, len(plan.selected), 0, len(plan.missing), 0, report, dry_run=True,
                           duplicates=plan.duplicates, missing=len(plan.missing))

    with building(out) as tmp:
        return _build(settings, _plan(settings), out, tmp, progress)


def _balance(plan: _Plan, image_ids: pd.Series) -> tuple[FolderCount, ...]:
    """Images per folder, as the report's balance shows them."""
    counts = image_ids.map(lambda i: plan.folder_of[i].path).value_counts()
    return tuple(FolderCount(f.path.as_posix(), int(counts.get(f.path, 0)), f.repeats, f.is_reg) for f in plan.folders)


def _write_folder_captions(tmp: Path, plan: _Plan, ok_rows: pd.DataFrame, hairy: list[bool | None],
                           tones: list[str | None] | None) -> dict[str, str]:
    """Each folder's captions, rendered with its own trigger (a reg folder's: its class word)."""
    captions: dict[str, str] = {}
    for folder in plan.folders:
        at = [n for n, i in enumerate(ok_rows["image_id"]) if plan.folder_of[i] is folder]
        rows = ok_rows.iloc[at].reset_index(drop=True)
        texts = render_captions(rows, [hairy[n] for n in at], replace(plan.caption_settings, trigger=folder.trigger),
                                skin_tones=None if tones is None else [tones[n] for n in at])
        write_captions(tmp / folder.path, zip(rows["image_id"], texts), CAPTION_EXTENSION)
        captions.update(zip(rows["image_id"], texts))
    return captions


def _build(settings: DatasetSettings, plan: _Plan, out: Path, tmp: Path, progress: bool) -> BuildResult:
    selected, sources, missing = plan.selected, plan.sources, plan.missing
    for folder in plan.folders:
        (tmp / folder.path).mkdir(parents=True)
    resolution = settings.resolution if settings.resize else None
    previous = _previous_outputs(out, resolution)

    jobs, output_paths, reused = [], {}, 0
    for image_id in selected["image_id"]:
        src = sources.get(image_id)
        if src is None:
            continue
        suffix = ".jpg" if settings.resize else src.suffix.lower()
        rel = Path(plan.folder_of[image_id].path) / f"{image_id}{suffix}"
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
    if settings.masks is not None:  # the training folders' images; a reg image has no lesion to mask
        results_by_id |= add_masks({i: r for i, r in results_by_id.items() if not plan.folder_of[i].is_reg},
                                   output_paths, tmp, masks=settings.masks, margin=settings.mask_margin,
                                   workers=settings.workers, strict=settings.strict, progress=progress)
    results = [results_by_id.get(i) for i in selected["image_id"]]

    ok_mask = [r is not None and r.error is None for r in results]
    ok_rows = selected[ok_mask].reset_index(drop=True)
    hairy = [r.hairy for r in results if r is not None and r.error is None]
    row_tones = _tones(selected, results, settings.skin_tone)
    tones = [tone for tone, ok in zip(row_tones, ok_mask) if ok]
    captions = _write_folder_captions(tmp, plan, ok_rows, hairy,
                                      [band or None for band, _, _ in tones] if settings.skin_tone else None)

    rows = _manifest_rows(selected, results, captions, output_paths, missing, row_tones, plan.folder_of)
    manifest = _manifest_text(rows)
    (tmp / "manifest.csv").write_text(manifest, encoding="utf-8", newline="")
    written = sum(ok_mask)
    balance = _balance(plan, ok_rows["image_id"])
    empty = next((b.folder for b in balance if b.images == 0), None)
    if empty is not None:
        reasons = pd.Series([r["skip_reason"] for r in rows if r["folder"] == empty]).value_counts().to_dict()
        raise MedsynthError(f"no usable images among {sum(reasons.values())} selected rows for {empty} (skipped: "
                            f"{reasons}); "
                            f"check the image folders ({', '.join(map(str, settings.images))})")
    training = pd.Series([not plan.folder_of[i].is_reg for i in ok_rows["image_id"]], dtype=bool)
    report = summarise(ok_rows[training], hair=[h for h, t in zip(hairy, training) if t],
                       skipped=len(rows) - written, duplicates=plan.duplicates, folders=balance,
                       skin_tones=[x for x, t in zip(tones, training) if t] if settings.skin_tone else None,
                       skip_reasons=pd.Series([r["skip_reason"] for r in rows if r["skip_reason"]]).value_counts().to_dict())
    write_report(report, tmp / "report.txt", tmp / "report.png")
    first = plan.folders[0]
    write_record(tmp, DatasetRecord(
        class_name=first.class_name, repeats=first.repeats, resolution=resolution,
        image_dir=first.path.as_posix(), images=balance[0].images, skipped=len(rows) - written,
        trigger=first.trigger, caption_extension=CAPTION_EXTENSION,
        manifest_sha256=hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
        caption_template=str(settings.caption_template), site_map=dict(settings.site_map),
        subsets=tuple({"image_dir": f.path.as_posix(), "class_name": f.class_name, "repeats": f.repeats,
                       "images": b.images, "trigger": f.trigger, "is_reg": f.is_reg}
                      for f, b in zip(plan.folders, balance)),
        **({} if plan.split is None else {"split_sha256": plan.split.sha256, "test_fold": settings.test_fold,
                                          "group_kind": plan.split.group_kind,
                                          "split_file": str(Path(settings.split_file).resolve())}),
        **({} if settings.masks is None else {"masks": settings.masks, "mask_margin": settings.mask_margin})))
    swap_into_place(tmp, out)
    return BuildResult(settings, out, len(selected), written, len(rows) - written, reused, report, dry_run=False,
                       duplicates=plan.duplicates, missing=len(missing))
