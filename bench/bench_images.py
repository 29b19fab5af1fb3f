"""The image stage on 6000x4000 JPEGs (ISIC 2020's most common size): the blog's hair script vs medsynth.

Inputs: the 40 CC0 demo images upscaled to 6000x4000 (INTER_CUBIC, JPEG q95) in a temporary folder, hard-linked
under --count names (every one is decoded and analysed: nothing is cached within a run), with an ISIC 2020
ground-truth CSV listing them as melanomas. The whole-process figures include start-up, ingest and the report,
about 3 s here: --count sets how much they weigh (ISIC 2020 has 584 melanomas).

Whole processes, run alternately (blog, ours, blog, ours, ...) so both see the same machine load:
  blog:  bench/blog_hair.py, a re-implementation of the seed's hair script: every file decoded at full
         resolution, the seed's test (gray, 5x5 blur, Canny 50/250, external contours >= 100 px, > 4000 px
         is hairy) at that native size, one process (OpenCV's own threads use every core).
  ours:  `medsynth dataset build` of the CSV at the default 1024 px and the default worker count, no cache:
         ingest, reduced decode, sha256, hair at the working size, one resize, JPEG encode, captions, report.
In-process, the image stage alone (process_images, no cache), to show whether processes would beat threads:
  threads with every core; a spawn process pool of the same per-image function; one thread.
Prints medians of REPEATS runs and the ratios.

Run: .venv/bin/python bench/bench_images.py [--count 160] [--repeats 3]
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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.dataset.images import ImageJob, _process_one, process_images  # noqa: E402
from orchestrator.common.paths import DEMO_DIR  # noqa: E402

RESOLUTION = 1024
BENCH = Path(__file__).resolve().parent
MEDSYNTH = Path(sys.executable).with_name("medsynth")


def make_inputs(folder: Path, count: int) -> tuple[Path, Path]:
    """(image folder, ISIC 2020 ground-truth CSV) of `count` 6000x4000 JPEGs."""
    images = folder / "images"
    images.mkdir()
    demo = sorted((DEMO_DIR / "images").glob("*.jpg"))
    rows = ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"]
    for i in range(count):
        path = images / f"BIG_{i:04d}.jpg"
        if i < len(demo):
            image = cv2.resize(cv2.imread(str(demo[i])), (6000, 4000), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        else:
            os.link(images / f"BIG_{i % len(demo):04d}.jpg", path)
        rows.append(f"BIG_{i:04d},IP_{i:07d},male,{40 + i % 40},torso,melanoma,malignant,1")
    csv = folder / "ISIC_2020_Training_GroundTruth.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return images, csv


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def in_process(run: Callable[[Path], None], scratch: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        start = time.perf_counter()
        run(out)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out)


def threads(jobs_for: Callable[[Path], list[ImageJob]], workers: int, out: Path) -> None:
    results = process_images(jobs_for(out), workers=workers, cache_path=None, progress=False)
    assert all(r.error is None for r in results), [r.error for r in results]


def processes(jobs_for: Callable[[Path], list[ImageJob]], workers: int, out: Path) -> None:
    # spawn: the only start method that is safe once OpenCV has started its threads
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        results = [r for r, _ in pool.map(partial(_process_one, cache={}), jobs_for(out), chunksize=2)]
    assert all(r.error is None for r in results), [r.error for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=160, help="number of 6000x4000 inputs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="medsynth-bench-images-") as tmp:
        scratch = Path(tmp)
        images, csv = make_inputs(scratch, args.count)
        sources = sorted(images.glob("*.jpg"))
        print(f"{args.count} JPEGs of 6000x4000 ({min(args.count, 40)} distinct), "
              f"output long side {RESOLUTION}; {cores} cores; median of {args.repeats} runs")
        blog_cmd = [sys.executable, str(BENCH / "blog_hair.py"), str(images)]
        ours_out = scratch / "built" / "dataset"
        ours_cmd = [str(MEDSYNTH), "dataset", "build", "--csv", str(csv), "--images", str(images),
                    "--out", str(ours_out), "--quiet"]
        blog, ours = [], []
        for _ in range(args.repeats):
            blog.append(timed(blog_cmd))
            shutil.rmtree(ours_out.parent, ignore_errors=True)  # no cache, no earlier build to reuse
            ours.append(timed(ours_cmd))
        blog_rate, ours_rate = args.count / statistics.median(blog), args.count / statistics.median(ours)
        print(f"blog hair script (whole process)        {blog_rate:7.2f} images/s")
        print(f"medsynth dataset build (whole process)  {ours_rate:7.2f} images/s   "
              f"ratio {ours_rate / blog_rate:5.2f}x  (target >= 4x)")

        def jobs_for(out: Path) -> list[ImageJob]:
            return [ImageJob(p.stem, p, out / p.name, RESOLUTION) for p in sources]
        variants = {f"threads ({cores})": partial(threads, jobs_for, cores),
                    f"spawn processes ({cores})": partial(processes, jobs_for, cores),
                    "one thread": partial(threads, jobs_for, 1)}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                seconds[name].append(in_process(run, scratch))
        base = args.count / statistics.median(seconds[f"threads ({cores})"])
        for name, values in seconds.items():
            rate = args.count / statistics.median(values)
            print(f"image stage, {name:<26} {rate:7.2f} images/s   {rate / base:5.2f}x threads")


if __name__ == "__main__":
    main()
