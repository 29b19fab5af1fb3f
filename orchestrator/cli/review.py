"""`medsynth review`: options -> orchestrator.review.job.review_folder; prints what was written."""

from __future__ import annotations

from pathlib import Path

import click


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
    from orchestrator.review.job import review_folder

    review_folder(path, out=out, epochs=epochs, steps=steps, references=references, progress=not quiet,
                  say=click.echo)
