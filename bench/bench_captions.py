"""A cold `medsynth dataset build` of the 33,126-row ISIC 2020 table vs the seed's caption script, whole processes.

seed:  bench/blog_captions.py: pandas iterrows over all 33,126 rows; for each of the 584 malignant rows an
       f-string caption, the seed's hair test at the image's native resolution, one caption file.
ours:  `medsynth dataset build --csv <the table> --images <folder> --out <new folder>`: the default 1024 px,
       the default worker count, no image cache and no earlier build (cold): ingest and normalise, select,
       decode, hash, hair, resize, encode, captions, manifest, report.
The images: one JPEG per malignant row, hard links to the 40 CC0 demo images (1022x767 and 1504x1129, the
sizes of ISIC's older archive), or, with --size WxH, to the demo images resized to that size (ISIC 2020's
own are mostly 6000x4000). Every image is analysed: nothing is cached between images or runs.
The two commands run alternately (seed, ours, seed, ours, ...) so that both see the same machine load.
Prints the median seconds of --repeats runs of each and their ratio (target: ours at least as fast).

Run: .venv/bin/python bench/bench_captions.py [--csv ISIC_2020_Training_GroundTruth.csv] [--size 6000x4000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.common.paths import DEMO_DIR, REPO_ROOT  # noqa: E402

DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "isic" / "ISIC_2020_Training_GroundTruth.csv"
BENCH = Path(__file__).resolve().parent
MEDSYNTH = Path(sys.executable).with_name("medsynth")


def make_images(folder: Path, names: list[str], size: tuple[int, int] | None) -> None:
    demo = sorted((DEMO_DIR / "images").glob("*.jpg"))
    if size is not None:
        resized = folder / "_sources"
        resized.mkdir()
        for path in demo:
            image = cv2.resize(cv2.imread(str(path)), size, interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(resized / path.name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        demo = sorted(resized.glob("*.jpg"))
    for i, name in enumerate(names):
        os.link(demo[i % len(demo)], folder / f"{name}.jpg")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--size", help="WxH of the images (default: the demo images' own sizes)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(f"not found: {args.csv} (pass --csv ISIC_2020_Training_GroundTruth.csv)")
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    table = pd.read_csv(args.csv)
    malignant = list(table.loc[table["target"] == 1, "image_name"])
    with tempfile.TemporaryDirectory(prefix="medsynth-bench-captions-") as tmp:
        scratch = Path(tmp)
        images = scratch / "images"
        images.mkdir()
        make_images(images, malignant, size)
        print(f"{len(table):,} rows, {len(malignant)} malignant with an image each "
              f"({args.size or 'demo sizes'}); {os.cpu_count()} cores; median of {args.repeats} runs each")
        seed_out, ours_out = scratch / "seed", scratch / "ours" / "dataset"
        seed_cmd = [sys.executable, str(BENCH / "blog_captions.py"), str(args.csv), str(images), str(seed_out)]
        ours_cmd = [str(MEDSYNTH), "dataset", "build", "--csv", str(args.csv), "--images", str(images),
                    "--out", str(ours_out), "--quiet"]
        seed, ours = [], []
        for _ in range(args.repeats):
            shutil.rmtree(seed_out, ignore_errors=True)
            seed.append(timed(seed_cmd))
            shutil.rmtree(ours_out.parent, ignore_errors=True)  # cold: no cache, no earlier build
            ours.append(timed(ours_cmd))
        assert len(list(seed_out.glob("*.caption"))) == len(malignant)
        assert len(list((ours_out / "train" / "1_melanoma").glob("*.caption"))) == len(malignant)
    s, o = statistics.median(seed), statistics.median(ours)
    print(f"seed caption script (whole process)      {s:7.2f} s")
    print(f"medsynth dataset build, cold (whole)     {o:7.2f} s   ratio {s / o:5.2f}x  (target >= 1x)")


if __name__ == "__main__":
    main()
