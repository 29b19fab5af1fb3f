"""sd-scripts' reading of a training TOML (--config_file): its tables only organise the file, every key is
flattened one level into the argparse name it sets (read_config_from_file in train_util). The one place medsynth
reads a written train.toml as sd-scripts does, and the walk kohya/validate.py builds on (it also wants each key's
section, for its messages and to refuse a key set in two sections).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import toml

from orchestrator.common.errors import MedsynthError


def settings(tables: Mapping[str, Any]) -> Iterator[tuple[str | None, str, Any]]:
    """(section, key, value) for every key in file order; section None for a key outside any table."""
    for name, body in tables.items():
        if isinstance(body, Mapping):
            yield from ((name, key, value) for key, value in body.items())
        else:
            yield None, name, body


def flatten(tables: Mapping[str, Any]) -> dict[str, Any]:
    """The argparse names and values sd-scripts sets (a key set twice: the last one, as sd-scripts keeps it)."""
    return {key: value for _, key, value in settings(tables)}


def read_train_toml(path: Path) -> dict[str, Any]:
    """The file's settings by argparse name."""
    try:
        return flatten(toml.loads(path.read_text(encoding="utf-8")))
    except (OSError, toml.TomlDecodeError) as exc:
        raise MedsynthError(f"{path}: unreadable TOML ({exc})") from exc
