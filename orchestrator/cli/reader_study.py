"""`medsynth reader-study`: options -> orchestrator.evaluate.reader_study; prints where the page is."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags


@click.command("reader-study")
@click.argument("real", type=click.Path(path_type=Path, file_okay=False))
@click.argument("synth", type=click.Path(path_type=Path, file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=2), default=40, show_default=True,
              help="Images in the study: n // 2 real, the rest synthetic.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the image draw and the order.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=Path("reader_study.html"),
              show_default=True, help="The HTML page to write.")
@click.option("--size", type=click.IntRange(min=64, max=2048), default=512, show_default=True,
              help="Every image is centre-cropped to a square and shown at SIZE x SIZE px.")
@click.option("--quality", type=click.IntRange(min=30, max=100), default=85, show_default=True,
              help="JPEG quality of the embedded images (the same for real and synthetic).")
@settings_as_flags(n="--n")
def reader_study(real, synth, n, seed, out, size, quality) -> None:
    """Write one self-contained HTML page in which a reader marks a shuffled mix of REAL and SYNTH images as
    real or synthetic, then sees accuracy, sensitivity, specificity and a binomial test against guessing.

    REAL and SYNTH: a dataset folder (its training images), a synthetic/ folder (its images/), a folder
    holding synthetic/ (e.g. RUN_DIR after 'medsynth generate') or any folder of .jpg/.png files.
    Answers stay in the reader's browser (localStorage) and download as CSV."""
    from orchestrator.evaluate.reader_study import REAL, build_study, write_study

    study = build_study(real, synth, n=n, seed=seed, size=size, quality=quality)
    write_study(study, out)
    reals = sum(item.truth == REAL for item in study.items)
    click.echo(f"wrote {out} ({len(study.html.encode()) / 1e6:.1f} MB): study {study.id}, {len(study.items)} images "
               f"({reals} real, {len(study.items) - reals} synthetic), seed {seed}; open it in a browser")
