"""Where medsynth's own files live, and where a user's files are looked for.

medsynth's files (templates, presets, the sweep example) come with the package: a wheel carries the checkout's
top-level `templates/` folder as `orchestrator/templates` (pyproject.toml's package-dir mapping) and they are read
through importlib.resources; a source checkout (an editable install) reads the top-level `templates/` itself, where
users edit them. A user's own files are found from the project folder (the project file's folder, else the working
directory), never from the package's location: `runs/`, `vendor/sd-scripts`, and `templates/` with copies of the
templates or presets that override the packaged ones file by file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # orchestrator/, above common/
# the folder above the package: the checkout in a source checkout, site-packages in an install
REPO_ROOT = PACKAGE_DIR.parent


def _source_root() -> Path | None:
    """The source checkout this package runs from (an editable install, tests), or None when installed."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "templates").is_dir() \
            and not (PACKAGE_DIR / "templates").is_dir():
        return REPO_ROOT
    return None


SOURCE_ROOT = _source_root()


def _packaged_templates() -> Path:
    inside = resources.files("orchestrator") / "templates"  # a wheel: the package carries them
    if isinstance(inside, Path) and inside.is_dir():
        return inside.resolve()
    return REPO_ROOT / "templates"  # a source checkout: the top-level folder users edit


TEMPLATES_DIR = _packaged_templates()
PRESETS_DIR = TEMPLATES_DIR / "presets"
DATASETS_DIR = REPO_ROOT / "datasets"
DEMO_DIR = DATASETS_DIR / "demo"
# the checkout's sd-scripts (the git submodule); what a command runs by default: default_sd_scripts()
SD_SCRIPTS_DIR = REPO_ROOT / "vendor" / "sd-scripts"
# the commit vendor/sd-scripts is pinned to (the gitlink); the contract data file was generated from it
SD_SCRIPTS_COMMIT = "48d368fa557731ad0488c07304dfeba8c07910eb"

USER_TEMPLATES = "templates"  # <project folder>/templates: a user's own templates and presets/
RUNS = "runs"

_project_dir: Path | None = None  # set by train.settings.load_settings: the folder of the project file in use


def set_project_dir(folder: Path | None) -> None:
    """The project folder the current command works in (None: the working directory)."""
    global _project_dir
    _project_dir = folder.resolve() if folder is not None else None


def project_dir(project_file: Path | None = None) -> Path:
    """The given project file's folder, else the one set by set_project_dir, else the working directory."""
    if project_file is not None:
        return project_file.expanduser().resolve().parent
    return _project_dir if _project_dir is not None else Path.cwd()


def template_dirs(folder: Path | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: <project folder>/templates, then the packaged ones."""
    own = (folder if folder is not None else project_dir()) / USER_TEMPLATES
    if own.is_dir() and own.resolve() != TEMPLATES_DIR.resolve():
        return [own, TEMPLATES_DIR]
    return [TEMPLATES_DIR]


def preset_dirs(folder: Path | None = None) -> list[Path]:
    """Where presets are looked up, first match wins: <project folder>/templates/presets, then the packaged ones."""
    return [d / "presets" for d in template_dirs(folder)]


def find_template(name: str, folder: Path | None = None) -> Path:
    """The file a template name resolves to (the packaged path when no folder has it)."""
    for base in template_dirs(folder):
        if (base / name).is_file():
            return base / name
    return TEMPLATES_DIR / name


def default_runs_dir(folder: Path | None = None) -> Path:
    """runs/ in the project folder."""
    return (folder if folder is not None else project_dir()) / RUNS


def default_sd_scripts(project_file: Path | None = None) -> Path:
    """vendor/sd-scripts in the project folder (or the working directory) when it holds sd-scripts, else the
    source checkout's submodule; when none does, the checkout's (where `make setup` puts it) or, installed, the
    project folder's: a launch then says it is missing there."""
    own = project_dir(project_file) / "vendor" / "sd-scripts"
    candidates = [own, Path.cwd() / "vendor" / "sd-scripts"]
    if SOURCE_ROOT is not None:
        candidates.append(SOURCE_ROOT / "vendor" / "sd-scripts")
    for candidate in candidates:
        if (candidate / "sdxl_train_network.py").is_file():
            return candidate
    return candidates[-1] if SOURCE_ROOT is not None else own


def git_checkout() -> Path | None:
    """The source checkout when it is a git work tree (for the project's commit and gitlink), else None."""
    if SOURCE_ROOT is not None and (SOURCE_ROOT / ".git").exists():
        return SOURCE_ROOT
    return None
