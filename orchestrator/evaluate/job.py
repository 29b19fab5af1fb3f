"""One `medsynth evaluate`: two image folders (and a run's samples) -> evaluation.html + evaluation.json, saying
the summary through the caller's `say`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.vision.memorization import Screen


def evaluate_folders(real: Path, synth: Path, *, run_dir: Path | None, out: Path | None,
                     inception_weights: Path | None, workers: int, progress: bool,
                     say: Callable[[str], None]) -> None:
    """Measure and compare REAL and SYNTH (and `run_dir`'s samples per epoch) and write the report into `out`
    (default: <run_dir>/evaluation, else ./evaluation)."""
    from orchestrator.evaluate.features import evaluate
    from orchestrator.evaluate.report import summary_lines, write_evaluation

    started = time.perf_counter()
    out = out or (run_dir / "evaluation" if run_dir is not None else Path("evaluation"))
    result = evaluate(real, synth, run_dir=run_dir, inception_weights=inception_weights, workers=workers,
                      progress=progress)
    written = write_evaluation(result, out)
    for line in summary_lines(result):
        say(line)
    if result.fid is not None:
        say(f"FID {result.fid['fid']:.3f}   KID {result.fid['kid']:.5f} ± {result.fid['kid_std']:.5f}")
    say(memorization_line(result.memorization))
    if result.memorization_inception is not None:
        say(memorization_line(result.memorization_inception, space=" (Inception features)"))
    if result.points:
        say(f"run samples: {', '.join(f'{c.label} ({len(r)})' for c, r in result.points)}")
    records = result.real_records + result.synth_records
    unreadable = sum(r.error is not None for r in records)
    missing = sum(r.error is None and not r.lesion_found for r in records)
    say(f"measured {len(result.real_records)} real and {len(result.synth_records)} synthetic images "
        f"({missing} without a lesion found, {unreadable} unreadable: see evaluation.json) in "
        f"{time.perf_counter() - started:.1f} s; wrote {written.html} and {written.json}")


def memorization_line(found: Screen, space: str = "") -> str:
    calibration = found.calibration
    if calibration.threshold is None:
        return f"memorization screen{space}: not screened ({calibration.note})"
    return (f"memorization screen{space}: {len(found.flagged)} of {found.screened} synthetic images flagged as near-copies of "
            f"a real image (similarity >= {calibration.threshold:.4f}; see evaluation.html)")
