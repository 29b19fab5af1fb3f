"""summarise() of orchestrator/benchmark/metrics.py at the size of an ISIC 2020 test fold: what one arm costs.

Synthetic data, fixed seed: 6,600 test images of 400 patients, 3 training seeds, 2000 bootstrap replicates,
5 metrics. Prints the median seconds of --repeats calls of summarise() alone and with a baseline arm (the
paired test doubles the curves per replicate), at ISIC's ~2 % positives and at 50 % (every image a point of
the ROC curve: the slowest case). A benchmark run does this for 9 arms.

Run: .venv/bin/python bench/bench_benchmark_metrics.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.benchmark.metrics import summarise

IMAGES, PATIENTS, SEEDS, N_BOOT = 6600, 400, 3, 2000


def fold(positive_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labels, two arms' scores (informative, with seed noise) and patient ids of one synthetic test fold."""
    rng = np.random.default_rng(0)
    y = (rng.random(IMAGES) < positive_share).astype(int)
    groups = np.array([f"patient{i}" for i in rng.integers(0, PATIENTS, IMAGES)])
    arm, baseline = (1 / (1 + np.exp(-(y * 1.5 - 2 + rng.normal(0, 1, (SEEDS, IMAGES))))) for _ in range(2))
    return y, arm, baseline, groups


def median_seconds(repeats: int, *args, **kwargs) -> float:
    """Of summarise(*args, **kwargs) with N_BOOT replicates."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        summarise(*args, n_boot=N_BOOT, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{IMAGES} images, {PATIENTS} patients, {SEEDS} seeds, {N_BOOT} replicates, {os.cpu_count()} cores, "
          f"medians of {args.repeats} calls")
    for share in (0.018, 0.5):
        y, arm, baseline, groups = fold(share)
        alone = median_seconds(args.repeats, y, arm, groups)
        paired = median_seconds(args.repeats, y, arm, groups, baseline=baseline)
        print(f"positives {share:5.1%} ({y.sum():4d}): summarise {alone:6.2f} s, with baseline {paired:6.2f} s")


if __name__ == "__main__":
    main()
