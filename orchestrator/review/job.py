"""One `medsynth review`: a run or sweep folder -> review.html + contact_sheet.png, saying what was written
through the caller's `say`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.common.errors import MedsynthError


def review_folder(path: Path, *, out: Path | None, epochs: Sequence[int], steps: Sequence[int], references: int,
                  progress: bool, say: Callable[[str], None]) -> None:
    """Write the review of `path` (a run folder, or a sweep folder: its runs side by side at one epoch) into
    `out` (default: `path`); `epochs`/`steps` choose the sampling points shown."""
    from orchestrator.review.grid import review_run, review_sweep, select_columns
    from orchestrator.review.read import is_sweep_dir
    from orchestrator.review.write import write_run_review, write_sweep_review

    started = time.perf_counter()
    if not path.is_dir():
        raise MedsynthError(f"{path}: no such folder: give runs/<name>/ or a sweep folder")
    target = out or path
    if is_sweep_dir(path):
        sweep = review_sweep(path, epochs=epochs, steps=steps, references=references)
        written = write_sweep_review(sweep, target, progress=progress)
        what = f"sweep {sweep.name}: {len(sweep.entries)} runs x {len(sweep.grid.rows)} prompts at " \
               f"{', '.join(c.label for c in sweep.compared) or 'no sampled epoch yet'}"
    else:
        run = review_run(path, references=references)
        columns = select_columns(run.columns, epochs, steps, where=str(path))
        written = write_run_review(run, target, columns=columns, progress=progress)
        what = f"run {run.facts.name} ({run.facts.status}): {len(written.grid.rows)} prompts x {len(columns)} " \
               f"sampling points"
    grid = written.grid
    say(f"{what}; {grid.count('ok')} samples, {grid.count('pending')} pending, "
        f"{grid.count('missing')} not sampled; {written.thumbnails_made} new thumbnails, "
        f"{len(written.curves)} curve plots")
    say(f"wrote {written.html} and {written.contact_sheet} in {time.perf_counter() - started:.1f} s")
