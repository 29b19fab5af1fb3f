"""`medsynth dataset build`: options -> orchestrator.dataset.build.build_from_options; prints what was built.
`medsynth dataset split`: options -> orchestrator.dataset.split.split_from_options; prints the folds."""

from __future__ import annotations

import time
from pathlib import Path

import click

from orchestrator.common.errors import MedsynthError

from orchestrator.cli.flags import settings_as_flags


@click.group()
def dataset() -> None:
    """Build kohya training folders from ISIC metadata and images."""


@dataset.command("build")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Project file to read the [dataset] table from (default: ./medsynth.toml if present).")
@click.option("--csv", "csv", multiple=True, type=click.Path(path_type=Path),
              help="Metadata CSV (ISIC 2020, ISIC 2019 metadata or ground truth, HAM10000, ISIC Archive export). "
                   "Repeat for several; the same image id from two sources is kept once.")
@click.option("--images", multiple=True, type=click.Path(path_type=Path),
              help="Folder holding the <image>.jpg (.jpeg, .png) files, named as in the CSV. Repeat for several; "
                   "searched in order.")
@click.option("--duplicates", type=click.Path(path_type=Path),
              help="ISIC 2020 duplicates CSV (image_name_1,image_name_2): image_name_2 of each pair is dropped.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Dataset folder to (re)build. It is replaced whole, so it must be new, empty or an earlier "
                   "build, and must not hold the CSVs or images.")
@click.option("--format", "fmt", type=click.Choice(["isic2020", "isic2019", "ham10000", "isic_archive"]),
              help="Force the metadata format instead of detecting it from each CSV's header.")
@click.option("--class", "class_name",
              help="Class name of the kohya folder <repeats>_<class> (default melanoma, also with --diagnosis "
                   "or --benign: name the class you select).")
@click.option("--diagnosis", "diagnoses", multiple=True,
              help="Diagnosis to select, as the readers name it, e.g. nevus, 'basal cell carcinoma' (repeatable; "
                   "case-insensitive; default melanoma).")
@click.option("--benign/--no-benign", default=None,
              help="Select benign lesions instead of diagnoses (--no-benign undoes a project-file true).")
@click.option("--repeats", type=int, help="kohya num_repeats for the class folder (default 1).")
@click.option("--resolution", type=int, help="Long side of the training images in pixels (default 1024; never upscaled).")
@click.option("--resize/--no-resize", "resize", default=None,
              help="--no-resize copies the original images (a reflink where the file system has them) instead of resizing them.")
@click.option("--trigger", "triggers", multiple=True,
              help="Trigger token used in captions (default me1anoma). With --balance-classes: CLASS=TOKEN, "
                   "repeatable (e.g. 'basal cell carcinoma=bcc1'); a class without one gets a derived token "
                   "(nevus -> n3vus).")
@click.option("--balance-classes/--no-balance-classes", "balance_classes", default=None,
              help="With two or more --diagnosis: one <repeats>_<class>/ folder and trigger per diagnosis, repeats "
                   "chosen so that images x repeats are balanced (the largest class keeps --repeats).")
@click.option("--reg-diagnosis",
              help="Regularization images: rows of this diagnosis from the same CSVs (never a training or test-fold "
                   "image) into reg/, captioned with the diagnosis where the trigger would be; an is_reg subset.")
@click.option("--reg-images", type=click.Path(path_type=Path, file_okay=False),
              help="Regularization images from this folder (.jpg, .jpeg, .png) into reg/, captioned "
                   "'photo of skin, skin lesion'.")
@click.option("--caption-template", type=click.Path(path_type=Path, dir_okay=False),
              help="Jinja template for captions (default templates/caption.j2).")
@click.option("--workers", type=int, help="Threads for the image stage (default: all cores).")
@click.option("--strict/--no-strict", default=None,
              help="Fail on the first missing or unusable image instead of recording a skip.")
@click.option("--skin-tone/--no-skin-tone", "skin_tone", default=None,
              help="Measure each image's skin tone (ITA of the skin around the lesion, Chardon band): stored in "
                   "the manifest (ita, skin_tone), given to the caption template as skin_tone, counted in the report.")
@click.option("--split", "split_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Split file from 'medsynth dataset split': build from the images outside --test-fold only, and "
                   "record each image's fold in the manifest.")
@click.option("--test-fold", type=click.IntRange(min=0),
              help="The fold of --split held out for testing (numbered from 0): none of its patients' images "
                   "are built.")
@click.option("--masks", metavar="auto|DIR",
              help="Loss masks as each training image's alpha channel (the images become RGBA .png) for "
                   "'medsynth train --set masked_loss=true': 'auto' = the lesion segmentation medsynth computes, "
                   "or a folder of masks named <image_id>_segmentation.png (ISIC 2018 Task 1) or <image_id>.png; "
                   "an image without a usable mask is skipped with the reason (--strict: an error).")
@click.option("--mask-margin", type=float,
              help="Widen each mask by this share of the image's long side (default 0.05).")
