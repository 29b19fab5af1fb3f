"""sweep.json's owner: runs/<sweep>/sweep.json, the index of a sweep's runs (name, folder, varied params, status,
outcome), written by `medsynth sweep` after every run and read by `medsynth review`. Read and written as run.json
is (orchestrator.runs.record: its schema version and wording), one-line errors naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import Wording, load_versioned, write_versioned
from orchestrator.runs.record import SCHEMA_VERSION

SWEEP_JSON = "sweep.json"
_WORDING = Wording("sweep index", "restore it, or run the sweep again")


@dataclass(frozen=True)
class SweepListing:
    """One run as sweep.json lists it."""

    name: str
    path: Path                  # the run folder
    params: Mapping[str, Any]
    status: str | None


@dataclass(frozen=True)
class SweepRecord:
    path: Path
    name: str
    runs: tuple[SweepListing, ...]


def is_sweep_record_dir(path: Path) -> bool:
    return (path / SWEEP_JSON).is_file()


def read_sweep_record(sweep_dir: Path) -> SweepRecord:
    path = sweep_dir / SWEEP_JSON
    if not path.is_file():
        raise MedsynthError(f"{sweep_dir}: not a medsynth sweep folder (no {SWEEP_JSON})")
    data = load_versioned(path, version=SCHEMA_VERSION, wording=_WORDING)
    runs = data.get("runs")
    if not isinstance(runs, list):
        raise MedsynthError(f"{path}: unreadable sweep index ('runs' is {runs!r}, expected a list)")
    listing = []
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping) or run.get("name") is None:
            raise MedsynthError(f"{path}: unreadable sweep index (runs[{i}] has no name)")
        params, status = run.get("params") or {}, run.get("status")
        if not isinstance(params, Mapping) or not isinstance(status, (str, type(None))):
            raise MedsynthError(f"{path}: unreadable sweep index ('runs[{i}].params' not a table or "
                                f"'runs[{i}].status' not a string)")
        listing.append(SweepListing(str(run["name"]), sweep_dir / str(run.get("path") or run["name"]), dict(params),
                                    status))
    if not listing:
        raise MedsynthError(f"{path}: lists no runs")
    return SweepRecord(path, str(data.get("name") or sweep_dir.name), tuple(listing))


def write_sweep_record(sweep_dir: Path, data: Mapping[str, Any]) -> None:
    """Rewritten whole and atomically after every run, so a reader sees the sweep's progress."""
    write_versioned(sweep_dir / SWEEP_JSON, data, version=SCHEMA_VERSION)
