"""run.json's owner: the one reader (`read_record`, typed accessors that name the key at fault), the one writer
(`write_record`) and updater (`update_record`) of runs/<name>/run.json, and the schema version and wording that
sweep.json's owner (orchestrator.runs.sweep_record) shares. The file is read and written as every medsynth record
is (orchestrator.common.jsonrecord).

Every problem is a one-line MedsynthError naming the file: no file, not JSON, a field the caller needs missing or
of the wrong type (named by its dotted key), or a file of another schema_version. A file without
schema_version was written by a medsynth from before the field and is read as version 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import Wording, load_versioned, of_types, write_versioned

RUN_JSON = "run.json"
SCHEMA_VERSION = 1
_REQUIRED = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
               dict: "a table"}


def is_run_dir(path: Path) -> bool:
    return (path / RUN_JSON).is_file()


def run_dirs_in(folder: Path) -> list[Path]:
    """The run folders directly inside `folder` (runs/, or a sweep's folder), sorted by name."""
    return sorted(p.parent for p in folder.glob(f"*/{RUN_JSON}") if p.is_file())


# a run.json or sweep.json that medsynth cannot read was not written by it (or was edited): nothing to rebuild from
RUN_WORDING = Wording("run record", "restore it, or train the run again into a new folder")


class RunRecord(Mapping[str, Any]):
    """run.json as read: a read-only mapping, plus `field` for a value the caller needs, checked and named."""

    def __init__(self, path: Path, data: Mapping[str, Any]):
        self.path, self._data = path, dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def field(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        """The value at a dotted key ("launch.machine_rank"); `default` when absent (absent without a default, or
        present with another type: an error naming the key)."""
        value: Any = self._data
        parts = key.split(".")
        for i, part in enumerate(parts):
            if i:
                self._check(".".join(parts[:i]), value, (dict,))
            if value.get(part) is None:
                if default is _REQUIRED:
                    raise MedsynthError(f"{self.path}: no '{key}': not a run medsynth wrote")
                return default
            value = value[part]
        return self._check(key, value, kind if isinstance(kind, tuple) else (kind,))

    def _check(self, key: str, value: Any, kinds: tuple[type, ...]) -> Any:
        if not of_types(value, kinds):
            expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise MedsynthError(f"{self.path}: '{key}' is {value!r}, expected {expected}: not a run medsynth wrote")
        return value

    def table(self, key: str) -> Mapping[str, Any]:
        """A table of the record ({} when absent)."""
        return self.field(key, dict, {})

    @property
    def status(self) -> str | None:
        return self.field("status", str, None)

    @property
    def output_name(self) -> str:
        return self.field("output_name", str)

    @property
    def command(self) -> list[str]:
        command = self.field("command", list)
        if not command or not all(isinstance(a, str) for a in command):
            raise MedsynthError(f"{self.path}: 'command' is {command!r}, expected a list of strings: not a run "
                                f"medsynth wrote")
        return list(command)

    @property
    def machine_rank(self) -> int:
        return self.field("launch.machine_rank", int, 0)

    @property
    def cpu(self) -> bool:
        return self.field("gpu.cpu", bool, False)


def read_record(run_dir: Path, *, hint: str = "") -> RunRecord:
    """runs/<name>/run.json; `hint` is added to the message for a folder without one (what to give instead)."""
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run folder (no {RUN_JSON}){': ' + hint if hint else ''}")
    return RunRecord(path, load_versioned(path, version=SCHEMA_VERSION, wording=RUN_WORDING))


def record_mtime_ns(run_dir: Path) -> int:
    """When the run's record last changed (every status change rewrites it)."""
    return (run_dir / RUN_JSON).stat().st_mtime_ns


def write_record(run_dir: Path, data: Mapping[str, Any]) -> None:
    write_versioned(run_dir / RUN_JSON, data, version=SCHEMA_VERSION)


def update_record(run_dir: Path, **changes: Any) -> RunRecord:
    """Set top-level fields of the run's record (rewritten atomically: a reader never sees half of it)."""
    record = read_record(run_dir)
    data = {**record, **changes}
    write_record(run_dir, data)
    return RunRecord(record.path, data)
