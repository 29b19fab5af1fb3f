"""The folders of a dataset build: one training folder per class, and with regularization images a reg/ folder.

One class (the default): `train/<repeats>_<class>/`, captioned with `trigger`.
Several classes (balance_classes, two or more diagnoses): one `train/<repeats>_<class>/` per diagnosis, the class
being the diagnosis with every run of other characters than letters and digits as '_' (basal cell carcinoma ->
basal_cell_carcinoma). Its trigger is class_triggers[class] (--trigger CLASS=TOKEN), else derived: the class's
letters and digits with the first l after the first letter, else e, o, i or a, swapped for a look-alike digit
(melanoma -> me1anoma, nevus -> n3vus), a made-up word the text encoder has no meaning for yet. The largest
class keeps `repeats`; every other class gets round(largest × repeats ÷ its images), at least 1, so that
images × repeats, what sd-scripts shows per epoch, are about equal across classes. The counts are of the rows
whose image was found; an image skipped later (unreadable) shows in the report's balance.
Regularization (reg_diagnosis or reg_images): `reg/1_<class>/`, an `is_reg` subset, captioned with the class word
where the trigger would be ("photo of male skin, nevus on torso": the prior without the trigger). sd-scripts
registers as many reg images per epoch as there are training images with repeats (library/train_util.py:2163-2182),
so a build takes at most that many, the first by image id; fewer are repeated by sd-scripts to match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean
from orchestrator.dataset.lesions import conform
from orchestrator.dataset.settings import DatasetSettings

# the names an ISIC download gives its images, looked up as written (a case-sensitive file system tells .JPG from
# .jpg)
SOURCE_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_LOOKALIKE = (("l", "1"), ("e", "3"), ("o", "0"), ("i", "1"), ("a", "4"))
REG_REPEATS = 1   # sd-scripts raises the reg images' repeats itself until they match the training count
REG_IMAGES_WORD = "skin lesion"   # the class word of a --reg-images folder, which has no diagnosis


@dataclass(frozen=True)
class Folder:
    path: PurePosixPath            # relative to the dataset: train/5_melanoma, reg/1_nevus
    class_name: str
    trigger: str                   # the caption's trigger; for a reg folder the class word
    repeats: int
    is_reg: bool
    rows: pd.DataFrame             # its lesion rows, sorted by image id
    image_dirs: tuple[Path, ...]   # where its images are looked up


def class_key(name: str) -> str:
    """A diagnosis as a folder's class name: lower case, other characters than letters and digits as '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def derived_trigger(class_name: str) -> str:
    word = class_name.replace("_", "")
    for letter, digit in _LOOKALIKE:
        at = word.find(letter, 1)
        if at > 0:
            return word[:at] + digit + word[at + 1:]
    return word + "1"


def balanced_repeats(counts: dict[str, int], base: int) -> dict[str, int]:
    """Repeats per class so that images × repeats match the largest class's images × `base`."""
    target = max(counts.values()) * base
    return {name: max(1, round(target / n)) if n else base for name, n in counts.items()}


def _by_diagnosis(rows: pd.DataFrame, diagnosis: str) -> pd.DataFrame:
    return rows[rows["diagnosis"].str.lower().fillna("") == diagnosis.strip().lower()]


