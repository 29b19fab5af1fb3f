"""Where the project's own files live, resolved from the package location (never the CWD)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = REPO_ROOT / "templates"
DATASETS_DIR = REPO_ROOT / "datasets"
DEMO_DIR = DATASETS_DIR / "demo"
SD_SCRIPTS_DIR = REPO_ROOT / "vendor" / "sd-scripts"
# the commit vendor/sd-scripts is pinned to (the gitlink); the contract data file was generated from it
SD_SCRIPTS_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"
