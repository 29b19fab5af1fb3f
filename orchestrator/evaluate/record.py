"""evaluation.json, what `medsynth evaluate` records: what it holds (evaluation_record), its one writer and its
one reader. A file without `schema_version` was written before it had one and is read as version 1; a file of
another version is refused with a message saying to evaluate again (orchestrator.common.jsonrecord). The
memorization screen came later as an optional key: a file without it still reads (memorization = None), as does one
without the Inception-space screen (memorization_inception)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import FieldTypes, Wording, load_versioned, typed_fields, write_versioned
from orchestrator.evaluate.features import Evaluation, epoch_trend, set_summary

SCHEMA_VERSION = 1
RECORD_NAME = "evaluation.json"
NOTE = ("Features are automated image measurements; the TDS is an estimate with a diameter proxy for D (see "
        "orchestrator/vision/lesion.py), not a diagnosis.")


@dataclass(frozen=True)
class EvaluationRecord:
    """No timestamps: the same inputs give the same file."""

    note: str
    sets: dict[str, Any]                # "real", "synthetic": set_summary of each
    features: list[dict[str, Any]]      # one row per feature (features.compare), with its histogram's "figure"
    run: dict[str, Any] | None          # with a run: its path and the per-epoch trend of its samples
    fid_kid: dict[str, Any] | None      # with Inception weights only
    images: dict[str, Any]              # every image's measurements: real, synthetic, run_samples per column
    memorization: dict[str, Any] | None = None  # memorization.Screen.as_dict(); None in files from before it
    # the same screen in Inception feature space: with Inception weights only (absent from earlier files)
    memorization_inception: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION


_FIX = "evaluate again"
_WORDING = Wording("evaluation record", _FIX)
_TYPES: FieldTypes = {
    "note": ((str,), "a string"), "sets": ((dict,), "an object"), "features": ((list,), "a list"),
    "run": ((dict, type(None)), "an object or null"), "fid_kid": ((dict, type(None)), "an object or null"),
    "images": ((dict,), "an object"), "memorization": ((dict, type(None)), "an object or null"),
    "memorization_inception": ((dict, type(None)), "an object or null"),
}


def evaluation_record(evaluation: Evaluation) -> EvaluationRecord:
    """The record of an evaluation; its features' "figure" is added by the report that draws them."""
    return EvaluationRecord(
        note=NOTE,
        sets={"real": set_summary(evaluation.real, evaluation.real_records),
              "synthetic": set_summary(evaluation.synth, evaluation.synth_records)},
        features=evaluation.comparison(),
        run=None if evaluation.run_dir is None else {
            "path": str(evaluation.run_dir), "trend": epoch_trend(evaluation.real_records, evaluation.points)},
        fid_kid=evaluation.fid,
        images={"real": [r.as_dict() for r in evaluation.real_records],
                "synthetic": [r.as_dict() for r in evaluation.synth_records],
                "run_samples": {c.label: [r.as_dict() for r in recs] for c, recs in evaluation.points}},
        memorization=evaluation.memorization.as_dict(),
        memorization_inception=None if evaluation.memorization_inception is None
        else evaluation.memorization_inception.as_dict())


def write_evaluation_record(out: Path, record: EvaluationRecord) -> Path:
    path = out / RECORD_NAME
    write_versioned(path, dataclasses.asdict(record), version=record.schema_version, sort_keys=True)
    return path


def read_evaluation_record(out: Path) -> EvaluationRecord:
    """The record in the folder `out`; a MedsynthError naming the file (and key) when it is missing, not JSON,
    hand-edited wrongly or of another schema version."""
    path = out / RECORD_NAME
    if not path.is_file():
        raise MedsynthError(f"{out}: no {RECORD_NAME}: run 'medsynth evaluate' first")
    data = load_versioned(path, version=SCHEMA_VERSION, wording=_WORDING)
    return EvaluationRecord(**typed_fields(path, data, _TYPES, fix=_FIX, optional=("memorization", "memorization_inception")))
