"""The typed settings of `medsynth dataset build`: defaults < project file [dataset] table < command-line options."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError
from orchestrator.common.project_file import find_project_file, load_project_file
from orchestrator.dataset.ingest.detect import FORMATS
from orchestrator.common.suggest import did_you_mean


def check_selection(settings: DatasetSettings) -> None:
    """One class folder and one trigger name one class: several diagnoses (melanoma with nevus: malignant and
    benign) under them would all be captioned with the one trigger and train as one word. With balance_classes
    each diagnosis gets its own folder and trigger instead (orchestrator.dataset.classes)."""
    chosen = list(dict.fromkeys(d.strip().lower() for d in settings.diagnoses))
    if settings.balance_classes and (settings.benign or len(chosen) < 2):
        raise MedsynthError("dataset setting 'balance_classes' needs two or more diagnoses (repeat --diagnosis) "
                            "and no 'benign'")
    if settings.class_triggers and not settings.balance_classes:
        raise MedsynthError("per-class triggers (--trigger CLASS=TOKEN) need 'balance_classes' (--balance-classes); "
                            "one class takes --trigger TOKEN")
    if settings.reg_diagnosis is not None and settings.reg_images is not None:
        raise MedsynthError("give one source of regularization images: 'reg_diagnosis' or 'reg_images', not both")
    if settings.reg_diagnosis is not None:
        reg = settings.reg_diagnosis.strip().lower()
        if not reg or (not settings.benign and reg in chosen):
            raise MedsynthError(f"dataset setting 'reg_diagnosis' ({settings.reg_diagnosis!r}) must be a diagnosis "
                                f"other than the trained ones ({', '.join(chosen)}): reg images are the class prior, "
                                f"never the training class")
    if settings.benign or settings.balance_classes:
        return  # diagnoses are not read, or each gets its own folder
    if len(chosen) > 1:
        raise MedsynthError(f"dataset setting 'diagnoses' ({', '.join(chosen)}) mixes classes: all would go into "
                            f"'{settings.repeats}_{settings.class_name}' captioned '{settings.trigger}': give "
                            f"--balance-classes for one folder and trigger per diagnosis, or build one dataset per "
                            f"class, each with its own --diagnosis, --class, --trigger and --out")


@dataclass(frozen=True)
class DatasetSettings:
    csv: tuple[Path, ...]
    images: tuple[Path, ...]
    out: Path
    duplicates: Path | None = None
    format: str | None = None                 # None = detect each CSV's format from its header
    class_name: str = "melanoma"              # the kohya folder's class name: <repeats>_<class_name>
    diagnoses: tuple[str, ...] = ("melanoma",)
    benign: bool = False                      # select benign lesions (malignant == False) instead of diagnoses
    repeats: int = 1
    resolution: int = 1024                    # long side of the training images
    resize: bool = True                       # False: link or copy the originals unchanged
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    strict: bool = False                      # a per-image problem is fatal instead of a recorded skip
    skin_tone: bool = False                   # measure the skin's ITA band: manifest, captions, report
    trigger: str = "me1anoma"
    # ./templates/caption.j2 when the working directory has one, else the packaged one
    caption_template: Path = field(default_factory=lambda: paths.find_template("caption.j2"))
    site_map: Mapping[str, str] = field(default_factory=dict)
    # a split file (orchestrator.dataset.split) and its fold held out for testing: the build leaves out its images
    split_file: Path | None = None
    test_fold: int | None = None
    # loss masks (orchestrator.dataset.masks): "auto" (the lesion segmentation), a folder of the user's masks
    # (absolute), or None; widened by mask_margin of the image's long side
    masks: str | None = None
    mask_margin: float = 0.05
    # several classes at once: one <repeats>_<class> folder and trigger per diagnosis, repeats balancing
    # images x repeats (orchestrator.dataset.classes); class_triggers: class -> trigger, else one is derived
    balance_classes: bool = False
    class_triggers: Mapping[str, str] = field(default_factory=dict)
    # regularization images (a reg/ folder, an is_reg subset): the rows of this diagnosis, or a folder of images
    reg_diagnosis: str | None = None
    reg_images: Path | None = None

    def __post_init__(self) -> None:
        check_selection(self)  # here, so that building from settings made in code refuses it too


_PATH_LIST_KEYS = ("csv", "images")
_PATH_KEYS = ("out", "duplicates", "caption_template", "split_file", "reg_images")
_NONE_DEFAULT_TYPES = {"format": str, "test_fold": int, "reg_diagnosis": str}   # settings whose default (None) does not show the type
_KEYS = tuple(f.name for f in dataclasses.fields(DatasetSettings))


def _as_path(value: Any, key: str, base: Path, source: str) -> Path:
    if not isinstance(value, str) or not value:
        raise MedsynthError(f"{source}: '{key}' must be a non-empty path string, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def settings_from_mapping(values: Mapping[str, Any], *, base: Path, source: str) -> dict[str, Any]:
    """Check and convert one layer of settings (a [dataset] table or CLI options) into DatasetSettings fields.

    Relative paths are resolved against `base` (the project file's folder, or the working directory for options).
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _KEYS:
            raise MedsynthError(f"{source}: unknown dataset setting '{key}'{did_you_mean(key, _KEYS)}")
        if key in _PATH_LIST_KEYS:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not items:
                raise MedsynthError(f"{source}: '{key}' must be a path or a list of paths")
            out[key] = tuple(_as_path(v, key, base, source) for v in items)
        elif key in _PATH_KEYS:
            out[key] = _as_path(value, key, base, source)
        elif key == "diagnoses":
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items):
                raise MedsynthError(f"{source}: 'diagnoses' must be a list of diagnosis names")
            out[key] = tuple(items)
        elif key == "masks":
            if not isinstance(value, str) or not value:
                raise MedsynthError(f"{source}: 'masks' must be \"auto\" or a folder of masks, got {value!r}")
            out[key] = value if value == "auto" else str(_as_path(value, key, base, source))
        elif key == "class_triggers":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) and v.strip() for v in value.values()):
                raise MedsynthError(f"{source}: 'class_triggers' must be a table of class = \"trigger\"")
            out[key] = {str(name).strip().lower(): token.strip() for name, token in value.items()}
        elif key == "site_map":
            if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                raise MedsynthError(f"{source}: 'site_map' must be a table of site = \"caption text\"")
            # the readers lower-case sites, so "Lower Extremity" = "leg" must still match "lower extremity"
            out[key] = {str(site).strip().lower(): text for site, text in value.items()}
        else:
            expected = _NONE_DEFAULT_TYPES.get(key) or type(getattr(_DEFAULTS, key))
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise MedsynthError(f"{source}: '{key}' must be an integer, got {value!r}")
            if expected is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MedsynthError(f"{source}: '{key}' must be a number, got {value!r}")
            if expected is bool and not isinstance(value, bool):
                raise MedsynthError(f"{source}: '{key}' must be true or false, got {value!r}")
            if expected is str and not isinstance(value, str):
                raise MedsynthError(f"{source}: '{key}' must be a string, got {value!r}")
            if key == "format" and value not in FORMATS:
                raise MedsynthError(f"{source}: 'format' must be one of {', '.join(FORMATS)}, got {value!r}")
            out[key] = float(value) if expected is float else value
    return out


