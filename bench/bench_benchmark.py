"""Time per benchmark arm: one training and test scoring of `medsynth benchmark`'s classifier, on the demo's split
and a stand-in synthetic set (tools/standin_synthetic.py), at a given image size, on this machine's device.

    python bench/bench_benchmark.py [--image-size 64] [--epochs 5] [--repeats 3] [--model resnet18]

Prints, per arm, the median seconds of `repeats` trainings (each with another seed) and seconds per training image
and epoch, so the figure scales to a larger data set: an ISIC 2020 fold has ~26,500 training images.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.benchmark import data as bdata  # noqa: E402
from orchestrator.benchmark.fit import device_name, train_and_score  # noqa: E402
from orchestrator.benchmark.job import all_keys  # noqa: E402
from orchestrator.benchmark.pixels import load_pixels  # noqa: E402
from orchestrator.dataset.split import assign_folds, write_split  # noqa: E402
from orchestrator.dataset.ingest import read_metadata  # noqa: E402

DEMO = ROOT / "datasets" / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    a = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tools"))
    from standin_synthetic import write_standin

    csv = [DEMO / "metadata.csv"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "split.csv", assign_folds(read_metadata(csv), 5))
        write_standin(csv, [DEMO / "images"], tmp / "split.csv", 0, 80, tmp / "synthetic")
        d = bdata.load(csv, [DEMO / "images"], fmt=None, split_file=tmp / "split.csv", folds=5, test_fold=0,
                       split_seed=0, synthetic_dir=tmp / "synthetic", ratios=(2, 10), rare_share=0.5,
                       warn=lambda line: None)
        keys = all_keys(d)
        pixels = load_pixels(keys, d.paths, a.image_size, tmp / "cache", workers=2, progress=False)
    index = {k: i for i, k in enumerate(keys)}
    test = pixels[[index[k] for k in d.test["image_id"].astype(str)]]
    device = device_name()
    print(f"{a.model} at {a.image_size} px, {a.epochs} epochs, batch {a.batch_size}, on {device}; "
          f"median of {a.repeats} trainings per arm")
    print(f"{'arm':<16} {'images':>7} {'s per arm':>10} {'ms per image-epoch':>19}")
    for arm in d.arms:
        if arm.skipped:
            continue
        times = []
        for seed in range(a.repeats):
            _, _, seconds = train_and_score(pixels[[index[k] for k in arm.keys]], arm.labels, test, model=a.model,
                                            weights=None, epochs=a.epochs, batch_size=a.batch_size,
                                            learning_rate=1e-3, seed=seed, oversample=arm.kind == "oversample",
                                            device=device, desc=arm.name, progress=False)
            times.append(seconds)
        median = statistics.median(times)
        print(f"{arm.name:<16} {len(arm.keys):>7} {median:>10.2f} {1000 * median / (len(arm.keys) * a.epochs):>19.1f}")


if __name__ == "__main__":
    main()
