"""One `medsynth generate`: from a run folder and the options to sdxl_gen_img.py's exit code (or, dry, to the
plan's description), saying what happens through the caller's `say` and `warn`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from orchestrator.common.errors import MedsynthError


def gpu_ids_per_process(num_processes: int, cpu: bool) -> list[str | None]:
    """What CUDA_VISIBLE_DEVICES each process gets: one visible GPU each (None: leave it as it is). Entries of
    CUDA_VISIBLE_DEVICES are passed on as written: indices, or GPU-/MIG- UUIDs as some schedulers set them."""
    if num_processes == 1 or cpu:
        return [None] * num_processes
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else \
        [str(i) for i in range(num_processes)]
    if len(ids) < num_processes:
        raise MedsynthError(f"{num_processes} processes but CUDA_VISIBLE_DEVICES={visible} lists {len(ids)}")
    return list(ids[:num_processes])


def generate_synthetic(run_dir: Path, *, count: int, epoch: int | str | None, balance: str | None, keep_hair: bool,
                       seed: int, out: Path | None, caption_template: Path | None, batch_size: int,
                       num_processes: int, dry_run: bool, offline: bool, cpu: bool, sd_scripts: Path,
                       say: Callable[[str], None], warn: Callable[[str], None], drop_memorized: bool = False) -> int:
    """Plan, check and run the generation (or only describe it, with dry_run); return sdxl_gen_img.py's exit code.
    `say` gets the progress and summary lines, `warn` the warnings. With drop_memorized, the images are then
    screened against the run's training images and the near-copies set aside (generate/memorized.py)."""
    from orchestrator.generate import plan as gen
    from orchestrator.generate import command as gen_cmd
    from orchestrator.generate import memorized
    from orchestrator.generate import run as gen_run
    from orchestrator.generate.outputs import image_name
    from orchestrator.train.command import child_env, python_executable

    plan = gen.plan_generation(run_dir, count=count, epoch=epoch, seed=seed, balance=balance, keep_hair=keep_hair,
                               cpu=cpu, out=out, caption_template=caption_template, hash_lora=not dry_run)
    gpus = gpu_ids_per_process(num_processes, cpu)
    python = python_executable()
    env, _ = child_env(sd_scripts, offline=offline, cpu=cpu)
    work = plan.synthetic / ".work-XXXX" / "shard0"
    argv = gen_cmd.gen_command(python, sd_scripts, plan.settings, lora=plan.lora, prompts=work / "prompts.txt",
                           outdir=work, batch_size=batch_size, cpu=cpu)
    # a dataset without training images fails before the generation, not after it
    train = memorized.training_folder(plan.manifest.parent) if drop_memorized else None
    if dry_run:
        say(gen.describe(plan, argv).rstrip("\n"))
        say("drawn vs training:\n" + gen.summary(plan).rstrip("\n"))
        for warning in gen.dry_run_warnings(plan, sd_scripts=sd_scripts, offline=offline):
            say(warning)
        if train is not None:
            say(f"memorization screen: after the generation, every image is screened against the training images "
                f"in {train}; near-copies move to {plan.synthetic / memorized.MEMORIZED_DIR}")
        say("dry run: nothing written")
        return 0
    gen.preflight(plan, sd_scripts=sd_scripts, python=python, env=env, offline=offline, cpu=cpu,
                  num_processes=num_processes)
    for note in plan.notes:
        say(f"medsynth: {note}")
    say(f"medsynth: {len(plan.items)} images with {plan.lora.name} into {plan.synthetic}")
    outcome = gen_run.generate(plan.items, plan.settings, synthetic=plan.synthetic, lora=plan.lora,
                           run_name=plan.run.name, run_dir=plan.run.run_dir, sd_scripts=sd_scripts, python=python,
                           env=env, gpu_ids=gpus, batch_size=batch_size, cpu=cpu, extra_fields=plan.extra_fields)
    say(f"medsynth: {outcome.made} generated, {outcome.kept} kept from before, {len(outcome.missing)} missing, "
               f"in {outcome.seconds:.1f} s"
               + (f" ({outcome.seconds / outcome.made:.1f} s per image)" if outcome.made else ""))
    say("drawn vs training:\n" + gen.summary(plan).rstrip("\n"))
    held = outcome.set_aside
    if train is not None:
        dropped = memorized.drop_memorized(plan.synthetic, train)
        say(memorized.screen_line(dropped))
        held += len(set(dropped.moved) & {f"{image_name(i)}.png" for i in plan.items})
    if held:
        say(memorized.held_line(held, count))
    say(f"medsynth: metadata: {plan.synthetic / 'metadata.csv'}")
    if outcome.unlisted:
        warn(f"medsynth: warning: {len(outcome.unlisted)} images in {plan.synthetic / 'images'} are beyond "
             f"the count {count} (from an earlier, larger run; first: {outcome.unlisted[0]}) and not in "
             f"metadata.csv: move them away, or re-run with the larger count to list them")
    if outcome.exit_code == 0 and outcome.missing:
        raise MedsynthError(f"sdxl_gen_img.py exited 0 but {len(outcome.missing)} images are missing (first: "
                            f"SYN_{outcome.missing[0]:07d}): see {plan.synthetic / 'generate.log'}")
    return outcome.exit_code
