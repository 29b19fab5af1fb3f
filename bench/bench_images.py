"""The image stage on 6000x4000 JPEGs (ISIC 2020's most common size): images/s, the seed's way vs ours.

The inputs are CC0 demo images upscaled to 6000x4000 (INTER_CUBIC, JPEG q95) in a temporary folder.
seed:          one process; full-resolution decode, the seed's hair test at full size, INTER_AREA resize
               to a 1024 px long side, JPEG q95 write (sha256 of the bytes too, as the manifest needs it).
ours:          process_images() at resolution 1024, no cache: reduced JPEG decode, hair at the 1024 px
               working size, one decode per image; with every core and, to separate the two gains, with one.
Prints the median images/s of REPEATS runs of each and the ratios, plus the cores used.

Run: .venv/bin/python bench/bench_images.py [--count 16] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.images import ImageJob, process_images  # noqa: E402
from orchestrator.paths import DEMO_DIR  # noqa: E402

RESOLUTION = 1024
REPEATS = 3


def make_inputs(folder: Path, count: int) -> list[Path]:
    demo = sorted((DEMO_DIR / "images").glob("*.jpg"))
    paths = []
    for i in range(count):
        image = cv2.resize(cv2.imread(str(demo[i % len(demo)])), (6000, 4000), interpolation=cv2.INTER_CUBIC)
        path = folder / f"BIG_{i:03d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


def seed_way(sources: list[Path], out: Path) -> None:
    for src in sources:
        data = src.read_bytes()
        hashlib.sha256(data).hexdigest()
        image = cv2.imread(str(src))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        contours, _ = cv2.findContours(cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 250),
                                       cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sum(length for length in (cv2.arcLength(c, False) for c in contours) if length >= 100) > 4000
        h, w = image.shape[:2]
        scale = RESOLUTION / max(h, w)
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / src.name), small, [cv2.IMWRITE_JPEG_QUALITY, 95])


def our_way(sources: list[Path], out: Path, workers: int) -> None:
    jobs = [ImageJob(p.stem, p, out / p.name, RESOLUTION) for p in sources]
    results = process_images(jobs, workers=workers, cache_path=None, progress=False)
    assert all(r.error is None for r in results), [r.error for r in results]


def images_per_second(fn: Callable[[Path], None], count: int, scratch: Path) -> float:
    rates = []
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory(dir=scratch) as out:
            start = time.perf_counter()
            fn(Path(out))
            rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32, help="number of 6000x4000 inputs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medsynth-bench-images-") as scratch:
        sources = make_inputs(Path(scratch), args.count)
        print(f"{args.count} JPEGs of 6000x4000 ({sum(p.stat().st_size for p in sources) / 1e6:.0f} MB), "
              f"output long side {RESOLUTION}; {os.cpu_count()} cores, {args.workers} workers; "
              f"median of {REPEATS} runs")
        seed = images_per_second(lambda out: seed_way(sources, out), args.count, Path(scratch))
        ours = images_per_second(lambda out: our_way(sources, out, args.workers), args.count, Path(scratch))
        single = images_per_second(lambda out: our_way(sources, out, 1), args.count, Path(scratch))
    print(f"seed (full decode, 1 process)        {seed:7.2f} images/s")
    print(f"ours ({args.workers} workers)                    {ours:7.2f} images/s   ratio {ours / seed:5.1f}x  "
          f"(target >= 4x)")
    print(f"ours (1 worker: reduced decode only) {single:7.2f} images/s   ratio {single / seed:5.1f}x")


if __name__ == "__main__":
    main()
