"""`medsynth train --dry-run` on the demo dataset, with no GPU visible: wall time of the whole command.

Builds the demo dataset once into a temporary folder (medsynth dataset build on datasets/demo), then runs
the dry run REPEATS times as a fresh process (interpreter start included, as a user would see it) with an
empty PATH entry for nvidia-smi, and prints the median, min and max. Also reports whether torch got imported
on that path (it must not: importing it alone takes ~2 s).

Run: .venv/bin/python bench/bench_train_dry_run.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRY_RUN = ("import sys; from orchestrator.cli.train import train; "
           "sys.argv = ['medsynth', '--dry-run', '--dataset', sys.argv[1], '--run-name', 'bench']; "
           "import atexit; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr)); "
           "train()")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": os.path.dirname(sys.executable)}
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "demo"
        subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv",
                        str(ROOT / "datasets/demo/metadata.csv"), "--images", str(ROOT / "datasets/demo/images"),
                        "--out", str(ds), "--quiet"], cwd=tmp, env=env, check=True, capture_output=True)
        times, torch_seen = [], set()
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", DRY_RUN, str(ds)], cwd=tmp, env=env, capture_output=True,
                                  text=True, check=True)
            times.append(time.perf_counter() - start)
            torch_seen.add(done.stderr.strip().splitlines()[-1])
    print(f"dry run on the demo dataset ({args.repeats} runs, no GPU visible): "
          f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, max {max(times):.3f} s; {', '.join(sorted(torch_seen))}")


if __name__ == "__main__":
    main()
