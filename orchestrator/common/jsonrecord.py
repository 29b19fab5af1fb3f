"""Reading the JSON records medsynth writes (dataset.json, evaluation.json, generation.json): a versioned JSON
object whose keys are checked one by one, every fault a one-line MedsynthError naming the file and key and
saying what to do (`fix`). A file without `schema_version` was written before records had one: version 1."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError

# key -> (the JSON types it may have, how a message names them)
FieldTypes = Mapping[str, tuple[tuple[type, ...], str]]


def load_versioned(path: Path, *, what: str, version: int, fix: str) -> dict[str, Any]:
    """The JSON object in `path` (`what` names it in messages), refused unless of schema `version`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MedsynthError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise MedsynthError(f"{path}: not valid JSON ({exc}): {fix}") from exc
    if not isinstance(data, dict):
        raise MedsynthError(f"{path}: not a {what} (a JSON object): {fix}")
    found = data.get("schema_version", 1)
    if found != version:
        raise MedsynthError(f"{path}: {what} schema version {found!r}; this medsynth reads version {version}: {fix}")
    return data


def field_error(path: Path, key: str, problem: str, fix: str) -> MedsynthError:
    return MedsynthError(f"{path}: key '{key}' {problem} (hand-edited wrongly?): {fix}")


def typed_fields(path: Path, data: Mapping[str, Any], types: FieldTypes, *, fix: str,
                 optional: Collection[str] = ()) -> dict[str, Any]:
    """The values of `types`' keys in `data`, each checked to be of its JSON types (true is no integer);
    a key in `optional` may be absent."""
    values: dict[str, Any] = {}
    for key, (accepted, wording) in types.items():
        if key not in data:
            if key in optional:
                continue
            raise field_error(path, key, "is missing", fix)
        value = data[key]
        if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
            shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
            raise field_error(path, key, f"must be {wording}, got {shown}", fix)
        values[key] = value
    return values
