"""`medsynth evaluate`: options -> orchestrator.evaluate.job.evaluate_folders; prints a summary."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags


@click.command("evaluate")
@click.argument("real", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("synth", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A training run folder (runs/<name>/): also measure its sample images per epoch "
                   "(sample/) against REAL, to show the trend over training.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Folder for evaluation.html, evaluation.json and evaluation_files/ "
                   "(default: <RUN>/evaluation with --run, else ./evaluation).")
@click.option("--inception-weights", type=click.Path(path_type=Path, dir_okay=False),
              help="A torchvision inception_v3 state_dict file: also compute FID and KID (needs torch and "
                   "torchvision; nothing is downloaded). Without it, no FID/KID.")
@click.option("--workers", type=click.IntRange(min=1), default=lambda: os.cpu_count() or 1,
              show_default="all cores", help="Processes measuring images.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@settings_as_flags(inception_weights="--inception-weights")
def evaluate(real: Path, synth: Path, run_dir: Path | None, out: Path | None, inception_weights: Path | None,
             workers: int, quiet: bool) -> None:
    """Compare lesion features of REAL and SYNTH images: evaluation.html + evaluation.json.

    REAL and SYNTH are each a folder of images, a dataset folder (its train/ images) or a 'medsynth
    generate' output (synthetic/images). Per image: lesion mask, asymmetry, border, colours, diameter, a
    TDS-style estimate (not a diagnosis) and skin ITA; per feature: means, medians, histograms and the
    Kolmogorov-Smirnov statistic between the sets. Each SYNTH image is also screened for being a
    near-copy of a REAL image (give the training images as REAL).
    """
    from orchestrator.evaluate.job import evaluate_folders

    evaluate_folders(real, synth, run_dir=run_dir, out=out, inception_weights=inception_weights, workers=workers,
                     progress=not quiet, say=click.echo)