_DEFAULTS = DatasetSettings(csv=(), images=(), out=Path("."))


def project_layer(project: Path, table: Mapping[str, Any]) -> dict[str, Any]:
    """A project file's [dataset] table as a layer. Its paths are relative to the project's folder, and so is
    the default caption template: the folder's own templates/caption.j2 wins over the packaged one."""
    base = project.parent.resolve()
    layer = settings_from_mapping(table, base=base, source=f"{project} [dataset]")
    layer.setdefault("caption_template", paths.find_template("caption.j2", base))
    return layer


def load_settings(*, config: Path | None, options: Mapping[str, Any], cwd: Path) -> DatasetSettings:
    """Field defaults < the project file's [dataset] table (`config`, else <cwd>/medsynth.toml when there is
    one) < `options`, the command line's settings (None: not given; relative paths are relative to `cwd`)."""
    layers = []
    project = find_project_file(config, cwd)
    if project is not None:
        layers.append(project_layer(project, load_project_file(project)["dataset"]))
    layers.append(settings_from_mapping({k: v for k, v in options.items() if v is not None}, base=cwd,
                                        source="command line"))
    return resolve_settings(*layers)


def resolve_settings(*layers: Mapping[str, Any]) -> DatasetSettings:
    """Merge converted layers (later wins) and check the whole."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    for key in ("csv", "images", "out"):
        if key not in merged:
            raise MedsynthError(f"dataset setting '{key}' is missing: give --{key} or set it in medsynth.toml [dataset]")
    settings = DatasetSettings(**merged)
    if settings.repeats < 1:
        raise MedsynthError(f"'repeats' must be >= 1, got {settings.repeats}")
    if not 64 <= settings.resolution <= 8192:
        raise MedsynthError(f"'resolution' must be between 64 and 8192 pixels, got {settings.resolution}")
    if (settings.split_file is None) != (settings.test_fold is None):
        raise MedsynthError("split_file and test_fold go together: give both (the fold of the split to leave out) "
                            "or neither")
    if settings.test_fold is not None and settings.test_fold < 0:
        raise MedsynthError(f"'test_fold' must be >= 0, got {settings.test_fold}")
    if not 0 <= settings.mask_margin <= 0.5:
        raise MedsynthError(f"mask_margin must be between 0 and 0.5 (a share of the image's long side), got "
                            f"{settings.mask_margin}")
    if settings.workers < 1:
        raise MedsynthError(f"'workers' must be >= 1, got {settings.workers}")
    if not settings.class_name or not settings.class_name.replace("_", "").replace("-", "").isalnum():
        raise MedsynthError(f"'class_name' must be letters, digits, '-' or '_', got {settings.class_name!r}")
    if "\n" in settings.trigger or not settings.trigger.strip():
        raise MedsynthError(f"'trigger' must be a non-empty single-line word, got {settings.trigger!r}")
    return settings


def selection_warnings(settings: DatasetSettings) -> list[str]:
    """A class folder (and trigger) named for something other than what is selected trains the wrong word."""
    if settings.balance_classes:
        return []  # each diagnosis names its own folder
    if settings.benign:
        names, what = {"benign", "nevus", "naevus"}, "benign lesions"
    else:
        names = {d.lower().replace(" ", "_") for d in settings.diagnoses}
        what = "diagnoses " + ", ".join(settings.diagnoses)
    if settings.class_name.lower() in names:
        return []
    return [f"warning: selecting {what} into the class folder '{settings.repeats}_{settings.class_name}' with the "
            f"trigger '{settings.trigger}': give --class (and --trigger) to name them for what they are"]
