"""End to end on the CPU (`make e2e`; not in the default run): `medsynth generate` runs the real sd-scripts
`sdxl_gen_img.py` with the random-weight SDXL and the LoRA of the CPU training run of test_train_cpu.py (its
fixtures: the same checkpoint, tokenizers and a 2-epoch run at 256 px), two images, 2 steps each. Needs the
training e2e's ~22 GB of RAM; generation itself loads the bf16 model once per call (~8 GB).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.generate import plan as gen
from orchestrator.generate import outputs
from orchestrator.dataset.ingest import read_metadata
from orchestrator.common.paths import REPO_ROOT
from e2e_support import OUTPUT_NAME, RES

pytestmark = pytest.mark.e2e
COUNT, SEED = 2, 3


def _generate(run: Path, out: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "orchestrator.cli.main", "generate", str(run), "--count", str(COUNT), "--epoch", "1",
            "--seed", str(SEED), "--out", str(out), "--offline", "--cpu"]
    done = subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ, MEDSYNTH_PYTHON=sys.executable, COLUMNS="200"),
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, f"generate exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def generated(run_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("e2e_generate")
    return out / "synthetic", _generate(run_dir, out)


def _rows(synthetic: Path) -> list[dict[str, str]]:
    with open(synthetic / "metadata.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_generate_draws_each_image_with_the_planned_seed_and_prompt_at_the_runs_size(generated):
    import cv2

    synthetic, done = generated
    rows = _rows(synthetic)
    assert [r["image_name"] for r in rows] == [f"SYN_{n:07d}" for n in range(1, COUNT + 1)]
    for row in rows:
        png = synthetic / "images" / f"{row['image_name']}.png"
        text = outputs.png_text(png)
        assert (text["seed"], text["prompt"]) == (row["seed"], row["prompt"])
        assert text["sampler"] == "euler_a" and text["steps"] == "2"
        image = cv2.imread(str(png))
        assert image is not None and image.shape[:2] == (RES, RES)
    assert f"{COUNT} generated, 0 kept" in done.stdout


def test_generate_loads_the_chosen_epochs_lora(generated, run_dir):
    synthetic, _ = generated
    lora = run_dir / f"{OUTPUT_NAME}-000001.safetensors"
    log = (synthetic / "generate.log").read_text(encoding="utf-8", errors="replace")
    assert "load network weights from" in log and lora.name in log
    assert {r["lora_file"] for r in _rows(synthetic)} == {lora.name}
    assert {r["lora_sha256"] for r in _rows(synthetic)} == {gen.sha256_of(lora)}


def test_generated_metadata_reads_back_as_isic2020(generated):
    synthetic, _ = generated
    table = read_metadata([synthetic / "metadata.csv"])
    assert set(table["source"]) == {"isic2020"} and len(table) == COUNT
    assert set(table["diagnosis"]) <= {"melanoma", "nevus"}   # the run's two classes
    assert (table["malignant"] == (table["diagnosis"] == "melanoma")).all()


def test_a_rerun_regenerates_a_deleted_image_pixel_for_pixel(generated, run_dir):
    synthetic, _ = generated
    victim = synthetic / "images" / "SYN_0000002.png"
    before = victim.read_bytes()
    kept = (synthetic / "images" / "SYN_0000001.png").stat().st_mtime_ns
    victim.unlink()
    done = _generate(run_dir, synthetic.parent)
    assert "1 generated, 1 kept" in done.stdout
    assert (synthetic / "images" / "SYN_0000001.png").stat().st_mtime_ns == kept
    import cv2
    import numpy as np

    again = cv2.imdecode(np.frombuffer(victim.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    first = cv2.imdecode(np.frombuffer(before, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(again, first)
