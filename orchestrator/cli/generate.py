"""`medsynth generate` and `medsynth reader-study`: options -> orchestrator.generate.plan / orchestrator.evaluate.reader_study."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator.common.errors import MedsynthError
from orchestrator.generate.fields import BALANCE_FIELDS
from orchestrator.common.paths import default_sd_scripts


def _gpus(num_processes: int, cpu: bool) -> list[str | None]:
    """What CUDA_VISIBLE_DEVICES each process gets: one visible GPU each (None: leave it as it is). Entries of
    CUDA_VISIBLE_DEVICES are passed on as written: indices, or GPU-/MIG- UUIDs as some schedulers set them."""
    if num_processes == 1 or cpu:
        return [None] * num_processes
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else \
        [str(i) for i in range(num_processes)]
    if len(ids) < num_processes:
        raise MedsynthError(f"--num-processes {num_processes} but CUDA_VISIBLE_DEVICES={visible} lists {len(ids)}")
    return list(ids[:num_processes])


@click.command("generate")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--count", type=click.IntRange(min=1), required=True, help="Number of synthetic images.")
@click.option("--epoch", type=click.IntRange(min=1),
              help="Use the LoRA of this epoch (default: the final one, <output_name>.safetensors).")
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
@click.option("--sd-scripts", "sd_scripts", type=click.Path(path_type=Path, file_okay=False),
              help="The sd-scripts checkout to run (default: vendor/sd-scripts in the project folder when it "
                   "has one, else the medsynth checkout's).")
def generate(run_dir, count, epoch, match, balance, keep_hair, seed, out, caption_template, batch_size, num_processes,
             dry_run, offline, cpu, sd_scripts) -> None:
    """Generate COUNT synthetic images with RUN_DIR's LoRA into <out>/synthetic/ (images/SYN_*.png and an
    ISIC 2020-style metadata.csv). Prompts are drawn from the run's training manifest; a re-run keeps the
    images already made and generates the rest."""
    sd_scripts = sd_scripts if sd_scripts is not None else default_sd_scripts()
    try:
        if match and balance:
            raise MedsynthError("--match-distribution and --balance exclude each other")
        code = _generate(run_dir, count, epoch, balance, keep_hair, seed, out,
                         caption_template, batch_size, num_processes, dry_run, offline, cpu, sd_scripts)
    except MedsynthError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if code != 0:
        click.echo(f"error: sdxl_gen_img.py exited with code {code}; see synthetic/generate.log", err=True)
        sys.exit(code)


def _generate(run_dir, count, epoch, balance, keep_hair, seed, out, caption_template, batch_size, num_processes,
              dry_run, offline, cpu, sd_scripts) -> int:
    from orchestrator.generate import plan as gen
    from orchestrator.generate import command as gen_cmd
    from orchestrator.generate import run as gen_run
    from orchestrator.train.command import child_env, python_executable

    plan = gen.plan_generation(run_dir, count=count, epoch=epoch, seed=seed, balance=balance, keep_hair=keep_hair,
                               cpu=cpu, out=out, caption_template=caption_template, hash_lora=not dry_run)
    gpus = _gpus(num_processes, cpu)
    python = python_executable()
    env, _ = child_env(sd_scripts, offline=offline, cpu=cpu)
    work = plan.synthetic / ".work-XXXX" / "shard0"
    argv = gen_cmd.gen_command(python, sd_scripts, plan.settings, lora=plan.lora, prompts=work / "prompts.txt",
                           outdir=work, batch_size=batch_size, cpu=cpu)
    if dry_run:
        click.echo(gen.describe(plan, argv), nl=False)
        click.echo("drawn vs training:\n" + gen.summary(plan), nl=False)
        for warning in gen.dry_run_warnings(plan, sd_scripts=sd_scripts, offline=offline):
            click.echo(warning)
        click.echo("dry run: nothing written")
        return 0
    gen.preflight(plan, sd_scripts=sd_scripts, python=python, env=env, offline=offline, cpu=cpu,
                  num_processes=num_processes)
    for note in plan.notes:
        click.echo(f"medsynth: {note}")
    click.echo(f"medsynth: {len(plan.items)} images with {plan.lora.name} into {plan.synthetic}")
    outcome = gen_run.generate(plan.items, plan.settings, synthetic=plan.synthetic, lora=plan.lora,
                           sd_scripts=sd_scripts, python=python, env=env, gpu_ids=gpus, batch_size=batch_size,
                           cpu=cpu, extra_fields=plan.extra_fields)
    click.echo(f"medsynth: {outcome.made} generated, {outcome.kept} kept from before, {len(outcome.missing)} missing, "
               f"in {outcome.seconds:.1f} s"
               + (f" ({outcome.seconds / outcome.made:.1f} s per image)" if outcome.made else ""))
    click.echo("drawn vs training:\n" + gen.summary(plan), nl=False)
    click.echo(f"medsynth: metadata: {plan.synthetic / 'metadata.csv'}")
    if outcome.unlisted:
        click.echo(f"medsynth: warning: {len(outcome.unlisted)} images in {plan.synthetic / 'images'} are beyond "
                   f"--count {count} (from an earlier, larger run; first: {outcome.unlisted[0]}) and not in "
                   f"metadata.csv: move them away, or re-run with the larger --count to list them", err=True)
    if outcome.exit_code == 0 and outcome.missing:
        raise MedsynthError(f"sdxl_gen_img.py exited 0 but {len(outcome.missing)} images are missing (first: "
                            f"SYN_{outcome.missing[0]:07d}): see {plan.synthetic / 'generate.log'}")
    return outcome.exit_code


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
def reader_study(real, synth, n, seed, out, size, quality) -> None:
    """Write one self-contained HTML page in which a reader marks a shuffled mix of REAL and SYNTH images as
    real or synthetic, then sees accuracy, sensitivity, specificity and a binomial test against guessing.

    REAL and SYNTH: a dataset folder (its training images), a synthetic/ folder (its images/), a folder
    holding synthetic/ (e.g. RUN_DIR after 'medsynth generate') or any folder of .jpg/.png files.
    Answers stay in the reader's browser (localStorage) and download as CSV."""
    from orchestrator.evaluate.reader_study import REAL, build_study, write_study

    try:
        study = build_study(real, synth, n=n, seed=seed, size=size, quality=quality)
        write_study(study, out)
    except MedsynthError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    reals = sum(item.truth == REAL for item in study.items)
    click.echo(f"wrote {out} ({len(study.html.encode()) / 1e6:.1f} MB): study {study.id}, {len(study.items)} images "
               f"({reals} real, {len(study.items) - reals} synthetic), seed {seed}; open it in a browser")
