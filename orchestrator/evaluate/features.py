"""`medsynth evaluate`: lesion features of a real and a synthetic image set, compared feature by feature.

Each image is decoded once (large JPEGs at a libjpeg reduction, see images.decode_reduced), brought to the
analysis size, and measured by vision/lesion.py (mask, A, B, C, D, TDS estimate) and vision/skin_tone.py
(ITA of the skin around the mask after colour constancy, Chardon band or unreliable). The two sets are compared per feature by their means,
medians and the two-sample Kolmogorov-Smirnov statistic D (the largest gap between the two empirical CDFs,
0 = same distribution, 1 = disjoint) with its asymptotic p-value; with a training run, its sample images
are measured per epoch and compared with the real set the same way, to show whether training moves the
samples towards the real distribution. FID/KID (fid.py) only when the user gives Inception weights. Every
synthetic image is also screened for being a near-copy of a real one (memorization.py).

A set may be given as a folder of images, a dataset folder (dataset.json; its train/ images), or a
`medsynth generate` output (synthetic/images, or the folder holding synthetic/).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.images import decode_reduced
from orchestrator.dataset.jpeg import jpeg_size
from orchestrator.dataset.record import has_record
from orchestrator.vision.memorization import (DECODE_SIZE, FEATURE_METHOD, Screen, embed, feature_similarity,
                                              screen)
from orchestrator.kohya.images import TRAINING_IMAGE_SUFFIXES, training_images
from orchestrator.runs.outputs import Column, find_samples
from orchestrator.runs.record import read_record
from orchestrator.vision.lesion import (ANALYSIS_SIZE, COLOUR_CENTRES_RGB, analysis_image, features_from_mask,
                                        field_of_view, lesion_mask)
from orchestrator.vision.skin_tone import BAND_NAMES, estimate_tone
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel



@dataclass(frozen=True)
class Feature:
    key: str
    label: str
    discrete: bool   # integer scores get one histogram bar per value


UNRELIABLE = "unreliable"   # the skin-tone count of images without a band
FEATURES: tuple[Feature, ...] = (
    Feature("asymmetry", "A: asymmetry (0-2 axes)", True),
    Feature("asymmetry_index", "asymmetry index (mirrored mismatch)", False),
    Feature("border", "B: irregular border sectors (0-8)", True),
    Feature("compactness", "compactness (perimeter^2 / 4 pi area)", False),
    Feature("colours", "C: dermoscopic colours (1-6)", True),
    Feature("diameter_px", "D: diameter (px)", False),
    Feature("diameter_rel", "diameter / long side", False),
    Feature("tds", "TDS estimate (not a diagnosis)", False),
    Feature("area_fraction", "lesion area / field of view", False),
    Feature("ita", "skin ITA (degrees)", False),
)


@dataclass(frozen=True)
class ImageRecord:
    name: str                      # path relative to its set's folder
    error: str | None              # "unreadable" when the file did not decode; else None
    lesion_found: bool
    values: dict[str, float | int | None]
    colour_names: tuple[str, ...]
    skin_tone: str | None          # Chardon band; None when no skin or the ITA is unreliable
    tone_reason: str | None = None  # why the ITA is unreliable (vision/skin_tone.py)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["colour_names"] = list(self.colour_names)
        return d


@dataclass(frozen=True)
class ImageSet:
    path: Path
    kind: str                      # "images", "dataset" or "synthetic"
    root: Path                     # the folder image names are relative to
    files: tuple[Path, ...]


def image_set(path: Path) -> ImageSet:
    """The images a REAL or SYNTH argument stands for (see the module doc)."""
    if not path.is_dir():
        raise MedsynthError(f"{path}: not a folder (give a folder of images, a dataset folder or a "
                            f"generate output)")
    if has_record(path) and (path / "train").is_dir():
        kind, root, files = "dataset", path / "train", training_images(path / "train", recursive=True)
    elif (path / "synthetic" / "images").is_dir():
        kind, root = "synthetic", path / "synthetic" / "images"
        files = training_images(root, recursive=False)
    elif (path / "images").is_dir() and (path / "metadata.csv").is_file():
        # a generate output has generation.json; an ISIC export (images/ + metadata.csv) is real images
        kind = "synthetic" if (path / "generation.json").is_file() else "images"
        root, files = path / "images", training_images(path / "images", recursive=False)
    else:
        kind, root, files = "images", path, training_images(path, recursive=False)
    if not files:
        raise MedsynthError(f"{root}: no images ({', '.join(TRAINING_IMAGE_SUFFIXES)}) found")
    return ImageSet(path, kind, root, tuple(files))


def read_image(path: Path, need: int = ANALYSIS_SIZE) -> tuple[np.ndarray, int] | None:
    """(BGR uint8 image, the file's own long side): JPEGs are decoded at the largest reduction keeping the
    long side >= need. None when the file does not decode."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    bgr = decode_reduced(data, need) if data else None
    if bgr is None:
        return None
    size = jpeg_size(data)
    return bgr, max(size) if size else max(bgr.shape[:2])


def analyse_image(path: Path, root: Path) -> ImageRecord:
    """Features and skin tone of one image file. Pure: the same file gives the same record."""
    name = path.relative_to(root).as_posix()
    decoded = read_image(path)
    if decoded is None:
        return ImageRecord(name, "unreadable", False, {}, (), None)
    bgr, long_side = decoded
    small = analysis_image(bgr)
    fov = field_of_view(small)
    mask = lesion_mask(small, fov)
    tone = estimate_tone(small, mask, fov)
    values: dict[str, float | int | None] = {"ita": tone.ita}
    found = int(mask.sum()) >= 16
    colours: tuple[str, ...] = ()
    if found:
        # diameter in the file's own pixels: undo the decode reduction and the analysis resize
        features = features_from_mask(small, mask, fov, scale=long_side / max(small.shape[:2]))
        values.update({k: v for k, v in features.as_dict().items() if k != "colour_names"})
        colours = features.colour_names
    else:
        values.update({f.key: None for f in FEATURES if f.key != "ita"})
    return ImageRecord(name, None, found, values, colours, tone.band, tone.reason)


def analyse(files: Sequence[Path], root: Path, *, workers: int, progress: bool = True,
            desc: str = "images") -> list[ImageRecord]:
    """Records in file order, computed on `workers` threads (orchestrator/common/workers.py)."""
    with tqdm(total=len(files), desc=desc, unit="img", disable=not progress) as bar:
        return run_parallel(partial(analyse_image, root=root), files, workers=workers, stall_timeout=STALL_TIMEOUT,
                            describe=lambda path: f"image {path}", on_result=lambda _: bar.update())


# ---- statistics ----

def ks_two_sample(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(D, asymptotic two-sided p-value) of the two-sample Kolmogorov-Smirnov test.

    D = max |F_a(x) - F_b(x)| over all x (ties handled by evaluating both CDFs after each distinct value);
    p from the Kolmogorov distribution at lambda = (sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) D, ne = n m / (n + m)
    (Stephens' small-sample correction, as in Numerical Recipes' kstwo)."""
    x, y = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if len(x) == 0 or len(y) == 0:
        raise ValueError("KS needs two non-empty samples")
    grid = np.concatenate([x, y])
    d = float(np.abs(np.searchsorted(x, grid, side="right") / len(x)
                     - np.searchsorted(y, grid, side="right") / len(y)).max())
    ne = len(x) * len(y) / (len(x) + len(y))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    return d, kolmogorov_survival(lam)


def kolmogorov_survival(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution, from whichever of its two series converges fast there:
    1 - sqrt(2 pi) / lam sum_{j>=1} exp(-(2j - 1)^2 pi^2 / (8 lam^2)) for small lam, else
    2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lam^2)."""
    if lam <= 0:
        return 1.0
    if lam < 1.18:
        cdf = math.sqrt(2 * math.pi) / lam * sum(math.exp(-((2 * j - 1) ** 2) * math.pi ** 2 / (8 * lam * lam))
                                                for j in range(1, 8))
        return float(min(1.0, max(0.0, 1 - cdf)))
    total = sum(2 * (-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 8))
    return float(min(1.0, max(0.0, total)))


def describe(values: Sequence[float]) -> dict[str, float | int | None]:
    v = np.asarray(values, float)
    if len(v) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None}
    return {"n": int(len(v)), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)}


