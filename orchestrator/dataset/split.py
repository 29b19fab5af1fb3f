"""Patient-level folds: which images a classifier may train on and which it is tested on, and nothing of a test
patient in a LoRA's training set.

assign_folds puts every image of the lesion table into one of K folds by stratified group k-fold: an image's
group is its patient, else its lesion (HAM10000 has lesions, not patients), else the image alone; a group lies
wholly in one fold, and each fold gets about the same share of malignant images. This module owns the split
file (write_split / read_split) and the leakage check of a built dataset against it (find_leaks).

The split file is a CSV whose first line names its version:
    # medsynth split, version 1
    image_id,group_kind,group_id,fold
Folds are numbered from 0.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.common.atomic import write_atomic
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.ingest.csvfile import where

SPLIT_VERSION = 1
VERSION_LINE = f"# medsynth split, version {SPLIT_VERSION}"
SPLIT_COLUMNS = ("image_id", "group_kind", "group_id", "fold")
# the first of these an image has is its group
GROUP_KINDS = {"patient": "patient_id", "lesion": "lesion_id", "image": "image_id"}


@dataclass(frozen=True)
class Split:
    table: pd.DataFrame    # SPLIT_COLUMNS, one row per image; fold is an int
    folds: int
    sha256: str = ""       # of the file it was read from ("" when made in memory)

    @property
    def group_kind(self) -> str:
        """The kinds of group the split uses, e.g. "patient", or "lesion+image" when some images have no lesion."""
        return "+".join(k for k in GROUP_KINDS if (self.table["group_kind"] == k).any())


def _groups(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(group_kind, group_id) of each row: its patient, else its lesion, else the image itself."""
    kind = pd.Series("image", index=table.index, dtype=object)
    group = table["image_id"].astype(object)
    for name in ("lesion", "patient"):   # the later assignment wins: patient over lesion over image
        column = table[GROUP_KINDS[name]]
        known = column.notna().to_numpy()
        kind[known] = name
        group = group.where(~known, column.astype(object))
    return kind, group