@click.option("--dry-run", is_flag=True, help="Read and select only: print what would be built; write nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@settings_as_flags(strict="--strict", split_file="--split", test_fold="--test-fold", reg_images="--reg-images",
                   reg_diagnosis="--reg-diagnosis", balance_classes="--balance-classes",
                   class_triggers="--trigger CLASS=TOKEN", masks="--masks", mask_margin="--mask-margin")
def dataset_build(config_path, csv, images, duplicates, out, fmt, class_name, diagnoses, benign, repeats,
                  resolution, resize, triggers, balance_classes, reg_diagnosis, reg_images, caption_template,
                  workers, strict, skin_tone, split_file, test_fold, masks, mask_margin, dry_run, quiet) -> None:
    """Read metadata, select lesions, caption and analyse images, write <out>/train/<repeats>_<class>/."""
    from orchestrator.dataset.build import build_from_options
    from orchestrator.dataset.report import format_report

    started = time.perf_counter()
    plain = [t for t in triggers if "=" not in t]
    if len(plain) > 1 or (plain and balance_classes):
        raise MedsynthError(f"--trigger {plain[-1]}: give one trigger, or with --balance-classes CLASS=TOKEN per "
                            f"class")
    if balance_classes and class_name:
        raise MedsynthError("--class names one class: with --balance-classes each diagnosis names its own folder")
    per_class = dict(t.rsplit("=", 1) for t in triggers if "=" in t)
    options = {
        "csv": list(map(str, csv)) or None, "images": list(map(str, images)) or None,
        "duplicates": str(duplicates) if duplicates else None, "out": str(out) if out else None,
        "format": fmt, "class_name": class_name, "diagnoses": list(diagnoses) or None, "benign": benign,
        "repeats": repeats, "resolution": resolution, "resize": resize,
        "trigger": plain[0] if plain else None, "class_triggers": per_class or None,
        "balance_classes": balance_classes, "reg_diagnosis": reg_diagnosis,
        "reg_images": str(reg_images) if reg_images else None, "caption_template": str(caption_template) if caption_template else None,
        "workers": workers, "strict": strict, "skin_tone": skin_tone,
        "split_file": str(split_file) if split_file else None, "test_fold": test_fold,
        "masks": masks, "mask_margin": mask_margin,
    }
    result = build_from_options(config=config_path, options=options, cwd=Path.cwd(), dry_run=dry_run,
                                progress=not quiet, warn=lambda line: click.echo(line, err=True))
    settings = result.settings
    click.echo(format_report(result.report), nl=False)
    elapsed = time.perf_counter() - started
    if result.dry_run:
        to_build = result.selected - result.missing
        click.echo(f"dry run: {result.selected} rows selected, {result.missing} missing images, "
                   f"{result.duplicates} duplicates dropped; would write {to_build} images + captions to "
                   f"{', '.join(f'{result.out}/{f.folder}/' for f in result.report.folders)} (nothing written)")
        if to_build == 0:
            click.echo(f"warning: none of the {result.selected} selected images is in "
                       f"{', '.join(map(str, settings.images))}: a build would fail (no usable images)", err=True)
    else:
        click.echo(f"wrote {result.written} images + captions to {result.out} "
                   f"({result.skipped} skipped, {result.duplicates} duplicates dropped, "
                   f"{result.reused} reused from the previous build) in {elapsed:.1f} s; "
                   f"manifest: {result.out / 'manifest.csv'}")


@dataset.command("split")
@click.option("--csv", "csv", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Metadata CSV, as for 'dataset build' (repeat for several): the table whose images are split.")
@click.option("--format", "fmt", type=click.Choice(["isic2020", "isic2019", "ham10000", "isic_archive"]),
              help="Force the metadata format instead of detecting it from each CSV's header.")
@click.option("--folds", type=int, required=True,
              help="Number of folds K (at least 2); each patient (else lesion, else image) lies in one fold.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Orders groups of equal size: the same seed and CSVs give the same split.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Split file to write (CSV: image_id, group_kind, group_id, fold).")
@settings_as_flags(folds="--folds")
def dataset_split(csv, fmt, folds, seed, out) -> None:
    """Assign every image to one of K folds by stratified group k-fold (groups: patients, else lesions, else
    images; stratified on the malignant flag) and write the split file."""
    from orchestrator.dataset.split import split_from_options

    started = time.perf_counter()
    summary = split_from_options(list(csv), fmt, folds, seed, out, warn=lambda line: click.echo(line, err=True))
    click.echo(f"{'fold':>4} {'images':>8} {'groups':>8} {'malignant':>9}")
    for fold, row in summary.iterrows():
        click.echo(f"{fold:>4} {row['images']:>8} {row['groups']:>8} {row['malignant']:>9}")
    click.echo(f"wrote {out} ({int(summary['images'].sum())} images in {len(summary)} folds) "
               f"in {time.perf_counter() - started:.1f} s")
