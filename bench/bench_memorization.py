"""The memorization screen of `medsynth evaluate` (orchestrator/vision/memorization.py): what it costs.

Prints, for the 40 CC0 demo images (1022x767 and 1504x1129 JPEGs), medians of REPEATS runs:
  embed          decode at a libjpeg reduction (long side >= 256) + the 9 centre-crop thumbnails, per image (every real
                 and every synthetic image pays it once)
  nearest N=...  the nearest of N real images (9 crops each) for each of the 40 synthetic images (8
                 orientations each), per synthetic image; N = 40 (the demo set) and N = 584 (the demo set
                 repeated: the cost depends on N, not on the content)
  calibrate N    the threshold from the N real images (N x N: once per evaluation, dominating as N grows)
plus the cores available.

Run: .venv/bin/python bench/bench_memorization.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_evaluate import REPEATS, median_seconds  # noqa: E402
from orchestrator.common.paths import DEMO_DIR  # noqa: E402
from orchestrator.evaluate.features import embeddings, image_set  # noqa: E402
from orchestrator.vision.memorization import calibrate, similarity_matrix  # noqa: E402


def main() -> None:
    images = image_set(DEMO_DIR)
    n = len(images.files)
    print(f"{n} demo images, {os.cpu_count()} cores, medians of {REPEATS} runs")
    print(f"embed          {median_seconds(lambda: embeddings(images)) / n * 1000:7.2f} ms/image")
    synthetic = np.stack([e for _, e in embeddings(images)])
    for real_count in (40, 584):
        real = np.concatenate([synthetic] * -(-real_count // n))[:real_count]
        nearest = median_seconds(lambda: similarity_matrix(synthetic, real))
        print(f"nearest N={real_count:<4} {nearest / n * 1000:6.2f} ms/synthetic image")
        print(f"calibrate N={real_count:<4} {median_seconds(lambda: calibrate(real)) * 1000:5.0f} ms once")


if __name__ == "__main__":
    main()
