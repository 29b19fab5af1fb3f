"""`medsynth benchmark`: options -> orchestrator.benchmark.job.run_benchmark."""

from __future__ import annotations

import os
from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags
from orchestrator.common.errors import MedsynthError


def _ratios(ctx, param, value: str) -> tuple[float, ...]:
    try:
        ratios = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise MedsynthError(f"--ratios {value!r}: expected numbers separated by commas, e.g. 0,0.5,1,2") from None
    if not ratios:
        raise MedsynthError("--ratios: give at least one ratio, e.g. 0")
    return ratios


_DIR = click.Path(path_type=Path, file_okay=False, exists=True)
_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


@click.command("benchmark")
@click.option("--csv", "csv_paths", multiple=True, required=True, type=_FILE,
              help="Real images' metadata CSV (ISIC 2020, ISIC 2019, HAM10000 or an ISIC Archive export). Repeatable.")
@click.option("--images", "image_dirs", multiple=True, required=True, type=_DIR,
              help="Folder of the real images (<image name>.jpg/.png). Repeatable; searched in order.")
@click.option("--synthetic", type=_DIR,
              help="A 'medsynth generate' output folder (metadata.csv + images/): its malignant images make the "
                   "synthetic arms. Without it only the real, oversample and control arms run.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for benchmark.json, benchmark.html, results/ (one file per arm and seed) and cache/.")
@click.option("--format", "fmt", help="The CSVs' format when it cannot be detected from their header.")
@click.option("--split", "split_file", type=_FILE,
              help="Split file from 'medsynth dataset split' (give the one the LoRA's dataset was built with). "
                   "Default: a patient-level split made here from --folds and --split-seed.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the split made here (without --split).")
@click.option("--test-fold", type=click.IntRange(min=0), default=0, show_default=True,
              help="The fold whose patients are the held-out real test set.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the split made here.")
@click.option("--ratios", default="0,0.5,1,2,5,10", show_default=True, callback=_ratios,
              help="Synthetic : real malignant images of the synthetic arms, comma-separated (0 is the real-only arm).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Trainings per arm, with seeds 0 to N-1: metrics are averaged over them.")
@click.option("--image-size", type=click.IntRange(min=16), default=224, show_default=True,
              help="Side of the square the classifier sees, px (64 trains quickly on a CPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Training epochs per arm.")
@click.option("--model", default="resnet18", show_default=True,
              help="A torchvision classification model (torchvision.models.list_models()), e.g. resnet50, "
                   "efficientnet_b0, mobilenet_v3_small.")
@click.option("--weights", type=_FILE,
              help="A state_dict file of --model (e.g. ImageNet weights saved from torchvision): start from it. "
                   "Default: random initialisation. Nothing is downloaded.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True, help="Images per step.")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="AdamW's learning rate.")
@click.option("--rare-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Share of the training patients' malignant images in the base training set; the rest are added "
                   "back in the control arm (1: no control arm).")
@click.option("--n-boot", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Bootstrap resamples (of test patients) for the 95%% confidence intervals and the paired tests.")
@click.option("--workers", type=click.IntRange(min=1), default=lambda: os.cpu_count() or 1,
              show_default="all cores", help="Threads decoding images.")
@click.option("--dry-run", is_flag=True, help="Print the split, the leakage check and the arms; train nothing.")
@click.option("--emit", type=click.Choice(["slurm"]),
              help="Write <out>/benchmark.slurm, an sbatch array with one task per arm and seed, instead of "
                   "training here; run the same command without --emit afterwards to gather the results.")
@click.option("--task", type=click.IntRange(min=0),
              help="Train only this arm-and-seed task (what each Slurm array task runs).")
@click.option("--gpus", type=click.IntRange(min=0), default=1, show_default=True,
              help="--emit slurm: GPUs per task (0: none requested).")
@click.option("--time", "time_limit", metavar="HH:MM:SS", help="--emit slurm: time limit per task.")
@click.option("--partition", help="--emit slurm: the Slurm partition.")
@click.option("--account", help="--emit slurm: the Slurm account.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@settings_as_flags(rare_share="--rare-share", test_fold="--test-fold", ratios="--ratios", n_boot="--n-boot",
                   image_size="--image-size", batch_size="--batch-size", time_limit="--time")
def benchmark(csv_paths, image_dirs, synthetic, out, fmt, split_file, folds, test_fold, split_seed, ratios, seeds,
              image_size, epochs, model, weights, batch_size, learning_rate, rare_share, n_boot, workers, dry_run,
              emit, task, gpus, time_limit, partition, account, quiet) -> None:
    """Does a classifier do better on held-out real patients when trained with the synthetic images?

    Trains a torchvision classifier (malignant vs benign) per arm and seed: real only; real with the rare class
    oversampled and augmented; real + synthetic at each --ratios; real + held-back real malignant images (the
    control). Evaluates on the test fold's patients: AUROC, partial AUROC (FPR <= 0.1), sensitivity at 90 and
    95 % specificity, balanced accuracy, each with a 95 % bootstrap CI over patients, a paired test against real
    only, and the same per sex, age band, site and skin tone. Refuses a synthetic set whose LoRA was trained on
    a test patient. Writes OUT/benchmark.json and OUT/benchmark.html; a killed benchmark continues where it
    stopped. Needs torch and torchvision (make setup installs them); CUDA when present, else the CPU.
    """
    from orchestrator.benchmark.job import run_benchmark
    from orchestrator.benchmark.settings import BenchSettings

    if (dry_run, emit is not None, task is not None).count(True) > 1:
        raise MedsynthError("--dry-run, --emit and --task: choose one")
    settings = BenchSettings(csv=tuple(csv_paths), images=tuple(image_dirs), out=out, synthetic=synthetic, fmt=fmt,
                             split_file=split_file, folds=folds, test_fold=test_fold, split_seed=split_seed,
                             ratios=ratios, seeds=seeds, image_size=image_size, epochs=epochs, model=model,
                             weights=weights, batch_size=batch_size, learning_rate=learning_rate,
                             rare_share=rare_share, n_boot=n_boot, workers=workers)
    slurm = dict(gpus=gpus, time=time_limit, partition=partition, account=account) if emit else None
    run_benchmark(settings, task=task, dry_run=dry_run, slurm=slurm, progress=not quiet, say=click.echo,
                  warn=lambda line: click.echo(line, err=True))
