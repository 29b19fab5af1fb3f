"""The benchmark's data: the real lesion table split into training and test patients, the synthetic images, and
the arms' training sets, each a list of image keys with their labels.

The task is malignant against benign (the lesion table's `malignant` flag); the rare class is malignant.
The base training set keeps a share `rare_share` of the training patients' malignant images (chosen by patient);
the rest are held back for the control arm, which asks "would more real images have done as well?". Every arm but
the control trains on the base set plus its own additions:
  real        the base set (the ratio-0 point of the synthetic arms)
  oversample  the base set, malignant images drawn as often as benign ones, with stronger augmentation
  synthetic   the base set + ratio x (base malignant images) synthetic malignant images, the first ones of
              metadata.csv in its order (generate numbers them, so a larger ratio extends a smaller one)
  control     the base set + the held-back real malignant images
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.age import age_band
from orchestrator.dataset.build import find_image
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.split import Split, assign_folds, read_split
from orchestrator.generate.outputs import read_synthetic_metadata



@dataclass(frozen=True)
class Arm:
    name: str
    kind: str                    # real | oversample | synthetic | control
    ratio: float | None
    keys: tuple[str, ...]        # image keys (real image ids, synthetic image names)
    labels: tuple[int, ...]      # 1 = malignant
    synthetic_images: int = 0
    extra_real: int = 0
    skipped: str | None = None   # why the arm cannot run

    @property
    def slug(self) -> str:
        return self.kind if self.ratio is None or self.kind != "synthetic" else f"synthetic-x{self.ratio:g}"


@dataclass(frozen=True)
class BenchmarkData:
    paths: dict[str, Path]       # key -> image file, real and synthetic
    train: pd.DataFrame          # the training patients' usable images (lesion table + path + group_id)
    test: pd.DataFrame           # the test patients' usable images, with the strata columns
    split: Split
    split_file: Path | None
    test_fold: int
    arms: list[Arm]
    synthetic: dict | None       # {"dir", "images", "malignant", "missing"} or None without --synthetic
    dropped: dict[str, int]      # rows left out and why


def read_real(csv_paths: Sequence[Path], image_dirs: Sequence[Path], fmt: str | None,
              warn: Callable[[str], None]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The lesion table's rows with a malignant flag and an image file, with `path`; counts of the rows left out."""
    table = read_metadata(list(csv_paths), fmt)
    dirs = tuple(Path(d) for d in image_dirs)
    paths = [find_image(str(name), dirs) for name in table["image_name"]]
    table = table.assign(path=paths)
    no_label = table["malignant"].isna()
    no_image = table["path"].isna() & ~no_label
    dropped = {"no malignant/benign label": int(no_label.sum()), "image file not found": int(no_image.sum())}
    if no_image.any():
        first = table[no_image].iloc[0]
        warn(f"warning: {int(no_image.sum())} images listed in the CSVs are not in {', '.join(map(str, dirs))} "
             f"(first: {first['image_name']}): left out")
    kept = table[~no_label & ~no_image].reset_index(drop=True)
    if kept.empty:
        raise MedsynthError(f"no image of {', '.join(map(str, csv_paths))} has both a malignant/benign label and an "
                            f"image file in {', '.join(map(str, dirs))}")
    return kept, dropped


def split_of(table: pd.DataFrame, split_file: Path | None, folds: int, seed: int,
             warn: Callable[[str], None]) -> Split:
    """The split file's folds (every image of the table must be in it), or a new split made here."""
    if split_file is None:
        return assign_folds(table, folds, seed, warn)
    split = read_split(split_file)
    missing = set(table["image_id"].astype(str)) - set(split.table["image_id"])
    if missing:
        raise MedsynthError(f"image {sorted(missing)[0]} is not in {split_file} ({len(missing)} in all): the split is "
                            f"of another table (write it again with 'medsynth dataset split' from these CSVs)")
    return split


def _with_groups(table: pd.DataFrame, split: Split) -> pd.DataFrame:
    by_image = split.table.set_index("image_id")
    ids = table["image_id"].astype(str)
    return table.assign(fold=ids.map(by_image["fold"]).astype(int).to_numpy(),
                        group_id=(ids.map(by_image["group_kind"]) + ":" + ids.map(by_image["group_id"])).to_numpy())


def strata_labels(test: pd.DataFrame) -> dict[str, list[str | None]]:
    """Each test image's sex, age band and site, None where unknown (skin_tone is measured from the pixels:
    orchestrator.benchmark.tone). Lists, not columns: pandas' string columns turn None into NaN."""
    def known(column: pd.Series) -> list[str | None]:
        return [None if pd.isna(v) else str(v) for v in column]
    return {"sex": known(test["sex"]), "age_band": [age_band(a) for a in test["age"]], "site": known(test["site"])}


