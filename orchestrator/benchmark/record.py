"""The benchmark's files, and their one owner: <out>/results/<arm>-seed<n>.json, one per finished arm and seed (the
test images' scores: what a killed benchmark or a Slurm task leaves for the gathering run), and <out>/benchmark.json,
the summary (docs/benchmark.md has its fields).

A result file carries a key: the SHA-256 of everything its scores depend on (the arm's images and labels, the seed,
the test images, the model and training settings). A re-run uses a result only when its key matches, so changing
a setting, the split or the synthetic folder retrains exactly the arms it affects."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import __version__
from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import FieldTypes, Wording, load_versioned, of_types, typed_fields, write_versioned

RESULT_VERSION = 1
BENCHMARK_VERSION = 1
BENCHMARK_NAME = "benchmark.json"
RESULTS_DIR = "results"
_RESULT_WORDING = Wording("benchmark result", "delete it to train that arm and seed again")
_RESULT_TYPES: FieldTypes = {
    "arm": ((str,), "a string"), "seed": ((int,), "an integer"), "device": ((str,), "a string"),
    "seconds": ((int, float), "a number"), "losses": ((list,), "a list"), "scores": ((list,), "a list"),
}


@dataclass(frozen=True)
class TaskResult:
    arm: str
    seed: int
    key: str
    scores: np.ndarray
    losses: list[float]
    seconds: float
    device: str


def task_key(*, arm_kind: str, keys: Sequence[str], labels: Sequence[int], seed: int, test_keys: Sequence[str],
             training: Mapping[str, Any]) -> str:
    payload = json.dumps({"kind": arm_kind, "keys": list(keys), "labels": list(labels), "seed": seed,
                          "test": list(test_keys), "training": dict(training)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def result_path(out: Path, slug: str, seed: int) -> Path:
    return out / RESULTS_DIR / f"{slug}-seed{seed}.json"


def write_result(path: Path, result: TaskResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_versioned(path, {"medsynth_version": __version__, "arm": result.arm, "seed": result.seed,
                           "key": result.key, "device": result.device, "seconds": round(result.seconds, 3), "losses": result.losses,
                           "scores": [float(s) for s in result.scores]}, version=RESULT_VERSION)


def read_result(path: Path, *, key: str, test_images: int) -> TaskResult | None:
    """The result in `path` when it is of this key (None when absent or of other settings); a MedsynthError
    naming the file when it is damaged."""
    if not path.is_file():
        return None
    data = load_versioned(path, version=RESULT_VERSION, wording=_RESULT_WORDING)
    if data.get("key") != key:
        return None
    values = typed_fields(path, data, _RESULT_TYPES, fix=_RESULT_WORDING.fix)
    scores, losses = values["scores"], values["losses"]
    if len(scores) != test_images or not all(of_types(v, (int, float)) for v in (*scores, *losses)):
        raise MedsynthError(f"{path}: 'scores' or 'losses' is not a list of numbers ({test_images} scores) "
                            f"(hand-edited wrongly?): {_RESULT_WORDING.fix}")
    return TaskResult(values["arm"], values["seed"], key, np.asarray(scores, dtype=np.float64),
                      [float(v) for v in losses], float(values["seconds"]), values["device"])


def write_benchmark(out: Path, summary: Mapping[str, Any]) -> Path:
    path = out / BENCHMARK_NAME
    write_versioned(path, {"medsynth_version": __version__, **summary}, version=BENCHMARK_VERSION)
    return path


def read_benchmark(path: Path) -> dict[str, Any]:
    return load_versioned(path, version=BENCHMARK_VERSION,
                          wording=Wording("benchmark record", "run 'medsynth benchmark' again to rewrite it"))
