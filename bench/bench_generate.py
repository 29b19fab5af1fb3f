"""Planning `medsynth generate` and building a reader-study page: wall times (median of REPEATS) and sizes.

- plan: drawing and rendering N prompts (match and --balance site) from a 33,126-row manifest, ISIC 2020's size,
  including the check that the caption template reproduces every training caption;
- resume check: reading the seed/prompt text chunks of 1,000 generated-size PNGs (1024 px, ~1.5 MB of noise
  each) as a re-run does before deciding what is left to draw;
- reader study: the 40-image page from the 40 CC0 demo images (20 as real, 20 as synthetic), its size in bytes;
- `medsynth generate RUN --count 100 --dry-run` as a fresh process (interpreter start included) on a small run.

Run: .venv/bin/python bench/bench_generate.py [--repeats 5] [--count 10000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from generate_helpers import make_run, png_with_text, write_manifest  # noqa: E402
from orchestrator.dataset.captions import CaptionSettings  # noqa: E402
from orchestrator.generate.prompts import Item, plan_items  # noqa: E402
from orchestrator.common.paths import DEMO_DIR  # noqa: E402
from orchestrator.evaluate.reader_study import build_study  # noqa: E402
from orchestrator.generate.outputs import png_text  # noqa: E402
from train_helpers import caption_for, make_dataset  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def manifest_rows(n: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        sex = str(rng.choice(["male", "female", ""]))
        site = str(rng.choice(["torso", "lower extremity", "upper extremity", "head/neck", ""]))
        age = str(int(rng.choice(np.arange(20, 90, 5))))
        hairy = bool(rng.random() < 0.2)
        rows.append({"image_id": f"ISIC_{i:07d}", "caption": caption_for(sex, site, age, hairy),
                     "hair": str(hairy).lower(), "sex": sex, "age": age, "site": site, "diagnosis": "melanoma",
                     "malignant": "true"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_manifest(Path(tmp) / "manifest.csv", manifest_rows(33126))
        for balance in (None, "site"):
            seconds, items = timed(lambda: plan_items(manifest, args.count, seed=0, balance=balance,
                                                      settings=CaptionSettings()), args.repeats)
            print(f"plan {args.count} prompts from 33126 manifest rows ({balance or 'match'}): "
                  f"median {seconds:.2f} s ({len(items)} items)")
        pixels = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
        png = png_with_text(1024, 1024, {"prompt": "photo of skin, me1anoma", "seed": "1"}, pixels)
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(1000):
            (folder / f"SYN_{i:07d}.png").write_bytes(png)
        item = Item(1, "photo of skin, me1anoma", 1, {})
        seconds, _ = timed(lambda: [png_text(p) == {"prompt": item.prompt, "seed": "1"}
                                    for p in sorted(folder.iterdir())], args.repeats)
        print(f"resume check of 1000 PNGs of {len(png) / 1e6:.1f} MB: median {seconds:.3f} s")
        run = make_run(Path(tmp), make_dataset(Path(tmp) / "ds"))
        argv = [sys.executable, "-m", "orchestrator.cli.main", "generate", str(run), "--count", "100", "--dry-run"]
        seconds, _ = timed(lambda: subprocess.run(argv, cwd=ROOT, check=True, capture_output=True), args.repeats)
        print(f"generate --dry-run (100 images, fresh process): median {seconds:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        # two folders: the study refuses a file that is on both sides
        sides = [Path(tmp) / "real", Path(tmp) / "synthetic"]
        for i, image in enumerate(sorted((DEMO_DIR / "images").glob("*.jpg"))):
            sides[i % 2].mkdir(exist_ok=True)
            (sides[i % 2] / image.name).symlink_to(image)
        seconds, study = timed(lambda: build_study(*sides, n=40, seed=0), args.repeats)
    print(f"reader study, 40 images at 512 px: median {seconds:.2f} s, page {len(study.html.encode()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
