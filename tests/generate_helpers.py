"""A finished run folder (real rendered train.toml + run.json, stand-in LoRA files) and a stand-in for the
generation interpreter, for the `medsynth generate` tests."""

from __future__ import annotations

import csv
import json
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from orchestrator.generate import plan as gen
from orchestrator.generate.outputs import (
    metadata_rows,
    write_generation,
    write_metadata,
)
from orchestrator.runs.folder import write_run_dir
from orchestrator.train.plan import prepare, run_record
from orchestrator.train.settings import load_settings


def make_run(root: Path, dataset: Path, *, epochs: int = 3, sets: Sequence[str] = (), name: str = "r1") -> Path:
    """runs/<name>/ as `medsynth train` writes it, plus <output_name>[-NNNNNN].safetensors per epoch."""
    model = root / "sdxl.safetensors"
    model.write_bytes(b"weights")
    settings = load_settings(preset_name="default", cwd=root,
                             options={"dataset": str(dataset), "pretrained_model_name_or_path": str(model)},
                             sets=[f"runs_dir={json.dumps(str(root / 'runs'))}", f"max_train_epochs={epochs}", *sets])
    plan = prepare(settings, gpus=None, run_name=name)
    record = run_record(plan, argv=["python"], cwd=root, env_changes={}, commits={}, packages={}, gpu={})
    run_dir = write_run_dir(plan.run_dir, plan.files, command_sh="#!/bin/sh\n", record=record)
    for epoch in range(1, epochs + 1):
        stem = plan.output_name if epoch == epochs else f"{plan.output_name}-{epoch:06d}"
        (run_dir / f"{stem}.safetensors").write_bytes(lora_bytes(epoch))
    return run_dir


# the demo builds are 128 px, below sd-scripts' smallest bucket
TRAIN_SETS = ("resolution=512",)


def synthetic_folder(tmp_path: Path, dataset: Path, *, out: Path | None = None, record_run: bool = True) -> Path:
    """A trained run on `dataset` and the synthetic folder `medsynth generate` writes from it (its metadata.csv and
    generation.json, by generate's own writers; no images)."""
    run_dir = make_run(tmp_path, dataset, sets=TRAIN_SETS)
    plan = gen.plan_generation(run_dir, count=3, out=out)
    plan.synthetic.mkdir(parents=True)
    write_generation(plan.synthetic, plan.settings, run_dir if record_run else None)
    write_metadata(plan.synthetic / "metadata.csv", metadata_rows(plan.items, plan.settings, plan.run.name))
    return plan.synthetic


def lora_bytes(epoch: int) -> bytes:
    """A safetensors file of one float32 tensor (`epoch`), as the format lays it out: the header's length
    (8 bytes, little-endian), the JSON header, the tensor bytes; each epoch's file differs."""
    header = json.dumps({"__metadata__": {"ss_epoch": str(epoch)},
                         "lora_unet_stand_in.alpha": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<f", epoch)


def write_manifest(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    """A manifest.csv with the given rows (status ok unless given)."""
    columns = ["image_id", "status", "caption", "hair", "sex", "age", "site", "diagnosis", "malignant"]
    columns += [k for r in rows for k in r if k not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(columns)), restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows([{"status": "ok", **r} for r in rows])
    return path


def png_with_text(width: int, height: int, text: dict[str, str], rgb=None) -> bytes:
    """A PNG (grey, or the HxWx3 uint8 array `rgb`) with tEXt chunks, as PIL's PngInfo writes sd-scripts' metadata."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = [bytes(r) for r in rgb.reshape(height, width * 3)] if rgb is not None else [bytes([128] * 3 * width)] * height
    raw = b"".join(b"\0" + row for row in rows)
    chunks = [chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    chunks += [chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in text.items()]
    chunks += [chunk(b"IDAT", zlib.compress(raw)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


FAKE_GEN = r'''
"""Stands in for the generation interpreter: answers medsynth's probe, fakes `accelerate launch sdxl_gen_img.py`.

It reads --from_file like sdxl_gen_img.py (lines split on " --", "d N" is the seed), writes im_<k:06d>.png with
the prompt and seed in tEXt chunks into --outdir, and appends one JSON line per call to $FAKE_CALLS.
FAKE_MODE: ok | fail2 (two images, then exit 3) | wrongseed | none (exit 0, no images)."""
import json, os, re, sys
from pathlib import Path
sys.path.insert(0, os.environ["FAKE_HELPERS"])
from generate_helpers import png_with_text

args = sys.argv[1:]
if args[:1] == ["-c"]:
    print("MEDSYNTH_PROBE " + json.dumps({
        "packages": {"torch": "0.0-fake", "accelerate": "1.6.0"}, "bitsandbytes": True, "accelerate": True,
        "gpus": [{"name": "NVIDIA H100", "total_gib": 79.1}, {"name": "NVIDIA H100", "total_gib": 79.1}],
        "torch_error": None}))
    sys.exit(0)
assert args[:2] == ["-m", "accelerate.commands.launch"], args
value = lambda name: args[args.index(name) + 1]
lines = [l for l in Path(value("--from_file")).read_text(encoding="utf-8").splitlines() if l.strip() and l[0] != "#"]
with open(os.environ["FAKE_CALLS"], "a") as fh:
    fh.write(json.dumps({"argv": args, "lines": lines, "cwd": os.getcwd(),
                         "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
mode = os.environ.get("FAKE_MODE", "ok")
print(f"fake gen: {len(lines)} prompts", flush=True)
for k, line in enumerate(lines, start=1):
    if mode == "none" or (mode == "fail2" and k > 2):
        break
    prompt, *options = line.split(" --")
    seed = next(int(m.group(1)) for o in options if (m := re.match(r"d (\d+)", o)))
    png = png_with_text(8, 8, {"prompt": prompt, "seed": str(seed + (mode == "wrongseed")), "sampler": value("--sampler")})
    (Path(value("--outdir")) / f"im_{k:06d}.png").write_bytes(png)
sys.exit(3 if mode == "fail2" else 0)
'''


def write_fake_gen_python(folder: Path) -> Path:
    path = folder / "fake_gen_python"
    path.write_text(f"#!{sys.executable}\n{FAKE_GEN}", encoding="utf-8")
    path.chmod(0o755)
    return path


def write_fake_gen_sd_scripts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for script in ("sdxl_train_network.py", "sdxl_gen_img.py"):
        (folder / script).write_text("raise SystemExit('not run: the fake interpreter stands in')\n")
    return folder


def calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
