"""dataset.json, what `medsynth dataset build` records about a dataset folder: its one writer, its one reader,
and the dataset as training reads it (read_dataset: the record checked against the folder's images and manifest).

Nothing else parses the file. A file without `schema_version` was written before it had one and is read as
version 1; a file of another version is refused with a message saying to rebuild the dataset."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import (FieldTypes, Wording, field_error, load_versioned, typed_fields,
                                            write_versioned)
from orchestrator.kohya.images import is_training_image

SCHEMA_VERSION = 1
RECORD_NAME = "dataset.json"


@dataclass(frozen=True)
class DatasetRecord:
    class_name: str
    repeats: int
    resolution: int | None          # None: built with --no-resize (the images are at their native size)
    image_dir: str                  # the kohya class folder, relative to the dataset folder
    images: int
    skipped: int
    trigger: str
    caption_extension: str
    manifest_sha256: str
    # how the captions were worded, so `medsynth generate` words its prompts the same way; builds before
    # these two were recorded have neither (None, {})
    caption_template: str | None = None
    site_map: Mapping[str, str] = field(default_factory=dict)
    # the patient split the build held a fold out of (orchestrator.dataset.split); None: built without one
    split_sha256: str | None = None
    test_fold: int | None = None
    group_kind: str | None = None   # patient, lesion, image, or several joined by "+"
    # where that split file was, so training and generation can re-check the manifest against it (later builds)
    split_file: str | None = None
    # the loss masks in the images' alpha channel (orchestrator.dataset.masks): "auto" or the user's mask folder,
    # and their margin; None: built without masks
    masks: str | None = None
    mask_margin: float | None = None
    # every folder sd-scripts trains on (orchestrator.dataset.classes), the class fields above being the first's;
    # builds before several classes and reg images record none (their one folder is the fields above)
    subsets: tuple[Mapping[str, Any], ...] = ()
    schema_version: int = SCHEMA_VERSION


_FIX = "rebuild the dataset"
_WORDING = Wording("dataset record", _FIX)
_TYPES: FieldTypes = {
    "class_name": ((str,), "a string"), "repeats": ((int,), "an integer"),
    "resolution": ((int, type(None)), "an integer or null"), "image_dir": ((str,), "a string"),
    "images": ((int,), "an integer"), "skipped": ((int,), "an integer"), "trigger": ((str,), "a string"),
    "caption_extension": ((str,), "a string"), "manifest_sha256": ((str,), "a string"),
    "caption_template": ((str, type(None)), "a string or null"), "site_map": ((dict,), "an object"),
    "split_sha256": ((str, type(None)), "a string or null"), "test_fold": ((int, type(None)), "an integer or null"),
    "group_kind": ((str, type(None)), "a string or null"), "split_file": ((str, type(None)), "a string or null"),
    "masks": ((str, type(None)), "a string or null"), "mask_margin": ((float, type(None)), "a number or null"),
    "subsets": ((list,), "a list"),
}
_SUBSET_TYPES: FieldTypes = {
    "image_dir": ((str,), "a string"), "class_name": ((str,), "a string"), "repeats": ((int,), "an integer"),
    "images": ((int,), "an integer"), "trigger": ((str,), "a string"), "is_reg": ((bool,), "true or false"),
}
# builds before these were recorded have none of them
_OPTIONAL = ("caption_template", "site_map", "split_sha256", "test_fold", "group_kind", "split_file", "masks",
             "mask_margin", "subsets")


def has_record(folder: Path) -> bool:
    """The folder holds a dataset build's record (it is, or was meant to be, a dataset folder)."""
    return (folder / RECORD_NAME).is_file()


def write_record(folder: Path, record: DatasetRecord) -> None:
    data = dataclasses.asdict(record)
    data["site_map"] = dict(record.site_map)
    data["subsets"] = [dict(subset) for subset in record.subsets]
    write_versioned(folder / RECORD_NAME, data, version=record.schema_version, sort_keys=True)


