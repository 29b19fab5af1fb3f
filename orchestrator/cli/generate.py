"""`medsynth generate`: options -> orchestrator.generate.job.generate_synthetic; exits with sdxl_gen_img.py's code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from orchestrator.cli.flags import settings_as_flags
from orchestrator.common.errors import MedsynthError
from orchestrator.generate.fields import BALANCE_FIELDS, BEST_EPOCH
from orchestrator.common.paths import default_sd_scripts


class EpochType(click.ParamType):
    """An epoch number (>= 1) or "best"."""

    name = "N|best"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201  (click's signature)
        if isinstance(value, int) or value == BEST_EPOCH:
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an epoch number nor 'best'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not an epoch (they start at 1)", param, ctx)
        return number


@click.command("generate")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--count", type=click.IntRange(min=1), required=True, help="Number of synthetic images.")
@click.option("--epoch", type=EpochType(),
              help="Use the LoRA of this epoch (default: the final one, <output_name>.safetensors); 'best': of the "
                   "epoch with the lowest validation loss (a run trained with validation_split > 0).")
@click.option("--match-distribution", "match", is_flag=True,
              help="Draw metadata (sex, site, age, ...) as often as it occurs in the training manifest (default).")
@click.option("--balance", type=click.Choice(BALANCE_FIELDS),
              help="Make this field uniform over its known values instead (skin_tone needs a manifest with it); "
                   "rows where it is missing are not drawn.")
@click.option("--keep-hair", is_flag=True, help="Keep the caption's hair phrase of hairy rows (default: left out).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the prompt draw and the per-image seeds: the same seed gives the same images.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write synthetic/ into (default: RUN_DIR).")
@click.option("--caption-template", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Caption template the dataset was built with (default templates/caption.j2); it must "
                   "reproduce the manifest's captions.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per sdxl_gen_img.py batch (each image's noise comes from its own seed at any batch size).")
@click.option("--num-processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes, one per GPU (each gets CUDA_VISIBLE_DEVICES of one GPU and a share of the images).")
@click.option("--dry-run", is_flag=True, help="Print the LoRA, settings, command and first prompts; write nothing "
                                              "(needs no GPU and no sd-scripts).")
@click.option("--offline", is_flag=True, help="No hub access: sets HF_HUB_OFFLINE=1 and checks the run's "
                                              "tokenizer_cache_dir first.")
@click.option("--cpu", is_flag=True, help="Generate on the CPU (tiny test models only; an fp16 run's model runs "
                                          "in float32 there).")
@click.option("--drop-memorized", "drop_memorized", is_flag=True,
              help="Then screen every image against the run's training images (the memorization screen of "
                   "'medsynth evaluate') and set the near-copies aside: moved to synthetic/memorized/, listed in "
                   "memorized.csv, left out of metadata.csv and not generated again.")
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path, file_okay=False),
              help="The sd-scripts checkout to run (default: vendor/sd-scripts in the project folder when it "
                   "has one, else the medsynth checkout's).")
@settings_as_flags(count="--count", balance="--balance", caption_template="--caption-template",
                   offline="--offline")
def generate(run_dir, count, epoch, match, balance, keep_hair, seed, out, caption_template, batch_size, num_processes,
             dry_run, offline, cpu, drop_memorized, sd_scripts) -> None:
    """Generate COUNT synthetic images with RUN_DIR's LoRA into <out>/synthetic/ (images/SYN_*.png and an
    ISIC 2020-style metadata.csv). Prompts are drawn from the run's training manifest; a re-run keeps the
    images already made and generates the rest."""
    from orchestrator.generate.job import generate_synthetic

    if match and balance:
        raise MedsynthError("--match-distribution and --balance exclude each other")
    code = generate_synthetic(run_dir, count=count, epoch=epoch, balance=balance, keep_hair=keep_hair, seed=seed,
                              out=out, caption_template=caption_template, batch_size=batch_size,
                              num_processes=num_processes, dry_run=dry_run, offline=offline, cpu=cpu,
                              sd_scripts=sd_scripts if sd_scripts is not None else default_sd_scripts(),
                              say=click.echo, warn=lambda line: click.echo(line, err=True),
                              drop_memorized=drop_memorized)
    if code != 0:
        click.echo(f"error: sdxl_gen_img.py exited with code {code}; see synthetic/generate.log", err=True)
        sys.exit(code)
