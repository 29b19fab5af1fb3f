"""The project file (medsynth.toml): a [dataset] table for `dataset build` and a [train] table for `train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import toml

from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean

TABLES = ("dataset", "train")
DEFAULT_NAME = "medsynth.toml"


def load_project_file(path: Path) -> dict[str, dict[str, Any]]:
    """Parse the file; only the known tables are allowed at the top level."""
    try:
        data = toml.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read project file ({exc.strerror})") from exc
    except (toml.TomlDecodeError, UnicodeDecodeError) as exc:
        raise MedsynthError(f"{path}: not valid TOML: {exc}") from exc
    for key, value in data.items():
        if key not in TABLES:
            raise MedsynthError(f"{path}: unknown table '{key}'{did_you_mean(key, TABLES)} (allowed: {', '.join(TABLES)})")
        if not isinstance(value, dict):
            raise MedsynthError(f"{path}: '{key}' must be a table ([{key}])")
    return {name: data.get(name, {}) for name in TABLES}


def find_project_file(explicit: Path | None, cwd: Path) -> Path | None:
    """The file given with --config, else ./medsynth.toml when present."""
    if explicit is not None:
        if not explicit.is_file():
            raise MedsynthError(f"{explicit}: project file not found")
        return explicit
    candidate = cwd / DEFAULT_NAME
    return candidate if candidate.is_file() else None
