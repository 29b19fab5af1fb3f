"""`medsynth generate`: from a run folder to a plan (the LoRA, the settings, the items to draw), its dry-run
text and summary, and the checks before a launch. The run folder is read by orchestrator.runs.facts; the other
parts: generate/prompts.py (what to draw), generate/command.py (sdxl_gen_img.py's command and prompt lines),
generate/run.py (running it), generate/outputs.py (the synthetic/ folder):

  synthetic/images/SYN_<n:07d>.png   the images (n = the item number of orchestrator.generate.prompts)
  synthetic/metadata.csv             ISIC 2020 columns + provenance (docs/generate.md)
  synthetic/generation.json          the settings the images were made with (a re-run must match them)
  synthetic/generate.log             everything sdxl_gen_img.py printed
  synthetic/memorized/, memorized.csv  with --drop-memorized: near-copies of training images (memorized.py)

sd-scripts' `sdxl_gen_img.py` runs through `python -m accelerate.commands.launch` in the sd-scripts folder,
one process per GPU, each with its own prompt file (one line per image: `prompt --n negative --w --h --s --l
--d seed`; the sampler is an argument because that script has no per-line sampler) and its own output folder.
With --sequential_file_name it names the k-th line's image im_<k:06d>.png; each is checked against the seed and
prompt sd-scripts writes into the PNG's text chunks, then renamed into images/. A re-run keeps every image
already there whose PNG says the planned seed and prompt, and generates only the rest.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.common.hashing import sha256_of
from orchestrator.dataset.record import RECORD_NAME, has_record, read_record
from orchestrator.dataset.split import recheck_build
from orchestrator.generate.command import GEN_SCRIPT, GenSettings, prompt_line
from orchestrator.generate.fields import BEST_EPOCH
from orchestrator.generate.outputs import image_matches, image_name
from orchestrator.generate.prompts import Item
from orchestrator.runs.facts import RunFacts, read_run
from orchestrator.runs.outputs import run_scalars
from orchestrator.runs.validation import VAL_EPOCH_TAG, best_epoch


# ----------------------------------------------------------------------------------------------- the run

def _saved_loras(run: RunFacts) -> tuple[Path, dict[int, Path]]:
    """(the final file, {epoch: file} of the numbered ones)."""
    name = run.lora_name
    numbered = {int(p.stem.rsplit("-", 1)[1]): p for p in run.run_dir.glob(f"{name}-[0-9][0-9][0-9][0-9][0-9][0-9]"
                                                                          f".safetensors")}
    return run.run_dir / f"{name}.safetensors", numbered


def best_saved_epoch(run: RunFacts) -> tuple[int, str]:
    """--epoch best: the epoch with the lowest validation loss among those whose LoRA file is there, and a line
    saying so (and when the very lowest one's file was not kept)."""
    final, numbered = _saved_loras(run)
    saved = set(numbered) | ({run.train.get("max_train_epochs")} if final.is_file() else set())
    logging_dir = run.train.get("logging_dir")
    scalars = run_scalars(run.run_dir, Path(logging_dir) if logging_dir else None)
    overall, best = best_epoch(scalars), best_epoch(scalars, among=saved)
    if overall is None:
        raise MedsynthError(f"{run.run_dir}: --epoch best needs validation loss ({VAL_EPOCH_TAG}) and the run "
                            f"logged none: train with a held-out share (--set validation_split=0.1), or give an "
                            f"epoch number")
    if best is None:
        raise MedsynthError(f"{run.run_dir}: no LoRA file of a validated epoch (lowest validation loss at epoch "
                            f"{overall.step}; LoRA files of epochs {', '.join(map(str, sorted(saved))) or 'none'})")
    note = f"epoch {best.step}: lowest validation loss {best.value:.4g}"
    if overall.step != best.step:
        note += f" among the kept LoRA files (epoch {overall.step}, {overall.value:.4g}, was not kept)"
    return best.step, note


def lora_for_epoch(run: RunFacts, epoch: int | None) -> tuple[Path, int | None]:
    """(the LoRA file, its epoch). The last epoch's file has no suffix (kohya-interface.md §5)."""
    name, last = run.lora_name, run.train.get("max_train_epochs")
    final, numbered = _saved_loras(run)
    if epoch is None:
        if final.is_file():
            return final, last
        if numbered:
            newest = max(numbered)
            return numbered[newest], newest
    elif epoch == last and final.is_file():
        return final, epoch
    elif epoch in numbered:
        return numbered[epoch], epoch
    have = sorted(numbered) + ([last] if final.is_file() else [])
    asked = f"epoch {epoch} file" if epoch is not None else "LoRA file"
    raise MedsynthError(f"{run.run_dir}: no {asked} ({name}[-NNNNNN].safetensors); epochs present: "
                        f"{', '.join(map(str, have)) or 'none (has the run finished an epoch?)'}")


def check_lora_file(path: Path) -> None:
    """Refuse what sdxl_gen_img.py could not load, before a dry run says it would use it: an empty file, or one
    that is not safetensors (an 8-byte little-endian header length, a JSON header, then exactly the tensor bytes
    the header indexes), such as one cut short by a run killed while saving."""
    size = path.stat().st_size
    if size == 0:
        raise MedsynthError(f"{path}: empty LoRA file (0 bytes; a run stopped while saving?): choose another epoch")
    try:
        with path.open("rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if size < 8 or not 2 <= length <= size - 8:
                raise ValueError("no safetensors header")
            header = json.loads(fh.read(length))
        tensors = [v for k, v in header.items() if k != "__metadata__"]
        if not tensors:
            raise ValueError("it holds no tensors")
        end = max(int(t["data_offsets"][1]) for t in tensors)
        if end != size - 8 - length:
            raise ValueError(f"its header indexes {end} bytes of tensors, it holds {size - 8 - length}: cut short?")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise MedsynthError(f"{path}: not a safetensors LoRA file ({exc}): choose another epoch") from exc


# ----------------------------------------------------------------------------------------------- settings

def gen_settings(run: RunFacts, lora: Path, epoch: int | None, *, seed: int, balance: str | None,
                 keep_hair: bool, cpu: bool, manifest_sha256: str, lora_sha256: str | None = None) -> GenSettings:
    """The run's own sample settings (sampler, steps, CFG, size, negative prompt), model and precision."""
    t, c = run.train, run.config
    size = str(t.get("resolution") or "1024,1024").split(",")
    negative = str(c.get("negative_prompt") or "")
    bad = next((f for f in (" --", "{", "}") if f in negative), None)
    if bad is not None:
        raise MedsynthError(f"{run.run_dir}: the negative prompt {negative!r} contains {bad.strip()!r}, which "
                            f"sdxl_gen_img.py reads as an option or a variant list")
    return GenSettings(
        model=str(t["pretrained_model_name_or_path"]),
        vae=str(t["vae"]) if t.get("vae") else None,
        tokenizer_cache_dir=str(t["tokenizer_cache_dir"]) if t.get("tokenizer_cache_dir") else None,
        network_module=str(t.get("network_module", "networks.lora")),
        network_args=tuple(map(str, t.get("network_args") or ())),
        lora_file=lora.name, lora_sha256=lora_sha256 or sha256_of(lora),
        sampler=str(t.get("sample_sampler") or c.get("sample_sampler") or "euler_a"),
        steps=int(c.get("sample_steps") or 28), cfg_scale=float(c.get("sample_cfg_scale") or 8.0),
        width=int(c.get("sample_width") or size[0]), height=int(c.get("sample_height") or size[-1]),
        negative_prompt=negative,
        # fp16 kernels are missing or slow on CPUs; bf16 works there (the CPU e2e training runs in bf16)
        precision="no" if cpu and t.get("mixed_precision") == "fp16" else str(t.get("mixed_precision") or "no"),
        sdpa=bool(t.get("sdpa")), no_half_vae=bool(t.get("no_half_vae")),
        seed=seed, balance=balance, keep_hair=keep_hair, epoch=epoch, manifest_sha256=manifest_sha256)


# ----------------------------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class GenerationPlan:
    run: RunFacts
    lora: Path
    settings: GenSettings
    items: list[Item]
    synthetic: Path
    manifest: Path
    extra_fields: tuple[str, ...]
    notes: tuple[str, ...]


def plan_generation(run_dir: Path, *, count: int, epoch: int | str | None = None, seed: int = 0,
                    balance: str | None = None, keep_hair: bool = False, cpu: bool = False, out: Path | None = None,
                    caption_template: Path | None = None, hash_lora: bool = True) -> GenerationPlan:
    """Read the run, pick the LoRA (`epoch` "best": the lowest validation loss), draw the items; nothing is
    written."""
    from orchestrator.dataset.captions import CaptionSettings
    from orchestrator.generate.prompts import plan_items

    run = read_run(run_dir, need_train=True)
    chosen = []
    if epoch == BEST_EPOCH:
        epoch, why = best_saved_epoch(run)
        chosen.append(f"--epoch best: {why}")
    lora, epoch = lora_for_epoch(run, epoch)
    check_lora_file(lora)
    dataset = run.dataset
    if not has_record(dataset):
        raise MedsynthError(f"{run_dir}: the run's dataset {dataset} is gone (no {RECORD_NAME}): the prompts "
                            f"come from its manifest.csv")
    record = read_record(dataset)
    manifest = dataset / "manifest.csv"
    if not manifest.is_file():
        raise MedsynthError(f"{manifest}: missing: the prompts come from the training manifest")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    notes = chosen + recheck_build(dataset, record.split_file, record.split_sha256, record.test_fold)
    trained_on = run.record.table("dataset").get("manifest_sha256")
    if trained_on and trained_on != digest:
        notes.append(f"warning: {manifest} changed since the run was trained (rebuilt dataset): prompts follow "
                     f"the current manifest")
    # the dataset's own caption wording unless --caption-template overrides it (older builds recorded none)
    template = caption_template or (Path(record.caption_template) if record.caption_template else None)
    if template is not None and not template.is_file():
        raise MedsynthError(f"{template}: caption template not found (recorded in {dataset / RECORD_NAME}); "
                            f"give caption_template")
    captions = CaptionSettings(**({"template": template} if template else {}),
                               trigger=record.trigger, site_map=dict(record.site_map))
    items = plan_items(manifest, count, seed=seed, balance=balance, settings=captions, keep_hair=keep_hair)
    # the band each image was drawn with, when the dataset was built with --skin-tone
    extra_fields = ("skin_tone",) if any(i.row.get("skin_tone") for i in items) else ()
    settings = gen_settings(run, lora, epoch, seed=seed, balance=balance, keep_hair=keep_hair, cpu=cpu,
                            manifest_sha256=digest, lora_sha256=None if hash_lora else "(not computed: dry run)")
    synthetic = (out if out is not None else run_dir) / "synthetic"
    return GenerationPlan(run, lora, settings, items, synthetic, manifest, extra_fields, tuple(notes))


def existing_count(plan: GenerationPlan) -> int:
    images = plan.synthetic / "images"
    return sum(image_matches(images / f"{image_name(i)}.png", i) for i in plan.items) if images.is_dir() else 0


def describe(plan: GenerationPlan, argv: Sequence[str], *, shown: int = 5) -> str:
    """The dry run's text: what would be made, with which LoRA and settings, the command and the first lines."""
    s, items = plan.settings, plan.items
    mode = f"balance {s.balance}" if s.balance else "match the training distribution"
    have = existing_count(plan)
    lines = [f"run: {plan.run.run_dir}", *plan.notes,
             f"LoRA: {plan.lora} (epoch {s.epoch if s.epoch is not None else '?'})",
             f"model: {s.model}; sampler {s.sampler}, {s.steps} steps, CFG {s.cfg_scale:g}, {s.width}x{s.height}, "
             f"precision {s.precision}",
             f"images: {len(items)} ({mode}, seed {s.seed}); {have} already in {plan.synthetic / 'images'}, "
             f"{len(items) - have} to generate",
             "", "command (first process):", shlex.join(map(str, argv)), "", f"first prompt lines of {len(items)}:"]
    lines += [f"  SYN_{i.number:07d}: {prompt_line(i, s)}" for i in items[:shown]]
    return "\n".join(lines) + "\n"


def summary(plan: GenerationPlan, fields: Sequence[str] = ("sex", "site", "age_band")) -> str:
    """Counts per value of each field among the planned items, next to the training manifest's shares."""
    from orchestrator.generate.prompts import distribution, read_manifest

    rows = [i.row for i in plan.items]
    table = read_manifest(plan.manifest)
    lines = []
    for f in fields + ((plan.settings.balance,) if plan.settings.balance not in (None, *fields) else ()):
        ours, theirs = distribution(rows, [f]), distribution(table, [f])
        parts = [f"{k[0] or '(missing)'} {ours.get(k, 0) * 100:.0f}% (training {theirs.get(k, 0) * 100:.0f}%)"
                 for k in sorted(set(ours) | set(theirs))]
        lines.append(f"  {f}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- checks

def dry_run_warnings(plan: GenerationPlan, *, sd_scripts: Path, offline: bool) -> list[str]:
    """The launch-time checks that need no GPU, reported instead of raised."""
    from orchestrator.train.preflight import (Preflight, check_model, check_sd_scripts, check_tokenizers,
                                        failed_checks_as_warnings)

    checks = [lambda: check_sd_scripts(sd_scripts, Preflight()), lambda: _check_gen_script(sd_scripts),
              lambda: check_model(plan.settings.model, offline=offline)]
    if offline:
        checks.append(lambda: check_tokenizers(_tokenizers(plan)))
    return failed_checks_as_warnings(checks)


def preflight(plan: GenerationPlan, *, sd_scripts: Path, python: str, env: Mapping[str, str], offline: bool,
              cpu: bool, num_processes: int) -> None:
    """sd-scripts and its generation script, the interpreter's accelerate and GPUs, the model, the tokenizers."""
    from orchestrator.train.preflight import Preflight, check_gpus, check_model, check_sd_scripts, check_tokenizers, \
        probe_python

    check_sd_scripts(sd_scripts, Preflight())
    _check_gen_script(sd_scripts)
    probe = probe_python(python, env)
    if not probe.accelerate:
        raise MedsynthError(f"{python} cannot import accelerate: run 'make setup-kohya'")
    if not cpu:
        check_gpus(probe, min_gpu_gib=0, num_processes=num_processes, gpu_ids=())
    check_model(plan.settings.model, offline=offline)
    if offline:
        check_tokenizers(_tokenizers(plan))


def _tokenizers(plan: GenerationPlan) -> Path | None:
    folder = plan.settings.tokenizer_cache_dir
    return Path(folder) if folder else None


def _check_gen_script(sd_scripts: Path) -> None:
    if not (sd_scripts / GEN_SCRIPT).is_file():
        raise MedsynthError(f"{sd_scripts}/{GEN_SCRIPT} not found: the pinned sd-scripts has it; run 'make setup'")
