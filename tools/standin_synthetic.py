"""A stand-in for `medsynth generate` where no GPU can draw SDXL images (the demo's `make benchmark`, CI): a
synthetic folder in generate's format whose "synthetic" melanomas are augmented copies of the training patients'
melanomas.

    python tools/standin_synthetic.py --csv META.csv --images DIR --split SPLIT.csv --test-fold K --count N --out DIR

Each image is a random training melanoma (never one of the test fold's), turned by a random quarter turn, maybe
flipped, cropped to 70-100 % of its shorter side, brightness scaled by 0.85-1.15, saved as images/SYN_<n>.png;
metadata.csv is written by generate's own writer (image_manipulation = synthetic, the source's sex, age and site).
It exercises the benchmark's plumbing, not a generative model: expect the synthetic arms to do about as well as
the oversample arm. It has no run folder, so the benchmark's leakage check reports it "untraced".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from orchestrator.benchmark.data import read_real
from orchestrator.benchmark.pixels import square
from orchestrator.dataset.split import hold_out, read_split
from orchestrator.generate.outputs import write_metadata

SIZE = 256   # px: above any benchmark --image-size the demo uses


def _augment(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = min(bgr.shape[:2])
    crop = int(side * rng.uniform(0.7, 1.0))
    top, left = (int(rng.integers(0, n - crop + 1)) for n in bgr.shape[:2])
    out = np.rot90(bgr[top:top + crop, left:left + crop], int(rng.integers(4)))
    out = out[:, ::-1] if rng.random() < 0.5 else out
    out = square(np.ascontiguousarray(out), SIZE)[:, :, ::-1]   # square() gives RGB: back to BGR for cv2
    return np.clip(out.astype(np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)


def write_standin(csv_paths: list[Path], image_dirs: list[Path], split_file: Path, test_fold: int, count: int,
                  out: Path, seed: int = 0) -> int:
    table, _ = read_real(csv_paths, image_dirs, None, warn=lambda line: None)
    train = hold_out(table, read_split(split_file), test_fold, split_file)
    melanomas = train[train["malignant"].astype(bool)].reset_index(drop=True)
    if melanomas.empty:
        raise SystemExit("error: the training folds have no malignant image to copy")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(1, count + 1):
        source = melanomas.iloc[int(rng.integers(len(melanomas)))]
        bgr = cv2.imread(str(source["path"]), cv2.IMREAD_COLOR)
        name = f"SYN_{number:07d}"
        if not cv2.imwrite(str(out / "images" / f"{name}.png"), _augment(bgr, rng)):
            raise SystemExit(f"error: cannot write {out / 'images' / name}.png")
        rows.append({"image_name": name, "patient_id": "", "sex": _text(source["sex"]),
                     "age_approx": _text(source["age"]), "anatom_site_general_challenge": _text(source["site"]),
                     "diagnosis": "melanoma", "benign_malignant": "malignant", "target": "1", "synthetic": "1",
                     "image_manipulation": "synthetic", "prompt": f"stand-in: augmented {source['image_id']}",
                     "seed": str(number), "lora_file": "", "lora_sha256": "", "medsynth_version": "",
                     "medsynth_run": "", "medsynth_epoch": ""})
    write_metadata(out / "metadata.csv", rows)
    return count


def _text(value) -> str:
    return "" if pd.isna(value) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, action="append", required=True)
    parser.add_argument("--images", type=Path, action="append", required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--test-fold", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    made = write_standin(a.csv, a.images, a.split, a.test_fold, a.count, a.out, a.seed)
    print(f"stand-in synthetic set: {made} augmented training melanomas in {a.out} (not a generative model)")


if __name__ == "__main__":
    main()