def assign_folds(table: pd.DataFrame, folds: int, seed: int = 0,
                 warn: Callable[[str], None] = lambda line: None) -> Split:
    """Every image of `table` in one of `folds` folds, groups whole, malignant images spread evenly.

    Groups holding malignant images are placed first, most malignant first, each into the fold with the fewest
    malignant images so far (then the fewest images); the rest, largest first, into the fold with the fewest
    images. The seed only orders groups of equal size, so a given seed always gives the same split.
    """
    kind, group = _groups(table)
    per_image = int((kind == "image").sum())
    if per_image:
        warn(f"warning: {per_image} of {len(table)} images have neither a patient nor a lesion id: each is its own "
             f"group, so two images of one patient may land in different folds")
    key = kind + ":" + group
    malignant = table["malignant"].fillna(False).astype(bool).to_numpy()
    stats = pd.DataFrame({"key": key.to_numpy(), "m": malignant}).groupby("key", sort=True)["m"].agg(["size", "sum"])
    if not 2 <= folds <= len(stats):
        raise MedsynthError(f"folds must be between 2 and the number of groups ({len(stats)}), got {folds}")
    order = np.random.default_rng(seed).permutation(len(stats))
    stats = stats.iloc[order]
    stats = stats.sort_values(["sum", "size"], ascending=False, kind="stable")
    images, bad = np.zeros(folds, dtype=np.int64), np.zeros(folds, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for name, size, count in zip(stats.index, stats["size"].to_numpy(), stats["sum"].to_numpy()):
        # lexsort's last key is its first: fewest malignant when the group has some, then fewest images
        fold = int(np.lexsort((images, bad if count else np.zeros_like(bad)))[0])
        fold_of[name] = fold
        images[fold] += size
        bad[fold] += count
    out = pd.DataFrame({"image_id": table["image_id"].astype(str).to_numpy(), "group_kind": kind.to_numpy(),
                        "group_id": group.astype(str).to_numpy(), "fold": key.map(fold_of).to_numpy(dtype=int)})
    return Split(out, folds)


def fold_summary(split: Split, table: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, groups, malignant images."""
    malignant = table.set_index("image_id")["malignant"].fillna(False).astype(bool)
    rows = split.table.assign(malignant=split.table["image_id"].map(malignant).fillna(False).astype(bool))
    summary = rows.groupby("fold").agg(images=("image_id", "size"), groups=("group_id", "nunique"),
                                       malignant=("malignant", "sum"))
    return summary.reindex(range(split.folds), fill_value=0)


def split_text(split: Split) -> str:
    buf = io.StringIO()
    buf.write(VERSION_LINE + "\n")
    split.table[list(SPLIT_COLUMNS)].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def write_split(path: Path, split: Split) -> None:
    write_atomic(path, split_text(split))


def read_split(path: Path) -> Split:
    """The split file at `path`; a MedsynthError naming the file, line and column of the first thing wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise MedsynthError(f"{path}: split file not found: write one with 'medsynth dataset split'") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MedsynthError(f"{path}: cannot read the split file: {getattr(exc, 'strerror', None) or exc}") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != VERSION_LINE:
        found = lines[0].strip()[:60] if lines else "an empty file"
        raise MedsynthError(f"{where(path, 1)}: not a medsynth split file of version {SPLIT_VERSION} (expected "
                            f"{VERSION_LINE!r}, found {found!r}): write it again with 'medsynth dataset split'")
    rows = list(csv.reader(lines[1:]))
    if not rows or tuple(h.strip() for h in rows[0]) != SPLIT_COLUMNS:
        raise MedsynthError(f"{where(path, 2)}: the header must be {','.join(SPLIT_COLUMNS)}")
    records, seen, group_fold = [], {}, {}
    for line, row in enumerate(rows[1:], start=3):
        if not row:
            continue
        at = where(path, line)
        if len(row) != len(SPLIT_COLUMNS):
            raise MedsynthError(f"{at}: expected {len(SPLIT_COLUMNS)} columns, found {len(row)}")
        image_id, kind, group_id, fold_text = (cell.strip() for cell in row)
        if not image_id or not group_id:
            raise MedsynthError(f"{at}: image_id and group_id must not be empty")
        if kind not in GROUP_KINDS:
            raise MedsynthError(f"{at}: group_kind {kind!r} is not one of {', '.join(GROUP_KINDS)}")
        if not fold_text.isdigit():
            raise MedsynthError(f"{at}: fold {fold_text!r} is not a fold number (0, 1, ...)")
        if image_id in seen:
            raise MedsynthError(f"{at}: image {image_id} is already listed on line {seen[image_id]}")
        fold = int(fold_text)
        if group_fold.setdefault((kind, group_id), fold) != fold:
            raise MedsynthError(f"{at}: {kind} {group_id} is in fold {fold} here and in fold "
                                f"{group_fold[(kind, group_id)]} above: a group must lie in one fold")
        seen[image_id] = line
        records.append((image_id, kind, group_id, fold))
    if not records:
        raise MedsynthError(f"{path}: no images listed after the header")
    table = pd.DataFrame(records, columns=list(SPLIT_COLUMNS))
    return Split(table, int(table["fold"].max()) + 1, hashlib.sha256(data).hexdigest())


def split_from_options(csv_paths: Sequence[Path], fmt: str | None, folds: int, seed: int, out: Path,
                       warn: Callable[[str], None]) -> pd.DataFrame:
    """`medsynth dataset split`: read the CSVs, assign folds, write the split file; the per-fold summary."""
    table = read_metadata(list(csv_paths), fmt)
    split = assign_folds(table, folds, seed, warn)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_split(out, split)
    return fold_summary(split, table)


def hold_out(table: pd.DataFrame, split: Split, test_fold: int, split_path: Path) -> pd.DataFrame:
    """The rows of `table` outside `test_fold`, with a `fold` column; every image must be in the split."""
    if not 0 <= test_fold < split.folds:
        raise MedsynthError(f"test_fold {test_fold} is not a fold of {split_path} (folds 0 to {split.folds - 1})")
    fold_of = split.table.set_index("image_id")["fold"]
    folds = table["image_id"].map(fold_of)
    if folds.isna().any():
        row = table[folds.isna()].iloc[0]
        raise MedsynthError(f"{where(row['source_file'], int(row['source_line']))}: image {row['image_id']} is not "
                            f"in {split_path}: the split is of another table (write it again from these CSVs)")
    kept = table.assign(fold=folds.astype(int))
    return kept[kept["fold"] != test_fold].reset_index(drop=True)


@dataclass(frozen=True)
class Leaks:
    """What of the test fold a dataset holds; all empty means no leak."""

    images: list[str]
    lesions: list[str]
    patients: list[str]

    def first(self, fold: int | None = None, holder: str = "the dataset") -> str | None:
        """A message naming the first leaked image, lesion or patient (of test fold `fold`, in `holder`); None when
        there is none."""
        of = "the test fold" if fold is None else f"test fold {fold}"
        for what, found in (("image", self.images), ("lesion", self.lesions), ("patient", self.patients)):
            if found:
                return f"{what} {found[0]} of {of} is in {holder} ({len(found)} {what}s in all)"
        return None


def find_leaks(dataset: Path, split: Split, test_fold: int) -> Leaks:
    """The test fold's images, lesions and patients that the manifest of the dataset in `dataset` lists (skipped
    rows included: a test image should not even have been considered)."""
    manifest_path = Path(dataset) / "manifest.csv"
    try:
        manifest = pd.read_csv(manifest_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise MedsynthError(f"{manifest_path}: cannot read the dataset's manifest: {exc}") from None
    test = split.table[split.table["fold"] == test_fold]

    def leaked(kind: str, column: str) -> list[str]:
        ids = set(test["image_id"] if kind == "image" else test.loc[test["group_kind"] == kind, "group_id"])
        listed = manifest[column] if column in manifest else pd.Series([], dtype=str)
        return sorted(set(listed) & ids)

    return Leaks(leaked("image", "image_id"), leaked("lesion", "lesion_id"), leaked("patient", "patient_id"))


def recheck_build(dataset: Path, split_file: str | None, split_sha256: str | None,
                  test_fold: int | None) -> list[str]:
    """Training and generation re-check a dataset built with a split (its record's split_file, split_sha256,
    test_fold; all None without one): a MedsynthError naming the first image, lesion or patient of the test fold
    its manifest holds; a warning (returned) when the split file is no longer the one the build read."""
    if split_sha256 is None or test_fold is None:
        return []
    recorded = Path(split_file) if split_file else None
    if recorded is None or not recorded.is_file():
        why = f"its split file {recorded} is gone" if recorded else "its build did not record the split file's path"
        return [f"warning: {dataset}: {why}: the manifest was not re-checked for images of test fold {test_fold}"]
    if hashlib.sha256(recorded.read_bytes()).hexdigest() != split_sha256:
        return [f"warning: {recorded} changed since {dataset} was built (its sha256 differs from the build's): the "
                f"manifest was not re-checked for images of test fold {test_fold}"]
    first = find_leaks(dataset, read_split(recorded), test_fold).first(test_fold, "the manifest")
    if first is not None:
        raise MedsynthError(f"{Path(dataset) / 'manifest.csv'}: {first} of {recorded}: rebuild the dataset with "
                            f"--split {recorded} --test-fold {test_fold}")
    return []
