"""`medsynth --help`, whole process: the median wall time of --runs runs (target <= 0.2 s), beside a bare
`python -c pass` measured alternately, so that interpreter start-up on this machine can be told apart.

Run: .venv/bin/python bench/bench_cli_help.py [--runs 21]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

MEDSYNTH = Path(sys.executable).with_name("medsynth")


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    help_times, bare_times = [], []
    for _ in range(args.runs):
        help_times.append(seconds([str(MEDSYNTH), "--help"]))
        bare_times.append(seconds([sys.executable, "-c", "pass"]))
    help_s, bare_s = statistics.median(help_times), statistics.median(bare_times)
    print(f"medsynth --help   median {help_s:.3f} s of {args.runs} runs  (target <= 0.2 s)")
    print(f"python -c pass    median {bare_s:.3f} s  (interpreter start-up alone)")


if __name__ == "__main__":
    main()
