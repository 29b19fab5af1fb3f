"""Running sdxl_gen_img.py for `medsynth generate`: the images not yet made, split over one process per GPU,
each with its own prompt file and output folder (a temporary .work-* folder inside synthetic/); the outputs
checked against their seed and prompt and renamed into synthetic/images/; metadata.csv for every image present.

sdxl_gen_img.py with --sequential_file_name names the k-th prompt line's image im_<k:06d>.png. The processes run
through orchestrator.common.process.run_children (terminal + generate.log, Ctrl-C forwarded; with several, '[i] '
before each line)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestrator.common.errors import MedsynthError
from orchestrator.common.process import run_children
from orchestrator.generate.command import GenSettings, gen_command, prompt_line
from orchestrator.generate.memorized import MEMORIZED_DIR
from orchestrator.generate.prompts import Item
from orchestrator.generate.outputs import (check_previous, image_matches, image_name, metadata_rows, png_text,
                                           write_generation, write_metadata)


@dataclass
class Outcome:
    made: int
    kept: int
    missing: list[int]
    exit_code: int
    seconds: float
    unlisted: list[str]   # SYN_*.png in images/ outside this draw (e.g. of an earlier, larger --count)
    set_aside: int        # items whose image an earlier --drop-memorized moved to memorized/: not drawn again


def collect(shard_dir: Path, shard: Sequence[Item], images: Path) -> list[int]:
    """Move shard_dir/im_<k:06d>.png (the k-th prompt line's image) to images/SYN_<n>.png after checking its
    PNG text says that line's seed and prompt. Returns the numbers that were made."""
    made = []
    for k, item in enumerate(shard, start=1):
        png = shard_dir / f"im_{k:06d}.png"
        if not png.is_file():
            continue
        if not image_matches(png, item):
            text = png_text(png)
            raise MedsynthError(f"{png}: sd-scripts wrote seed {text.get('seed')!r} / prompt {text.get('prompt')!r}, "
                                f"expected line {k}'s seed {item.seed} and prompt {item.prompt!r}")
        os.replace(png, images / f"{image_name(item)}.png")
        made.append(item.number)
    return made


def generate(items: Sequence[Item], s: GenSettings, *, synthetic: Path, lora: Path, run_name: str,
             run_dir: Path | None, sd_scripts: Path, python: str, env: Mapping[str, str],
             gpu_ids: Sequence[str | int | None], batch_size: int = 1, cpu: bool = False,
             extra_fields: Sequence[str] = (), out: IO[bytes] | None = None) -> Outcome:
    """Generate the items not yet in synthetic/images, one process per entry of gpu_ids (None: leave
    CUDA_VISIBLE_DEVICES as it is), and write metadata.csv for every item that has its image (run_name: the
    run the LoRA came from, recorded there; run_dir: its folder, recorded in generation.json). Items whose image
    is in memorized/ are neither drawn nor listed."""
    started = time.perf_counter()
    images = synthetic / "images"
    images.mkdir(parents=True, exist_ok=True)
    check_previous(synthetic, s)
    write_generation(synthetic, s, run_dir)
    kept = {i.number for i in items if image_matches(images / f"{image_name(i)}.png", i)}
    # the same seed would draw the same near-copy again (generate/memorized.py): dropped numbers stay dropped
    aside = {i.number for i in items if i.number not in kept and
             image_matches(synthetic / MEMORIZED_DIR / f"{image_name(i)}.png", i)}
    todo = [i for i in items if i.number not in kept | aside]
    code, made = 0, []
    if todo:
        work = Path(tempfile.mkdtemp(prefix=".work-", dir=synthetic))
        try:
            shards = [todo[g::len(gpu_ids)] for g in range(len(gpu_ids))]
            commands = []
            for g, (shard, gpu) in enumerate(zip(shards, gpu_ids)):
                if not shard:
                    continue
                folder = work / f"shard{g}"
                folder.mkdir()
                (folder / "prompts.txt").write_text("".join(prompt_line(i, s) + "\n" for i in shard),
                                                    encoding="utf-8")
                child_env = dict(env)
                if gpu is not None:
                    child_env["CUDA_VISIBLE_DEVICES"] = str(gpu)
                argv = gen_command(python, sd_scripts, s, lora=lora, prompts=folder / "prompts.txt",
                                   outdir=folder, batch_size=batch_size, cpu=cpu)
                commands.append((argv, child_env, folder, shard))
            code = run_children([(a, e) for a, e, _, _ in commands], cwd=sd_scripts,
                                log_path=synthetic / "generate.log", out=out, what="the generation processes")
            for _, _, folder, shard in commands:
                made += collect(folder, shard, images)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    have = kept | set(made)
    done = [i for i in items if i.number in have]
    write_metadata(synthetic / "metadata.csv", metadata_rows(done, s, run_name, extra_fields), extra_fields)
    missing = [i.number for i in items if i.number not in have | aside]
    planned = {image_name(i) for i in items}
    unlisted = sorted(p.name for p in images.glob("SYN_*.png") if p.stem not in planned)
    return Outcome(len(made), len(kept), missing, code, time.perf_counter() - started, unlisted,
                   len(aside))
