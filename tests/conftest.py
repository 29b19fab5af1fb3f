"""Shared fixtures: the real ISIC files in ../shared and the pinned sd-scripts, each skipped with a reason when absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from orchestrator.common.paths import REPO_ROOT, SD_SCRIPTS_DIR

# ../shared sits beside the checkout (and beside CI's clone); MEDSYNTH_SHARED overrides it
SHARED = Path(os.environ.get("MEDSYNTH_SHARED", REPO_ROOT.parent / "shared"))
ISIC = SHARED / "data" / "isic"


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    if not (ISIC / "ISIC_2020_Training_GroundTruth.csv").is_file():
        pytest.skip(f"real ISIC metadata not found under {ISIC} (set MEDSYNTH_SHARED)")
    return ISIC


@pytest.fixture(scope="session")
def sd_scripts_dir() -> Path:
    """vendor/sd-scripts at the pinned commit, with its Python requirements importable."""
    if not (SD_SCRIPTS_DIR / "sdxl_train_network.py").is_file():
        pytest.skip("vendor/sd-scripts is empty: run 'git submodule update --init' (needs network)")
    missing = [m for m in ("torch", "diffusers", "transformers", "voluptuous", "accelerate")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"sd-scripts' requirements not installed ({', '.join(missing)}): run 'make setup-kohya'")
    return SD_SCRIPTS_DIR
