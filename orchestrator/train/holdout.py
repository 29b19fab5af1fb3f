"""Validation by patient: whole patients (else lesions) held out of training for the validation loss.

sd-scripts (48d368fa) splits each folder by image (train_util.split_train_val) and takes no list of validation
images, so one patient's images could be trained on and validated on. Where the dataset's manifest names patients
or lesions, the run instead trains on a run-local folder of links to the kept images and validates on a second
[[datasets]] entry with validation_split = 1.0 over a folder of links to the held-out ones: sd-scripts trains on
ceil(n × 0) = 0 of those and validates on all of them (tests/test_kohya_parsers.py). The dataset folder is never
changed. Reg folders are never held out, as in sd-scripts.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.record import DatasetInfo
from orchestrator.kohya.images import is_training_image

TRAIN_DIR, VALIDATION_DIR = "data/train", "data/validation"   # in the run folder
GROUP_COLUMNS = (("patient", "patient_id"), ("lesion", "lesion_id"))  # a patient before its lesion, as the split


@dataclass(frozen=True)
class HeldOut:
    """Which images of each subset train and which validate; per subset in the dataset's order (reg: all train)."""

    by: str                                   # "patient", "lesion" or "patient or lesion"
    train: tuple[tuple[Path, ...], ...]
    validation: tuple[tuple[Path, ...], ...]
    groups: tuple[str, ...]                   # the held-out patients/lesions, as "patient:ID"

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(map(len, self.validation))


def _groups_by_name(manifest: Path) -> dict[str, tuple[str, str]]:
    """image file name -> (kind, id) of its patient, else its lesion, for the manifest's built images."""
    with manifest.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        group = next(((kind, row[col]) for kind, col in GROUP_COLUMNS if (row.get(col) or "").strip()), None)
        if group and row.get("status") == "ok" and row.get("output_path"):
            out[Path(row["output_path"]).name] = group
    return out


def hold_out(dataset: DatasetInfo, share: float, seed: int) -> HeldOut | None:
    """Hold out whole patients/lesions, in an order shuffled by `seed`, each one taken when it brings the held-out
    images closer to `share` of the training images. None when the manifest names no patient or lesion (then
    sd-scripts' own split by image applies)."""
    names = _groups_by_name(dataset.manifest) if dataset.manifest.is_file() else {}
    if not names:
        return None
    images = [sorted(p for p in s.image_dir.iterdir() if is_training_image(p)) if not s.is_reg else []
              for s in dataset.subsets]
    groups: dict[str, list[Path]] = {}
    for path in (p for folder in images for p in folder):
        kind, gid = names.get(path.name, ("image", path.name))   # an image without patient or lesion is its own
        groups.setdefault(f"{kind}:{gid}", []).append(path)
    kinds = {key.split(":", 1)[0] for key in groups} - {"image"}
    if not kinds:   # the manifest's patients are of other images (a reg folder's)
        return None
    target = share * sum(map(len, images))
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    taken, held = [], 0
    for key in order:
        if abs(held + len(groups[key]) - target) < abs(held - target):
            taken.append(key)
            held += len(groups[key])
    if not taken:
        smallest = min(map(len, groups.values()))
        raise MedsynthError(f"validation_split {share} of {sum(map(len, images))} images holds out no whole patient "
                            f"or lesion (the smallest has {smallest} images): raise it, or set validation_split=0.0")
    out = {p for key in taken for p in groups[key]}
    train = tuple(tuple(p for p in folder if p not in out) for folder in images)
    for s, kept, folder in zip(dataset.subsets, train, images):
        if folder and not kept:
            raise MedsynthError(f"validation_split {share} holds out every image of {s.image_dir} (its patients "
                                f"were drawn for validation): lower it, or change validation_seed")
    return HeldOut(" or ".join(k for k, _ in GROUP_COLUMNS if k in kinds),
                   tuple(kept if not s.is_reg else () for s, kept in zip(dataset.subsets, train)),
                   tuple(tuple(p for p in folder if p in out) for folder in images), tuple(sorted(taken)))


def links(held: HeldOut, dataset: DatasetInfo) -> dict[str, Path]:
    """The run folder's links (relative path -> dataset file): each image with its caption."""
    out: dict[str, Path] = {}
    for s, train, validation in zip(dataset.subsets, held.train, held.validation):
        for where, paths in ((TRAIN_DIR, train), (VALIDATION_DIR, validation)):
            for p in paths:
                caption = p.with_suffix(dataset.caption_extension)
                for src in (p, caption) if caption.is_file() else (p,):
                    out[f"{where}/{s.image_dir.name}/{src.name}"] = src
    return out