def read_synthetic(synthetic_dir: Path) -> tuple[list[tuple[str, Path]], dict]:
    """(name, path) of the synthetic malignant images in metadata.csv's order, and counts for the record. Images
    listed but absent (dropped as memorized, deleted) are counted, not used."""
    rows = read_synthetic_metadata(synthetic_dir / "metadata.csv")
    found, missing, benign = [], 0, 0
    for row in rows:
        if row.get("benign_malignant", "").strip().lower() != "malignant":
            benign += 1
            continue
        path = synthetic_dir / "images" / f"{row['image_name']}.png"
        if path.is_file():
            found.append((f"synthetic:{row['image_name']}", path))
        else:
            missing += 1
    return found, {"dir": str(synthetic_dir), "images": len(rows), "malignant": len(found),
                   "missing": missing, "not_malignant": benign}


def make_arms(train: pd.DataFrame, synthetic: list[tuple[str, Path]] | None, ratios: Sequence[float],
              rare_share: float, seed: int = 0) -> list[Arm]:
    """The arms (module doc). Held-back malignant patients are drawn with `seed`, the same for every arm."""
    malignant = train["malignant"].astype(bool).to_numpy()
    groups = np.array(sorted(set(train.loc[malignant, "group_id"])))
    rng = np.random.default_rng(seed)
    kept_groups = set(rng.permutation(groups)[:int(round(rare_share * len(groups)))]) if len(groups) else set()
    in_base = ~malignant | train["group_id"].isin(kept_groups).to_numpy()
    base_keys = tuple(train.loc[in_base, "image_id"].astype(str))
    base_labels = tuple(int(m) for m in malignant[in_base])
    base_rare = sum(base_labels)
    if base_rare == 0:
        raise MedsynthError(f"the base training set has no malignant image (rare_share {rare_share} of "
                            f"{len(groups)} malignant training patients): raise rare_share")
    held = tuple(train.loc[~in_base, "image_id"].astype(str))
    arms = [Arm("real", "real", 0.0, base_keys, base_labels),
            Arm("oversample", "oversample", None, base_keys, base_labels)]
    for ratio in sorted(r for r in ratios if r > 0):
        name = f"synthetic x{ratio:g}"
        need = int(round(ratio * base_rare))
        if synthetic is None:
            arms.append(Arm(name, "synthetic", ratio, (), (), skipped="no --synthetic folder given"))
        elif need > len(synthetic):
            arms.append(Arm(name, "synthetic", ratio, (), (), synthetic_images=need,
                            skipped=f"needs {need} synthetic malignant images ({ratio:g} x {base_rare}), the folder "
                                    f"has {len(synthetic)}"))
        else:
            extra = tuple(key for key, _ in synthetic[:need])
            arms.append(Arm(name, "synthetic", ratio, base_keys + extra, base_labels + (1,) * need,
                            synthetic_images=need))
    if held:
        arms.append(Arm("control", "control", None, base_keys + held, base_labels + (1,) * len(held),
                        extra_real=len(held)))
    else:
        arms.append(Arm("control", "control", None, (), (),
                        skipped=f"no real malignant images are held back (rare_share {rare_share:g}): lower "
                                f"rare_share to compare with more real images"))
    return arms


def load(csv_paths: Sequence[Path], image_dirs: Sequence[Path], *, fmt: str | None, split_file: Path | None,
         folds: int, test_fold: int, split_seed: int, synthetic_dir: Path | None, ratios: Sequence[float],
         rare_share: float, warn: Callable[[str], None]) -> BenchmarkData:
    table, dropped = read_real(csv_paths, image_dirs, fmt, warn)
    split = split_of(table, split_file, folds, split_seed, warn)
    if not 0 <= test_fold < split.folds:
        where = split_file or f"a {split.folds}-fold split"
        raise MedsynthError(f"test_fold {test_fold} is not a fold of {where} (folds 0 to {split.folds - 1})")
    table = _with_groups(table, split)
    train = table[table["fold"] != test_fold].reset_index(drop=True)
    test = table[table["fold"] == test_fold].reset_index(drop=True)
    for part, name in ((train, "training"), (test, "test")):
        if part["malignant"].astype(bool).nunique() < 2:
            raise MedsynthError(f"the {name} patients' images are all of one class: a benchmark needs malignant "
                                f"and benign images on both sides of the split (use more data or fewer folds)")
    synthetic, synthetic_record = (read_synthetic(synthetic_dir) if synthetic_dir is not None else (None, None))
    arms = make_arms(train, synthetic, ratios, rare_share)
    paths = {str(k): Path(p) for k, p in zip(table["image_id"], table["path"])}
    paths.update(dict(synthetic or ()))
    return BenchmarkData(paths, train, test, split, split_file, test_fold, arms, synthetic_record, dropped)
