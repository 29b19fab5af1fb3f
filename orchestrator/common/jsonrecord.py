"""Reading and writing the versioned JSON records medsynth keeps (dataset.json, evaluation.json, generation.json,
run.json, sweep.json): one reader (`load_versioned`: a JSON object of the owner's schema_version, a file without
`schema_version` written before records had one and read as version 1), one writer (`write_versioned`, atomic,
schema_version first), and the checks of keys one by one. Every fault is a one-line MedsynthError naming the file
(and key), worded alike for every record; the owner names its file and the fix (`Wording`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.atomic import write_atomic
from orchestrator.common.errors import MedsynthError

# key -> (the JSON types it may have, how a message names them)
FieldTypes = Mapping[str, tuple[tuple[type, ...], str]]


@dataclass(frozen=True)
class Wording:
    """How an owner names its file in a message that it cannot be read, after "<file>: ": `what` names the kind
    of file, `fix` says what to do. The sentences are the same for every record."""

    what: str
    fix: str

    def error(self, path: Path, template: str, **values: Any) -> MedsynthError:
        return MedsynthError(f"{path}: " + template.format(**{"what": self.what, "fix": self.fix, **values}))


_UNREADABLE = "cannot read the {what}: {reason}"
_NOT_JSON = "not valid JSON ({error}): {fix}"
_NOT_OBJECT = "not a {what} (a JSON object): {fix}"
_OTHER_VERSION = "{what} schema version {found!r}; this medsynth reads version {version}: {fix}"
_NEWER = "written by a newer medsynth: upgrade medsynth to read it"


def load_versioned(path: Path, *, version: int, wording: Wording) -> dict[str, Any]:
    """The JSON object in `path`, refused unless of schema `version`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise wording.error(path, _UNREADABLE, reason=exc.strerror or exc) from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise wording.error(path, _NOT_JSON, error=exc) from exc
    if not isinstance(data, dict):
        raise wording.error(path, _NOT_OBJECT)
    found = data.get("schema_version", 1)
    if found != version:
        newer = of_types(found, (int,)) and found > version
        raise wording.error(path, _OTHER_VERSION, found=found, version=version, fix=_NEWER if newer else wording.fix)
    return data


def write_versioned(path: Path, data: Mapping[str, Any], *, version: int, sort_keys: bool = False) -> None:
    """`data` as the file's JSON object, schema_version first (unless sorted); a value JSON has no type for (a
    path) as its text."""
    text = json.dumps({"schema_version": version, **data}, indent=1, sort_keys=sort_keys, default=str)
    write_atomic(path, text + "\n")


def of_types(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that true and false are no integer (JSON tells them apart, Python does not)."""
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def field_error(path: Path, key: str, problem: str, fix: str) -> MedsynthError:
    return MedsynthError(f"{path}: key '{key}' {problem} (hand-edited wrongly?): {fix}")


def typed_fields(path: Path, data: Mapping[str, Any], types: FieldTypes, *, fix: str,
                 optional: Collection[str] = ()) -> dict[str, Any]:
    """The values of `types`' keys in `data`, each checked to be of its JSON types; a key in `optional` may be
    absent."""
    values: dict[str, Any] = {}
    for key, (accepted, wording) in types.items():
        if key not in data:
            if key in optional:
                continue
            raise field_error(path, key, "is missing", fix)
        value = data[key]
        if not of_types(value, accepted):
            shown = repr(value) if len(repr(value)) <= 60 else f"a {type(value).__name__}"
            raise field_error(path, key, f"must be {wording}, got {shown}", fix)
        values[key] = value
    return values
