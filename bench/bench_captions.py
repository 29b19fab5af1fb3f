"""Captioning all 33,126 ISIC 2020 rows: the seed's way vs medsynth's, measured in one run.

seed:  pandas iterrows over the raw CSV, an f-string per row, and open()/write()/close() of one
       `<image>.caption` file per row (as the seed's create_captions.py did, minus its progress bar).
ours:  render_captions() over the normalised lesion table (each distinct context rendered once) and
       write_captions() (one file per image through a directory fd and raw os calls).

Both write every file into a fresh temporary folder per repeat (under --tmp; default /dev/shm where it
exists, so that disk latency, equal for both, does not drown the captioning cost; else $TMPDIR); reading
the CSV is outside the timings (it is the same for both). Prints medians of REPEATS runs: captions + files,
render only, and the file-system floor (creating the same number of one-line files and nothing else),
which bounds any captioner's files-included ratio on that file system.

Run: .venv/bin/python bench/bench_captions.py [--csv ISIC_2020_Training_GroundTruth.csv] [--tmp /dev/shm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.captions import CaptionSettings, render_captions, write_captions  # noqa: E402
from orchestrator.ingest import read_metadata  # noqa: E402
from orchestrator.paths import REPO_ROOT  # noqa: E402

DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "isic" / "ISIC_2020_Training_GroundTruth.csv"
REPEATS = 7


def seed_caption(row: pd.Series) -> str:
    sex = row["sex"] if pd.notna(row["sex"]) else ""
    site = f"on {row['anatom_site_general_challenge']}" if pd.notna(row["anatom_site_general_challenge"]) else ""
    age = f", at age {int(row['age_approx'])}" if pd.notna(row["age_approx"]) else ""
    return f"photo of {sex} skin, me1anoma {site} {age}"


def seed_render(raw: pd.DataFrame) -> list[str]:
    return [seed_caption(row) for _, row in raw.iterrows()]


def seed_write(raw: pd.DataFrame, folder: Path) -> None:
    for _, row in raw.iterrows():
        caption = seed_caption(row)
        with open(os.path.join(folder, f"{row['image_name']}.caption"), mode="w") as caption_file:
            caption_file.write(caption)


def ours_render(table: pd.DataFrame) -> list[str]:
    return render_captions(table, None, CaptionSettings())


def ours_write(table: pd.DataFrame, folder: Path) -> None:
    write_captions(folder, zip(table["image_id"], render_captions(table, None, CaptionSettings())))


def floor_write(names: list[str], folder: Path) -> None:
    write_captions(folder, ((name, "photo of skin") for name in names))


def median_seconds(fn: Callable[[Path], object], tmp: str | None, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="medsynth-bench-", dir=tmp) as folder:
            start = time.perf_counter()
            fn(Path(folder))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--tmp", help="folder for the caption files (default: /dev/shm if present, else $TMPDIR)")
    args = parser.parse_args()
    if args.tmp is None and os.access("/dev/shm", os.W_OK):
        args.tmp = "/dev/shm"
    if not args.csv.is_file():
        sys.exit(f"not found: {args.csv} (pass --csv ISIC_2020_Training_GroundTruth.csv)")
    raw = pd.read_csv(args.csv)  # the seed's read
    table = read_metadata([args.csv])
    assert len(raw) == len(table)
    where = Path(args.tmp or tempfile.gettempdir())
    print(f"{len(table):,} rows from {args.csv.name}; files under {where}; median of {REPEATS} runs each")

    seed_files = median_seconds(lambda d: seed_write(raw, d), args.tmp)
    ours_files = median_seconds(lambda d: ours_write(table, d), args.tmp)
    floor = median_seconds(lambda d: floor_write(list(table["image_id"]), d), args.tmp)
    seed_only = median_seconds(lambda d: seed_render(raw), args.tmp)
    ours_only = median_seconds(lambda d: ours_render(table), args.tmp)
    distinct = len(set(ours_render(table)))

    print(f"captions + files   seed {seed_files * 1e3:8.1f} ms   ours {ours_files * 1e3:8.1f} ms   "
          f"ratio {seed_files / ours_files:6.1f}x  (target >= 20x)")
    print(f"render only        seed {seed_only * 1e3:8.1f} ms   ours {ours_only * 1e3:8.1f} ms   "
          f"ratio {seed_only / ours_only:6.1f}x  ({distinct} distinct captions)")
    print(f"file floor         {len(table):,} one-line files alone: {floor * 1e3:.1f} ms "
          f"({floor / len(table) * 1e6:.1f} us/file): no captioner beats seed/floor = {seed_files / floor:.1f}x "
          f"here with files included")


if __name__ == "__main__":
    main()
