"""A dataset with loss masks, built by the real `dataset build` path from the embedded demo images (small, so the
tests stay fast)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.build import BuildResult, build_dataset
from orchestrator.dataset.settings import resolve_settings

RESOLUTION = 256


def build_demo(out: Path, **settings) -> BuildResult:
    """The demo's 20 melanomas at RESOLUTION px, built with `settings` (masks="auto", a folder, ...)."""
    return build_dataset(resolve_settings({"csv": (DEMO_DIR / "metadata.csv",), "images": (DEMO_DIR / "images",),
                                           "out": out, "resolution": RESOLUTION, "workers": 2, **settings}),
                         progress=False)
