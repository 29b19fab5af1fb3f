"""Lesion features, skin tone and `medsynth evaluate` on the 40 CC0 demo images: what each costs per image.

Prints, for the 40 demo images (1022x767 and 1504x1129 JPEGs), medians of REPEATS runs:
  features       lesion_features() on an image already decoded (analysis resize, mask, A, B, C, D)
  ita            skin_ita() on the same decoded image (its own mask: the cost --skin-tone adds when it
                 runs alone)
  analyse        evaluate.analyse() per image: decode (libjpeg reduction) + features + ITA, one process
  build ratio    the image stage of `medsynth dataset build` on the 20 demo melanomas at 1024 px with and
                 without --skin-tone, no cache (one process), and their ratio
  evaluate       the whole 20 vs 20 evaluation (analysis, figures, page), one process
plus the cores available.

Run: .venv/bin/python bench/bench_evaluate.py
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.evaluate.features import analyse, evaluate  # noqa: E402
from orchestrator.evaluate.report import write_evaluation  # noqa: E402
from orchestrator.dataset.images import ImageJob, process_images  # noqa: E402
from orchestrator.common.paths import DEMO_DIR  # noqa: E402
from orchestrator.vision.lesion import lesion_features  # noqa: E402
from orchestrator.vision.skin_tone import skin_ita  # noqa: E402

REPEATS = 5


def median_seconds(work: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    paths = sorted((DEMO_DIR / "images").glob("*.jpg"))
    images = [cv2.imread(str(p)) for p in paths]
    n = len(images)
    print(f"{n} demo images, {os.cpu_count()} cores, medians of {REPEATS} runs")

    features = median_seconds(lambda: [lesion_features(i) for i in images]) / n
    ita = median_seconds(lambda: [skin_ita(i) for i in images]) / n
    analysed = median_seconds(lambda: analyse(paths, DEMO_DIR / "images", workers=1, progress=False)) / n
    print(f"features       {features * 1000:7.1f} ms/image")
    print(f"ita            {ita * 1000:7.1f} ms/image")
    print(f"analyse        {analysed * 1000:7.1f} ms/image (decode + features + ITA)")

    with (DEMO_DIR / "metadata.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    melanoma = [DEMO_DIR / "images" / f"{r['isic_id']}.jpg" for r in rows if r["diagnosis"] == "melanoma"]
    nevus = [DEMO_DIR / "images" / f"{r['isic_id']}.jpg" for r in rows if r["diagnosis"] == "nevus"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def stage(skin_tone: bool) -> None:
            out = Path(tempfile.mkdtemp(dir=root))
            jobs = [ImageJob(p.stem, p, out / p.name, 1024, skin_tone=skin_tone) for p in melanoma]
            process_images(jobs, workers=1, cache_path=None, progress=False)

        plain, toned = median_seconds(lambda: stage(False)), median_seconds(lambda: stage(True))
        print(f"build stage    {plain / len(melanoma) * 1000:7.1f} ms/image plain, "
              f"{toned / len(melanoma) * 1000:7.1f} with --skin-tone (x{toned / plain:.2f})")

        for name, files in (("mel", melanoma), ("nev", nevus)):
            (root / name).mkdir()
            for p in files:
                os.link(p, root / name / p.name)

        def whole() -> None:
            write_evaluation(evaluate(root / "mel", root / "nev", workers=1, progress=False),
                             Path(tempfile.mkdtemp(dir=root)))

        print(f"evaluate       {median_seconds(whole, 3):7.2f} s for 20 vs 20 images (one process, with figures)")


if __name__ == "__main__":
    main()
