"""End to end on the CPU (`make e2e`; not in the default run): the real `medsynth train` path, with sd-scripts,
on a randomly initialised SDXL of the real architecture and offline tokenizers, for 2 epochs at 256 px on two
demo images. Needs ~22 GB of RAM and a few minutes on 2 cores. The checkpoint (6.9 GB, ~1.5 min, ~15 GB peak) and
the tokenizers are built once into $MEDSYNTH_E2E_CACHE (default build/e2e/) and reused.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.paths import DEMO_DIR, REPO_ROOT

pytestmark = pytest.mark.e2e

CACHE = Path(os.environ.get("MEDSYNTH_E2E_CACHE", REPO_ROOT / "build" / "e2e"))
DIM, ALPHA, EPOCHS, RES = 8, 4, 2, 256  # dim != alpha, both off the defaults: the files must say what was asked
OUTPUT_NAME = "e2e_lora"


def _run(argv: list[str], timeout: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def base_model(sd_scripts_dir) -> Path:
    ckpt = CACHE / "sdxl_random.safetensors"
    if not ckpt.is_file():  # its own process, so the ~15 GB it peaks at is returned before training starts
        _run([sys.executable, str(REPO_ROOT / "tools" / "make_random_sdxl.py"), str(ckpt), "--dtype", "bf16",
              "--sd-scripts", str(sd_scripts_dir), "--check"], timeout=1200)
    return ckpt


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch not installed (it ships the CLIP BPE vocab): run 'make setup-kohya'")
    _run([sys.executable, str(REPO_ROOT / "tools" / "build_tokenizers.py"), str(CACHE / "tokenizers")], timeout=120)
    return CACHE / "tokenizers"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two demo melanoma images at 256 px, built by `medsynth dataset build`."""
    work = tmp_path_factory.mktemp("e2e_data")
    with open(DEMO_DIR / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(work / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([r for r in rows if r["diagnosis"] == "melanoma"][:2])
    _run([sys.executable, "-m", "orchestrator.cli", "dataset", "build", "--csv", str(work / "metadata.csv"),
          "--images", str(DEMO_DIR / "images"), "--out", str(work / "ds"), "--resolution", str(RES), "--quiet"],
         timeout=300)
    return work / "ds"


@pytest.fixture(scope="module")
def run_dir(base_model, tokenizer_dir, dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("e2e_runs")
    settings = {"tokenizer_cache_dir": tokenizer_dir, "runs_dir": runs, "train_batch_size": 1,
                "max_train_epochs": EPOCHS, "network_dim": DIM, "network_alpha": ALPHA, "output_name": OUTPUT_NAME,
                "num_sample_prompts": 1, "sample_width": RES, "sample_height": RES, "sample_steps": 2}
    argv = [sys.executable, "-m", "orchestrator.cli", "train", "--preset", "default", "--run-name", "e2e",
            "--dataset", str(dataset), "--model", str(base_model), "--offline", "--cpu"]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    env = dict(os.environ, MEDSYNTH_PYTHON=sys.executable, COLUMNS="200")
    _run(argv, timeout=3600, env=env)
    return runs / "e2e"


def _lora(path: Path) -> tuple[dict[str, str], dict[str, "object"]]:
    from safetensors.torch import load_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return metadata, load_file(str(path))


def test_every_epoch_saves_a_lora_with_the_requested_rank_and_alpha(run_dir):
    import torch

    files = {epoch: run_dir / (f"{OUTPUT_NAME}-{epoch:06d}.safetensors" if epoch < EPOCHS else f"{OUTPUT_NAME}.safetensors")
             for epoch in range(1, EPOCHS + 1)}
    for epoch, path in files.items():
        assert path.is_file(), f"no LoRA for epoch {epoch}: {sorted(p.name for p in run_dir.iterdir())}"
        metadata, tensors = _lora(path)
        assert metadata["ss_epoch"] == str(epoch)
        assert int(metadata["ss_network_dim"]) == DIM and float(metadata["ss_network_alpha"]) == ALPHA
        downs = {k: v for k, v in tensors.items() if k.endswith("lora_down.weight")}
        assert downs and all(v.shape[0] == DIM for v in downs.values())
        assert all(float(v) == ALPHA for k, v in tensors.items() if k.endswith(".alpha"))
        probe = next(v for k, v in sorted(downs.items()) if "attn1_to_q" in k).float()
        assert int(torch.linalg.matrix_rank(probe.reshape(DIM, -1))) == DIM


def test_every_epoch_writes_its_sample_images(run_dir):
    import cv2

    samples = sorted((run_dir / "sample").glob("*.png"))
    for epoch in range(1, EPOCHS + 1):
        of_epoch = [p for p in samples if f"_e{epoch:06d}_" in p.name]
        assert of_epoch, f"no sample image for epoch {epoch}: {[p.name for p in samples]}"
        image = cv2.imread(str(of_epoch[0]))
        assert image is not None and image.shape[:2] == (RES, RES)


def test_run_record_says_finished_with_the_resolved_settings(run_dir):
    import json

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["network_dim"] == DIM and record["config"]["max_train_epochs"] == EPOCHS
    assert (run_dir / "train.log").stat().st_size > 0
