"""A small dataset folder shaped like `medsynth dataset build`'s output, for the train tests (real JPEGs)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from orchestrator.dataset.record import DatasetRecord, write_record

MANIFEST_COLUMNS = (
    "image_id", "status", "skip_reason", "caption", "hair", "hair_score", "output_path", "sha256",
    "width", "height", "out_width", "out_height", "patient_id", "sex", "age", "site", "diagnosis", "malignant",
    "source", "source_file", "source_line", "attribution", "license",
)

# (sex, site, age, hairy)
DEFAULT_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("female", "lower extremity", "50", False), ("female", "lower extremity", "55", False),
    ("female", "lower extremity", "50", True), ("male", "torso", "70", False), ("male", "torso", "75", False),
    ("male", "", "40", False),
)


def caption_for(sex: str, site: str, age: str, hairy: bool, trigger: str = "me1anoma") -> str:
    """The seed's caption wording (templates/caption.j2)."""
    text = f"photo of {sex + ' ' if sex else ''}skin, {trigger}"
    text += f" on {site}" if site else ""
    text += f", at age {age}" if age else ""
    return text + (", hairy" if hairy else "")


def make_dataset(root: Path, rows: Sequence[tuple[str, str, str, bool]] = DEFAULT_ROWS, *, repeats: int = 1,
                 resolution: int = 1024, captions: Sequence[str] | None = None, skipped: int = 0,
                 patients: Sequence[str] = (), lesions: Sequence[str] = ()) -> Path:
    """<root>/train/<repeats>_melanoma/ISIC_*.jpg + .caption, manifest.csv, dataset.json; returns <root>.
    `patients`/`lesions`: the manifest's patient_id/lesion_id of the first images ("" for none)."""
    image_dir = root / "train" / f"{repeats}_melanoma"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i, (sex, site, age, hairy) in enumerate(rows):
        image_id = f"ISIC_{i:07d}"
        caption = captions[i] if captions is not None else caption_for(sex, site, age, hairy)
        path = image_dir / f"{image_id}.jpg"
        assert cv2.imwrite(str(path), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        (image_dir / f"{image_id}.caption").write_text(caption + "\n", encoding="utf-8")
        records.append({"image_id": image_id, "status": "ok", "caption": caption, "hair": str(hairy),
                        "output_path": path.relative_to(root).as_posix(), "sex": sex, "age": age, "site": site,
                        "diagnosis": "melanoma", "malignant": "True", "width": "64", "height": "48",
                        "patient_id": patients[i] if i < len(patients) else "",
                        **({"lesion_id": lesions[i] if i < len(lesions) else ""} if lesions else {})})
    for j in range(skipped):
        records.append({"image_id": f"ISIC_9{j:06d}", "status": "skipped", "skip_reason": "missing image",
                        "sex": "male", "age": "30", "site": "head/neck"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS + (("lesion_id",) if lesions else ()), restval="",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    manifest = buf.getvalue()
    (root / "manifest.csv").write_text(manifest, encoding="utf-8", newline="")
    write_record(root, DatasetRecord(class_name="melanoma", repeats=repeats, resolution=resolution,
                                     image_dir=image_dir.relative_to(root).as_posix(), images=len(rows),
                                     skipped=skipped, trigger="me1anoma", caption_extension=".caption",
                                     manifest_sha256=hashlib.sha256(manifest.encode()).hexdigest()))
    return root


FAKE_PYTHON = r'''
"""A stand-in for the training interpreter: answers medsynth's probe and fakes `accelerate launch`.

FAKE_GPUS="name:GiB,..." are the GPUs the probe reports; FAKE_MODE = ok | fail | nolora | sigint | stop1
(stop1: saves epoch 1 with its state, then exits 130 as if interrupted)."""
import json, os, signal, sys, time
from pathlib import Path

args = sys.argv[1:]
gpus = [g.rsplit(":", 1) for g in os.environ.get("FAKE_GPUS", "").split(",") if g]
if args[:1] == ["-c"]:
    print("MEDSYNTH_PROBE " + json.dumps({
        "packages": {"torch": "0.0-fake", "accelerate": "1.6.0"}, "bitsandbytes": True, "accelerate": True,
        "gpus": [{"name": n, "total_gib": float(g)} for n, g in gpus], "torch_error": None}))
    sys.exit(0)
assert args[:2] == ["-m", "accelerate.commands.launch"], args
import toml
flat = {}
for table in toml.load(args[args.index("--config_file") + 1]).values():
    flat.update(table)
print("fake: argv " + json.dumps(args), flush=True)
print("fake: cwd " + os.getcwd() + " pythonpath " + os.environ.get("PYTHONPATH", ""), flush=True)
print("fake: alloc " + os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "<unset>"), flush=True)
print("fake: to stderr", file=sys.stderr, flush=True)
mode = os.environ.get("FAKE_MODE", "ok")
if mode == "fail":
    sys.exit(3)
if mode == "sigint":
    def stop(signum, frame):
        print("fake: got SIGINT, saving", flush=True)
        sys.exit(130)
    signal.signal(signal.SIGINT, stop)
    print("fake: ready", flush=True)
    time.sleep(60)
    sys.exit(0)
if mode == "nolora":
    print("No data found. Please verify the metadata file and train_data_dir option.", flush=True)
    sys.exit(0)
out, name, epochs = Path(flat["output_dir"]), flat["output_name"], flat["max_train_epochs"]
first = 1
if "--resume" in args:
    state = json.loads((Path(args[args.index("--resume") + 1]) / "train_state.json").read_text())
    first = state["current_epoch"] + 1
for epoch in range(first, epochs + 1):
    print(f"epoch {epoch}/{epochs}\r", end="", flush=True)
    stem = name if epoch == epochs else f"{name}-{epoch:06d}"
    (out / f"{stem}.safetensors").write_bytes(b"lora")
    state = out / f"{stem}-state"
    state.mkdir(exist_ok=True)
    (state / "train_state.json").write_text(json.dumps({"current_epoch": epoch, "current_step": epoch * 10}))
    if mode == "stop1":
        sys.exit(130)
print("\nfake: done", flush=True)
'''


def write_fake_python(folder: Path) -> Path:
    """An executable script usable as $MEDSYNTH_PYTHON."""
    import sys

    path = folder / "fake_python"
    path.write_text(f"#!{sys.executable}\n{FAKE_PYTHON}", encoding="utf-8")
    path.chmod(0o755)
    return path


def write_fake_sd_scripts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sdxl_train_network.py").write_text("raise SystemExit('not run: the fake interpreter stands in')\n")
    return folder


def write_tokenizers(root: Path, max_length: int = 77) -> None:
    """The two tokenizer folders sd-scripts reads from tokenizer_cache_dir (files with placeholder content)."""
    from orchestrator.train.preflight import TOKENIZER_FOLDERS

    for name in TOKENIZER_FOLDERS:
        (root / name).mkdir(parents=True)
        (root / name / "vocab.json").write_text("{}")
        (root / name / "merges.txt").write_text("")
        (root / name / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