def _class_folders(settings: DatasetSettings, selected: pd.DataFrame, found: set[str]) -> list[Folder]:
    if not settings.balance_classes:
        return [Folder(PurePosixPath("train", f"{settings.repeats}_{settings.class_name}"), settings.class_name,
                       settings.trigger, settings.repeats, False, selected, settings.images)]
    diagnoses = list(dict.fromkeys(d.strip().lower() for d in settings.diagnoses))
    rows = {class_key(d): _by_diagnosis(selected, d) for d in diagnoses}
    empty = [d for d in diagnoses if rows[class_key(d)].empty]
    if empty:
        raise MedsynthError(f"no rows of diagnosis {', '.join(empty)} in {', '.join(map(str, settings.csv))} "
                            f"(after the test fold and duplicates are left out): drop it from --diagnosis")
    unknown = sorted({class_key(k) for k in settings.class_triggers} - set(rows))
    if unknown:
        raise MedsynthError(f"--trigger {unknown[0]}=...: no such class among {', '.join(rows)}"
                            f"{did_you_mean(unknown[0], tuple(rows))}")
    given = {class_key(k): v for k, v in settings.class_triggers.items()}
    triggers = {name: given.get(name) or derived_trigger(name) for name in rows}
    clash = [t for t in triggers.values() if list(triggers.values()).count(t) > 1 or t in rows]
    if clash:
        raise MedsynthError(f"trigger {clash[0]!r} is not one class's own word (two classes share it, or it is a "
                            f"class name): give --trigger CLASS=TOKEN")
    repeats = balanced_repeats({name: int(r["image_id"].isin(found).sum()) for name, r in rows.items()},
                               settings.repeats)
    return [Folder(PurePosixPath("train", f"{repeats[name]}_{name}"), name, triggers[name], repeats[name], False,
                   r, settings.images) for name, r in rows.items()]


def _reg_images_table(folder: Path) -> pd.DataFrame:
    try:
        names = sorted({p.stem for p in folder.iterdir()
                        if p.suffix in SOURCE_IMAGE_SUFFIXES and not p.name.startswith(".")})
    except OSError as exc:
        raise MedsynthError(f"reg_images {folder}: cannot read the folder: {exc.strerror or exc}") from exc
    if not names:
        raise MedsynthError(f"reg_images {folder}: holds no .jpg, .jpeg or .png image")
    return conform(pd.DataFrame({"image_id": names, "image_name": names, "source": "reg_images",
                                 "source_file": str(folder)}))


def _reg_folder(settings: DatasetSettings, table: pd.DataFrame, training: pd.DataFrame, drop: set[str],
                samples: int) -> Folder | None:
    if settings.reg_diagnosis is None and settings.reg_images is None:
        return None
    if settings.reg_diagnosis is not None:
        word, dirs = settings.reg_diagnosis.strip().lower(), settings.images
        rows = _by_diagnosis(table, word)
        # never a training image (a benign class holds nevi), never a dropped duplicate
        rows = rows[~rows["image_id"].isin(training["image_id"]) & ~rows["image_id"].isin(drop)]
        if rows.empty:
            raise MedsynthError(f"reg_diagnosis {word}: no rows of that diagnosis outside the training images in "
                                f"{', '.join(map(str, settings.csv))} (after the test fold is left out)")
    else:
        word, dirs = REG_IMAGES_WORD, (settings.reg_images,)
        rows = _reg_images_table(settings.reg_images)
        both = rows["image_id"][rows["image_id"].isin(training["image_id"])]
        if not both.empty:
            raise MedsynthError(f"reg_images {settings.reg_images}: {both.iloc[0]} is also a training image: "
                                f"reg images must not be the training class's")
    rows = rows.sort_values("image_id").head(samples).reset_index(drop=True)
    return Folder(PurePosixPath("reg", f"{REG_REPEATS}_{class_key(word)}"), class_key(word), word, REG_REPEATS,
                  True, rows, dirs)


def plan_folders(settings: DatasetSettings, table: pd.DataFrame, selected: pd.DataFrame, *, found: set[str],
                 drop: set[str]) -> list[Folder]:
    """The training folders, then the reg folder when asked for. `table` is the metadata after the test fold is
    held out, `selected` the training rows, `found` the ids of those whose image is there, `drop` duplicates."""
    folders = _class_folders(settings, selected, found)
    samples = sum(len(f.rows) * f.repeats for f in folders)
    reg = _reg_folder(settings, table, selected, drop, samples)
    return folders + ([reg] if reg else [])
