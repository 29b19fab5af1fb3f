"""Matplotlib figures for the HTML pages (evaluation.html, benchmark.html): drawn off-screen and saved as PNG
atomically, without the version stamp, so the same data gives the same bytes."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend: imported on first use, since the CLI's --help must stay fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90, metadata={"Software": None})  # no version stamp: same data, same bytes
    pyplot().close(fig)
    os.replace(tmp, path)