def read_record(folder: Path) -> DatasetRecord:
    """The record of the dataset in `folder`; a MedsynthError naming the file (and key) when it is missing,
    not JSON, hand-edited wrongly or of another schema version."""
    path = folder / RECORD_NAME
    if not path.is_file():
        raise MedsynthError(f"{folder}: not a medsynth dataset (no {RECORD_NAME}): run 'medsynth dataset build' first")
    data = load_versioned(path, version=SCHEMA_VERSION, wording=_WORDING)
    values = typed_fields(path, data, _TYPES, fix=_FIX, optional=_OPTIONAL)
    if not all(isinstance(v, str) for v in values.get("site_map", {}).values()):
        raise field_error(path, "site_map", "must map sites to caption texts", _FIX)
    subsets = values.get("subsets", [])
    for n, subset in enumerate(subsets):
        if not isinstance(subset, dict):
            raise field_error(path, f"subsets[{n}]", "must be an object", _FIX)
        typed_fields(path, subset, _SUBSET_TYPES, fix=_FIX)
    values["subsets"] = tuple(subsets)
    return DatasetRecord(**values)


@dataclass(frozen=True)
class Subset:
    """One folder sd-scripts trains on: a class folder (<repeats>_<class>) or a regularization folder."""

    image_dir: Path
    class_name: str
    repeats: int
    images: int
    trigger: str                    # the captions' trigger; a reg folder's class word
    is_reg: bool = False


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset folder as training reads it: its record, checked against the folder, with absolute paths."""

    path: Path
    class_name: str
    repeats: int
    resolution: int | None          # None: built with --no-resize (the images are at their native size)
    image_dir: Path
    images: int
    trigger: str
    caption_extension: str
    manifest: Path
    manifest_sha256: str
    masks: str | None = None        # the images carry loss masks as alpha ("auto" or the mask folder)
    notes: tuple[str, ...] = ()     # warnings for the reader to show (a split that can no longer be re-checked)
    group_kind: str | None = None   # what the build's benchmark split grouped by (patient, lesion, ...); None: none
    subsets: tuple[Subset, ...] = ()  # every folder, the first being the class fields above (filled from them)

    def __post_init__(self) -> None:
        if not self.subsets:   # a one-class dataset: its folder is the class fields
            object.__setattr__(self, "subsets", (Subset(self.image_dir, self.class_name, self.repeats, self.images,
                                                        self.trigger),))

    def with_image_dir(self, image_dir: Path) -> DatasetInfo:
        """The dataset trained from a copy of its one folder (a sweep's shared cache)."""
        if len(self.subsets) > 1:
            raise MedsynthError(f"{self.path}: a dataset of {len(self.subsets)} folders (several classes or reg "
                                f"images) cannot share one cache folder: set cache_latents_to_disk = false")
        return dataclasses.replace(self, image_dir=image_dir,
                                   subsets=tuple(dataclasses.replace(s, image_dir=image_dir) for s in self.subsets))


def read_dataset(path: Path) -> DatasetInfo:
    """The dataset in `path`, refused when its images or manifest no longer are what the build recorded, or when
    its manifest holds an image, lesion or patient of the test fold of the split it was built with."""
    from orchestrator.dataset.split import recheck_build   # pandas: not at import, for the CLI's --help

    record = read_record(path)
    meta_path = path / RECORD_NAME
    notes = tuple(recheck_build(path, record.split_file, record.split_sha256, record.test_fold))
    subsets = tuple(Subset(**{**s, "image_dir": (path / s["image_dir"]).resolve()}) for s in record.subsets)
    info = DatasetInfo(path=path.resolve(), class_name=record.class_name, repeats=record.repeats,
                       resolution=record.resolution, image_dir=(path / record.image_dir).resolve(),
                       images=record.images, trigger=record.trigger, caption_extension=record.caption_extension,
                       manifest=(path / "manifest.csv").resolve(), manifest_sha256=record.manifest_sha256,
                       masks=record.masks, notes=notes, group_kind=record.group_kind, subsets=subsets)
    for subset in info.subsets:
        _check_images(meta_path, subset.image_dir, subset.images)
    if info.manifest_sha256 and info.manifest.is_file():
        digest = hashlib.sha256(info.manifest.read_bytes()).hexdigest()
        if digest != info.manifest_sha256:
            raise MedsynthError(f"{info.manifest} changed since the dataset was built (sha256 differs from "
                                f"{RECORD_NAME}): rebuild the dataset")
    return info


def _check_images(meta_path: Path, image_dir: Path, images: int) -> None:
    if not image_dir.is_dir():
        raise MedsynthError(f"{meta_path}: image_dir {image_dir} does not exist: rebuild the dataset")
    found = sum(1 for p in image_dir.iterdir() if is_training_image(p))
    if found == 0:
        raise MedsynthError(f"{image_dir}: no images: sd-scripts would train on nothing and exit 0")
    if found != images:
        raise MedsynthError(f"{meta_path} lists {images} images but {image_dir} holds {found}: "
                            f"rebuild the dataset")
