"""Repack a bitsandbytes manylinux wheel keeping only the native libraries one machine loads.

The full wheel (~43 MB) carries a library per CUDA version; the GPU machine's torch (cu130) makes bitsandbytes
load libbitsandbytes_cuda130.so, and the CPU one is its fallback. Trimmed, it is ~4 MB, which keeps what travels
to the device under its size limit. The RECORD is rewritten so pip accepts the result.

usage: python tools/trim_bnb_wheel.py IN.whl OUT_DIR [--keep libbitsandbytes_cuda130.so ...]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import zipfile
from pathlib import Path

DEFAULT_KEEP = ("libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so")


def _record_row(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim_wheel(src: Path, out_dir: Path, keep: tuple[str, ...] = DEFAULT_KEEP) -> Path:
    """Write out_dir/<same name>.whl without the libbitsandbytes_*.so files not in `keep`; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    tmp = out_dir / f".{src.name}.partial"
    with zipfile.ZipFile(src) as zin:
        names = zin.namelist()
        record = next((n for n in names if n.endswith(".dist-info/RECORD")), None)
        if record is None:
            raise SystemExit(f"error: {src} is not a wheel (no .dist-info/RECORD)")
        if not any(os.path.basename(n) in keep for n in names):
            raise SystemExit(f"error: {src} holds none of {', '.join(keep)}")
        rows = []
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zout:
            for name in names:
                base = os.path.basename(name)
                if name == record or (base.startswith("libbitsandbytes_") and base.endswith(".so") and base not in keep):
                    continue
                data = zin.read(name)
                zout.writestr(zin.getinfo(name), data)
                rows.append(_record_row(name, data))
            rows.append(f"{record},,")
            zout.writestr(record, "\n".join(rows) + "\n")
    os.replace(tmp, dst)
    return dst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--keep", nargs="+", default=list(DEFAULT_KEEP), help="native library file names to keep")
    args = p.parse_args(argv)
    dst = trim_wheel(args.wheel, args.out_dir, tuple(args.keep))
    print(f"{dst} {dst.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
