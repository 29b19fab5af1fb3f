"""`medsynth review`: a run or sweep folder -> review.html + contact_sheet.png (orchestrator/review*.py)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.common.errors import MedsynthError


@click.command("review")
@click.argument("path", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for review.html, contact_sheet.png and review_files/ (default: PATH itself).")
@click.option("--epoch", "epochs", type=click.IntRange(min=0), multiple=True,
              help="Show only this epoch's samples (repeatable). For a sweep: the epoch the runs are compared "
                   "at (default: the latest epoch every run has sampled).")
@click.option("--step", "steps", type=click.IntRange(min=1), multiple=True,
              help="Like --epoch, for runs that sample every N steps (sample_every_n_steps).")
@click.option("--references", type=click.IntRange(min=0), default=4, show_default=True,
              help="Training images of the same sex, site and age band shown beside each prompt.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def review(path: Path, out: Path | None, epochs: tuple[int, ...], steps: tuple[int, ...], references: int,
           quiet: bool) -> None:
    """Gallery of a training run's samples (rows = prompts, columns = epochs), or of a sweep's runs side by
    side (one column per run at one epoch), with training images, loss and learning-rate curves and the key
    settings. PATH is runs/<name>/ or a sweep folder (sweep.json, or run folders inside). Safe to re-run while
    training: samples not written yet show as pending."""
    from orchestrator.review.grid import review_run, review_sweep, select_columns
    from orchestrator.review.read import is_sweep_dir
    from orchestrator.review.write import write_run_review, write_sweep_review

    started = time.perf_counter()
    if not path.is_dir():
        raise MedsynthError(f"{path}: no such folder: give runs/<name>/ or a sweep folder")
    target = out or path
    if is_sweep_dir(path):
        sweep = review_sweep(path, epochs=epochs, steps=steps, references=references)
        written = write_sweep_review(sweep, target, progress=not quiet)
        what = f"sweep {sweep.name}: {len(sweep.entries)} runs x {len(sweep.grid.rows)} prompts at " \
               f"{', '.join(c.label for c in sweep.compared) or 'no sampled epoch yet'}"
    else:
        run = review_run(path, references=references)
        columns = select_columns(run.columns, epochs, steps, where=str(path))
        written = write_run_review(run, target, columns=columns, progress=not quiet)
        what = f"run {run.facts.name} ({run.facts.status}): {len(written.grid.rows)} prompts x {len(columns)} " \
               f"sampling points"
    grid = written.grid
    click.echo(f"{what}; {grid.count('ok')} samples, {grid.count('pending')} pending, "
               f"{grid.count('missing')} not sampled; {written.thumbnails_made} new thumbnails, "
               f"{len(written.curves)} curve plots")
    click.echo(f"wrote {written.html} and {written.contact_sheet} in {time.perf_counter() - started:.1f} s")
