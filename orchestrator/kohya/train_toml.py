"""sd-scripts' reading of a training TOML (--config_file): its tables only organise the file, every key is
flattened one level into the argparse name it sets (read_config_from_file in train_util). The one place medsynth
reads a written train.toml as sd-scripts does; kohya/validate.py keeps its own walk, which also records each
key's section for its messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import toml

from orchestrator.common.errors import MedsynthError


def flatten(tables: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tables.items():
        flat.update(value if isinstance(value, Mapping) else {key: value})
    return flat


def read_train_toml(path: Path) -> dict[str, Any]:
    """The file's settings by argparse name."""
    try:
        return flatten(toml.loads(path.read_text(encoding="utf-8")))
    except (OSError, toml.TomlDecodeError) as exc:
        raise MedsynthError(f"{path}: unreadable TOML ({exc})") from exc