def feature_values(records: Sequence[ImageRecord], key: str) -> list[float]:
    return [float(r.values[key]) for r in records if r.values.get(key) is not None]


def compare(real: Sequence[ImageRecord], synth: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    """Per feature: both sets' description, the difference of means and the KS statistic with its p-value."""
    rows = []
    for feature in FEATURES:
        a, b = feature_values(real, feature.key), feature_values(synth, feature.key)
        ks, p = ks_two_sample(a, b) if a and b else (None, None)
        ra, sb = describe(a), describe(b)
        diff = None if ra["mean"] is None or sb["mean"] is None else round(sb["mean"] - ra["mean"], 4)
        rows.append({"key": feature.key, "label": feature.label, "real": ra, "synthetic": sb,
                     "mean_difference": diff, "ks": None if ks is None else round(ks, 4),
                     "p_value": None if p is None else round(p, 4)})
    return rows


def tone_counts(records: Sequence[ImageRecord]) -> dict[str, int]:
    """Readable images per Chardon band, then those whose ITA is unreliable (or that show no skin)."""
    counts = {band: sum(r.skin_tone == band for r in records) for band in BAND_NAMES}
    return {**counts, UNRELIABLE: sum(r.error is None and r.skin_tone is None for r in records)}


def colour_frequencies(records: Sequence[ImageRecord]) -> dict[str, float]:
    """Share of the images with a lesion in which each dermoscopic colour is present."""
    found = [r for r in records if r.lesion_found]
    return {name: round(sum(name in r.colour_names for r in found) / len(found), 4) if found else 0.0
            for name in COLOUR_CENTRES_RGB}


def set_summary(images: ImageSet, records: Sequence[ImageRecord]) -> dict[str, Any]:
    return {"path": str(images.path), "kind": images.kind, "images": len(records),
            "unreadable": [r.name for r in records if r.error],
            "no_lesion_found": [r.name for r in records if r.error is None and not r.lesion_found],
            "skin_tone": tone_counts(records), "colour_frequency": colour_frequencies(records)}


# ---- a training run's samples, per epoch ----

def run_samples(run_dir: Path) -> list[tuple[Column, list[Path]]]:
    """The run's sample images (<run>/sample/, named as in orchestrator.runs.outputs) grouped by sampling point
    (epoch end or step), in training order; the newest file per prompt and point."""
    output_name = read_record(run_dir).field("output_name", str, None)
    groups: dict[Column, list[Path]] = {}
    for (column, _), sample in sorted(find_samples(run_dir / "sample", output_name).items()):
        groups.setdefault(column, []).append(sample.path)
    if not groups:
        raise MedsynthError(f"{run_dir / 'sample'}: no sample images named {output_name or ''}_e<epoch>_... "
                            f"(train with sample_every_n_epochs to get a per-epoch trend)")
    return sorted(groups.items())


def epoch_trend(real: Sequence[ImageRecord], points: Sequence[tuple[Column, Sequence[ImageRecord]]]
                ) -> list[dict[str, Any]]:
    """Per sampling point: how many samples, and per feature their mean, median and KS against the real set."""
    trend = []
    for column, records in points:
        per_feature = {}
        for feature in FEATURES:
            a, b = feature_values(real, feature.key), feature_values(records, feature.key)
            ks = ks_two_sample(a, b) if a and b else (None, None)
            d = describe(b)
            per_feature[feature.key] = {"mean": d["mean"], "median": d["median"],
                                        "ks": None if ks[0] is None else round(ks[0], 4),
                                        "p_value": None if ks[1] is None else round(ks[1], 4)}
        trend.append({"label": column.label, "kind": column.kind, "number": column.number,
                      "images": len(records), "features": per_feature})
    return trend


# ---- FID / KID ----

def fid_kid(real: ImageSet, synth: ImageSet, weights: Path, *, model: Any = None,
            progress: bool = True) -> dict[str, Any]:
    """FID and KID (mean, std) between the two sets' Inception features; unreadable files are left out.
    `model`: the network already loaded from `weights` (else it is loaded here)."""
    from orchestrator.evaluate.fid import (INPUT_SIZE, frechet_distance, inception_features, kernel_inception_distance,
                                  load_inception)

    model = model if model is not None else load_inception(weights)
    features = []
    for name, images in (("real", real), ("synthetic", synth)):
        decoded = (d[0] for d in (read_image(p, INPUT_SIZE) for p in images.files) if d is not None)
        with tqdm(total=len(images.files), desc=f"inception {name}", unit="img", disable=not progress) as bar:
            features.append(inception_features(model, decoded, progress=bar.update))
    kid_mean, kid_std = kernel_inception_distance(*features)
    return {"weights": str(weights), "images": [len(f) for f in features],
            "fid": round(frechet_distance(*features), 4), "kid": round(kid_mean, 6), "kid_std": round(kid_std, 6)}


# ---- the whole evaluation ----

@dataclass(frozen=True)
class Evaluation:
    real: ImageSet
    synth: ImageSet
    real_records: list[ImageRecord]
    synth_records: list[ImageRecord]
    run_dir: Path | None
    points: list[tuple[Column, list[ImageRecord]]]
    fid: dict[str, Any] | None
    memorization: Screen
    memorization_inception: Screen | None = None   # the same screen in Inception space (with the weights)

    def comparison(self) -> list[dict[str, Any]]:
        return compare(self.real_records, self.synth_records)


def usable_or_fail(images: ImageSet, records: Sequence[ImageRecord]) -> None:
    """A set none of whose files decodes has nothing to compare: an error naming its folder, as `dataset
    build` fails with no usable images (a report of empty columns would read as a result)."""
    if records and all(r.error is not None for r in records):
        shown = ", ".join(r.name for r in records[:3]) + (", ..." if len(records) > 3 else "")
        raise MedsynthError(f"{images.root}: no usable images: none of its {len(records)} image files decodes "
                            f"({shown})")


def evaluate(real: Path, synth: Path, *, run_dir: Path | None = None, inception_weights: Path | None = None,
             workers: int = 1, progress: bool = True) -> Evaluation:
    """Measure both sets (and the run's samples per epoch), and FID/KID when weights are given."""
    real_set, synth_set = image_set(real), image_set(synth)
    model = None
    if inception_weights is not None:  # a missing or unusable file fails before the long part, not after it
        from orchestrator.evaluate.fid import load_inception

        model = load_inception(inception_weights)
    groups = run_samples(run_dir) if run_dir is not None else []
    real_records = analyse(real_set.files, real_set.root, workers=workers, progress=progress, desc="real")
    usable_or_fail(real_set, real_records)
    synth_records = analyse(synth_set.files, synth_set.root, workers=workers, progress=progress, desc="synthetic")
    usable_or_fail(synth_set, synth_records)
    points = [(column, analyse(files, run_dir / "sample", workers=workers, progress=progress,  # type: ignore[operator]
                               desc=column.label)) for column, files in groups]
    fid = fid_kid(real_set, synth_set, inception_weights, model=model, progress=progress) \
        if inception_weights else None
    in_features = None if model is None else screen(
        network_embeddings(model, real_set, progress), network_embeddings(model, synth_set, progress),
        similarity=feature_similarity, method=FEATURE_METHOD.format(network="Inception v3"))
    return Evaluation(real_set, synth_set, real_records, synth_records, run_dir, points, fid,
                      screen(embeddings(real_set), embeddings(synth_set)), in_features)


def embeddings(images: ImageSet) -> list[tuple[str, Any]]:
    """(name, memorization embedding or None when unreadable) per file."""
    decoded = ((p.relative_to(images.root).as_posix(), read_image(p, DECODE_SIZE)) for p in images.files)
    return [(name, None if d is None else embed(d[0])) for name, d in decoded]


def network_embeddings(model: Any, images: ImageSet, progress: bool) -> list[tuple[str, Any]]:
    """(name, the 8 orientations' unit-norm Inception features or None when unreadable) per file."""
    from orchestrator.evaluate.fid import INPUT_SIZE, dihedral_features
    decoded = (read_image(p, INPUT_SIZE) for p in images.files)
    with tqdm(total=len(images.files), desc="memorization features", unit="img", disable=not progress) as bar:
        vectors = dihedral_features(model, (None if d is None else d[0] for d in decoded), progress=bar.update)
    return [(p.relative_to(images.root).as_posix(), v) for p, v in zip(images.files, vectors)]
