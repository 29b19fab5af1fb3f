"""Compare the packages installed in this interpreter's environment with a lock file (requirements/lock.txt).

    python requirements/drift.py LOCK            # report: name lock-version -> installed (make test-latest)
    python requirements/drift.py --check LOCK    # exit 1 if anything installed is off the lock (CI, after make setup)

pip itself and medsynth are left out; a locked package that is not installed (another platform's) is only reported.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

SKIP = {"pip", "medsynth"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise SystemExit(f"{path}: not a pin: {line!r}")
            pins[_norm(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def installed() -> dict[str, str]:
    found = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    return {name: version for name, version in found.items() if name not in SKIP}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 when an installed package is off the lock")
    args = parser.parse_args(argv)
    lock, have = read_lock(args.lock), installed()
    changed = [f"  {n} {lock[n]} -> {have[n]}" for n in sorted(have) if n in lock and lock[n] != have[n]]
    added = [f"  {n} (not in the lock) -> {have[n]}" for n in sorted(have) if n not in lock]
    gone = [f"  {n} {lock[n]} -> (not installed)" for n in sorted(lock) if n not in have]
    if changed or added:
        print(f"{len(changed) + len(added)} package(s) differ from {args.lock} (lock -> installed):")
        print("\n".join(changed + added))
    else:
        print(f"every installed package is at its {args.lock} version ({len(have)} packages)")
    if gone:
        print("locked but not installed here (no longer needed, or another platform's):\n" + "\n".join(gone))
    if args.check and (changed or added):
        print(f"error: this environment is off {args.lock}: if pyproject.toml's dependencies changed, run 'make lock'"
              " and commit the lock files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
