"""End to end on the CPU (`make e2e`; not in the default run): the real `medsynth train` path, with sd-scripts,
on a randomly initialised SDXL of the real architecture and offline tokenizers, for 2 epochs at 256 px on two
classes of two demo images each, one image of each held out for validation loss, with a regularization image and
masked loss (fixtures in tests/e2e/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import ALPHA, DIM, EPOCHS, OUTPUT_NAME, RES

pytestmark = pytest.mark.e2e


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


def test_validation_loss_is_logged_every_epoch_on_the_held_out_images(run_dir):
    import math

    from orchestrator.runs.outputs import run_scalars
    from orchestrator.runs.validation import VAL_EPOCH_TAG, best_epoch

    scalars = run_scalars(run_dir)
    points = scalars.get(VAL_EPOCH_TAG, [])
    assert [p.step for p in points] == list(range(1, EPOCHS + 1)), sorted(scalars)
    assert all(math.isfinite(p.value) for p in points)
    assert best_epoch(scalars).step in range(1, EPOCHS + 1)
    metadata, _ = _lora(run_dir / f"{OUTPUT_NAME}.safetensors")
    assert metadata["ss_num_validation_images"] == "2"  # one of each class's two images (validation_split 0.5)


def test_validation_holds_out_a_whole_patient_as_a_dataset_of_its_own(run_dir):
    import json

    import toml

    held = json.loads((run_dir / "run.json").read_text())["held_out"]
    assert held["by"] == "patient" and len(held["groups"]) == 1
    datasets = toml.loads((run_dir / "dataset.toml").read_text())["datasets"]
    # sd-scripts trains on none of the held-out patient's dataset (validation_split 1.0) and validates on all of it
    assert len(datasets) == 2 and datasets[1]["validation_split"] == 1.0


def test_the_run_trains_with_the_datasets_loss_masks(run_dir):
    log = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    # sd-scripts' own listing of the subsets it built: the classes masked, the reg image not (no mask)
    assert log.count("alpha_mask: True") >= 2 and "alpha_mask: False" in log
    assert "masked_loss = true" in (run_dir / "train.toml").read_text(encoding="utf-8")


def test_two_classes_and_the_reg_image_train_as_the_plan_counted(run_dir):
    import json

    import toml

    subsets = toml.loads((run_dir / "dataset.toml").read_text())["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s.get("is_reg", False)) for s in subsets] == [
        ("1_melanoma", False), ("1_nevus", False), ("1_skin_lesion", True)]
    schedule = json.loads((run_dir / "run.json").read_text())["schedule"]
    # each class's 2 images less the one held out, the reg image repeated to match them
    assert (schedule["samples"], schedule["reg_samples"], schedule["steps_per_epoch"]) == (2, 2, 4)
    assert schedule["validation_images"] == 2
    log = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "2 train images with repeats" in log and "1 reg images with repeats" in log
