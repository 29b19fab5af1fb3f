"""Build the kohya training folder: select → image stage → captions → files, swapped into place atomically.

<out>/
  train/<repeats>_<class>/<image_id>.jpg + <image_id>.caption
  manifest.csv       one row per selected image (skipped ones too, with the reason)
  dataset.json       the settings and counts that `medsynth train` reads
  report.txt, report.png
The folder is built in a temporary sibling and renamed into place, so an interrupted build leaves the
previous dataset intact; a re-run reuses the earlier build's images (same content hash and size) and the
hair cache, so it does no image work. Because the swap replaces <out> whole, <out> must be new, empty or an
earlier build (it has dataset.json), must not hold the sources and must not lie inside an image folder
(checked_out).

One build at a time per <out>: a build holds an flock on <parent>/.<out>.lock (build_lock) from before it
reads anything until its swap is done, and a second build of the same <out> is refused at once, so no build
ever removes another's .<out>.building. Every failure after that (a write error, a full disk, SIGINT,
SIGTERM, SIGHUP once the CLI turns them into Interrupted) removes the temporary folder and leaves the
previous dataset as it was; a build killed outright (SIGKILL) leaves it for the next run, which removes it.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.dataset.captions import CaptionSettings, render_captions, write_captions
from orchestrator.dataset.settings import DatasetSettings
from orchestrator.common.errors import Interrupted, MedsynthError
from orchestrator.dataset.images import ImageJob, ImageResult, process_images
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.record import DatasetRecord, has_record, read_record, write_record
from orchestrator.dataset.report import DatasetReport, summarise, write_report
from orchestrator.dataset.select import read_duplicates, select_counting_duplicates
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
    duplicates: int = 0            # rows of the selected class left out by --duplicates
    missing: int = 0               # selected rows whose image is in none of the image folders


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
    """Undo what an interrupted build left: a half-built temporary folder, or a swap cut in the middle.
    Only under build_lock(out): without it, the "half-built" folder may be a running build's."""
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
    for folder in settings.images:
        # the dataset, its image cache and lock would be written into the images: a source gains no files
        real = Path(os.path.realpath(folder))
        if real in target.parents:
            raise MedsynthError(f"out {out} is inside the image folder {folder}: source folders must gain no "
                                f"files; choose an out folder outside it")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MedsynthError(f"out {out} exists and is not a plain folder (a file or a link): "
                            f"choose another out folder")
    if out.is_dir() and any(out.iterdir()) and not has_record(out):
        raise MedsynthError(f"out {out} is a non-empty folder without dataset.json (not an earlier dataset "
                            f"build): the build replaces the whole folder, so choose another out folder or empty it")
    return out


@dataclass(frozen=True)
class _Plan:
    selected: pd.DataFrame         # the rows to train on, sorted by image id
    sources: dict[str, Path]       # image id -> its file, for the rows whose image was found
    missing: dict[str, str]        # image id -> "missing"
    duplicates: int                # rows of the selected class left out by --duplicates
    caption_settings: CaptionSettings
    class_dir: Path


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
    try:
        table = read_metadata(list(settings.csv), settings.format)
    except OSError as exc:  # a link loop, no permission, an I/O error: one line naming the file
        name = exc.filename or ", ".join(map(str, settings.csv))
        raise MedsynthError(f"{name}: cannot read the metadata file: {exc.strerror or exc}") from exc
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
                            f"in {', '.join(map(str, settings.images))} ({len(missing)} missing in all; --strict)")
    return _Plan(selected, sources, missing, duplicates, caption_settings, Path("train") / class_dir_name(settings))


def lock_path(out: Path) -> Path:
    """The lock file of builds of `out`: beside it, in its parent (where the image cache also lives)."""
    return out.with_name(f".{out.name}.lock")


@contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock on building `out`, or refuse at once when another build holds it.

    flock on `.<out>.lock`, which holds the holder's pid; the kernel drops the lock when its process dies,
    however it dies, so a stale file never blocks. The file is removed on release while still locked; a build
    that opened the removed file before that sees it is no longer the one at the path, and locks anew."""
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MedsynthError(f"out {out}: cannot write in {out.parent}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise MedsynthError(f"out {out}: another medsynth dataset build{pid} is building this folder; "
                                f"wait for it to finish or stop it, then run again") from None
        except OSError:
            pass  # no flock on this file system (some network mounts): build unlocked, as before
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            current = False
        if current:
            break
        os.close(fd)  # locked a file the previous holder had just removed: lock the one at the path now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    except OSError:
        pass  # the pid is only for the refusal message (a full disk may not take it)
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _make_parents(out: Path) -> list[Path]:
    """Create the missing folders above `out`; those created, deepest first (removed again if the build fails)."""
    missing, folder = [], out.parent
    while not folder.exists() and not folder.is_symlink() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_empty(created[::-1])
            raise MedsynthError(f"out {out}: cannot create the folder {folder}: {exc.strerror or exc}") from exc
        created.append(folder)
    return created[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (the image cache is kept for the re-run), or gone


def _discard_partial(tmp: Path, out: Path) -> str:
    """After a failed or interrupted build (under its lock): remove the temporary folder, finish a swap cut in
    the middle; what was done, for the error message."""
    old = out.with_name(f".{out.name}.old")
    if old.exists() and not out.exists():
        os.rename(old, out)  # cut between the swap's two renames: the previous dataset comes back
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)  # cut after them: the new dataset is in place
    if not (tmp.exists() or tmp.is_symlink()):
        return ""
    for _ in range(3):  # an image worker still draining may add a file while the tree is removed
        shutil.rmtree(tmp, ignore_errors=True)
        if not tmp.exists():
            break
        time.sleep(0.2)
    if tmp.exists():
        return f"could not remove the partial build {tmp} (the next run removes it)"
    kept = f"the previous dataset in {out} is intact" if has_record(out) else f"{out} was not written"
    return f"removed the partial build {tmp}; {kept}"


def _explained(exc: BaseException, note: str, tmp: Path) -> BaseException:
    """The error to show for `exc` once the partial build is gone: a write error or a signal says so."""
    if isinstance(exc, Interrupted):
        return exc.with_detail(note)
    if isinstance(exc, OSError):  # writing the build (a write() that fails has no file name: the build's folder)
        tail = f"; {note}" if note else ""
        return MedsynthError(f"cannot write {exc.filename or tmp}: {exc.strerror or exc}{tail}")
    if not note:
        return exc
    if isinstance(exc, MedsynthError) and isinstance(exc.__cause__, OSError):
        return MedsynthError(f"{exc}; {note}")
    return exc


def build_dataset(settings: DatasetSettings, *, dry_run: bool = False, progress: bool = True) -> BuildResult:
    out = checked_out(settings)
    if dry_run:
        plan = _plan(settings)
        found = plan.selected[[i not in plan.missing for i in plan.selected["image_id"]]]
        report = summarise(found, hair=None, skipped=0, duplicates=plan.duplicates, missing=len(plan.missing),
                           planned=True)
        return BuildResult(out, len(plan.selected), 0, len(plan.missing), 0, report, dry_run=True,
                           duplicates=plan.duplicates, missing=len(plan.missing))

    created = _make_parents(out)
    tmp = out.with_name(f".{out.name}.building")
    try:
        # a second build of the same out is refused here, before it reads anything or touches the first's work
        with build_lock(out):
            try:
                recover_interrupted(out)  # what a killed build left: safe, the lock says none is running
                return _build(settings, _plan(settings), out, tmp, progress)
            except BaseException as exc:
                explained = _explained(exc, _discard_partial(tmp, out), tmp)
                if explained is exc:
                    raise
                raise explained from (exc.__cause__ if isinstance(exc, MedsynthError) else exc)
    except BaseException:
        _remove_empty(created)
        raise


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
    results = [results_by_id.get(i) for i in selected["image_id"]]

    failed = [(i, r.error) for i, r in results_by_id.items() if r.error]
    if settings.strict and failed:
        image_id, reason = failed[0]
        row = selected[selected["image_id"] == image_id].iloc[0]
        raise MedsynthError(f"{row['source_file']}:{row['source_line']}: image {sources[image_id]}: {reason} (--strict)")

    ok_mask = [r is not None and r.error is None for r in results]
    ok_rows = selected[ok_mask].reset_index(drop=True)
    hairy = [r.hairy for r in results if r is not None and r.error is None]
    tones = [tone_band(r.ita) if r.ita is not None else None for r in results if r is not None and r.error is None]
    captions = dict(zip(ok_rows["image_id"], render_captions(ok_rows, hairy, plan.caption_settings,
                                                             skin_tones=tones if settings.skin_tone else None)))
    write_captions(tmp / class_dir, captions.items(), CAPTION_EXTENSION)

    rows = _manifest_rows(selected, results, captions, output_paths, missing)
    manifest = _manifest_text(rows)
    (tmp / "manifest.csv").write_text(manifest, encoding="utf-8", newline="")
    written = sum(ok_mask)
    if written == 0:
        reasons = pd.Series([r["skip_reason"] for r in rows]).value_counts().to_dict()
        raise MedsynthError(f"no usable images among {len(rows)} selected rows (skipped: {reasons}); "
                            f"check --images ({', '.join(map(str, settings.images))})")
    report = summarise(ok_rows, hair=hairy, skipped=len(rows) - written,
                       skin_tones=tones if settings.skin_tone else None, duplicates=plan.duplicates,
                       skip_reasons=pd.Series([r["skip_reason"] for r in rows if r["skip_reason"]]).value_counts().to_dict())
    write_report(report, tmp / "report.txt", tmp / "report.png")
    write_record(tmp, DatasetRecord(
        class_name=settings.class_name, repeats=settings.repeats, resolution=resolution,
        image_dir=class_dir.as_posix(), images=written, skipped=len(rows) - written, trigger=settings.trigger,
        caption_extension=CAPTION_EXTENSION, manifest_sha256=hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
        caption_template=str(settings.caption_template), site_map=dict(settings.site_map)))
    _swap_into_place(tmp, out)
    return BuildResult(out, len(selected), written, len(rows) - written, reused, report, dry_run=False,
                       duplicates=plan.duplicates, missing=len(missing))
