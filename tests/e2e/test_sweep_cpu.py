"""End to end on the CPU (`make e2e`; not in the default run): a real 2-run `medsynth sweep` with sd-scripts on
the random SDXL of test_train_cpu.py; the second run reuses the latent and text-encoder caches the first wrote.
Needs ~22 GB of RAM (one run at a time) and a few minutes per run on 2 cores."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.common.paths import REPO_ROOT
from e2e_support import RES

pytestmark = pytest.mark.e2e
LRS = (1e-4, 2e-4)


@pytest.fixture(scope="module")
def sweep_dir(base_model, tokenizer_dir, dataset, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e_sweep")
    (work / "cpu2.toml").write_text(
        f'name = "cpu2"\ndataset = {json.dumps(str(dataset))}\n[fixed]\n'
        f'pretrained_model_name_or_path = {json.dumps(str(base_model))}\n'
        f'tokenizer_cache_dir = {json.dumps(str(tokenizer_dir))}\nruns_dir = {json.dumps(str(work / "runs"))}\n'
        f'train_batch_size = 1\nmax_train_epochs = 1\nnetwork_dim = 8\nnetwork_alpha = 4\nlr_scaling = "none"\n'
        f'num_sample_prompts = 1\nsample_width = {RES}\nsample_height = {RES}\nsample_steps = 2\n'
        f'[grid]\nlearning_rate = [{", ".join(map(repr, LRS))}]\n', encoding="utf-8")
    env = dict(os.environ, MEDSYNTH_PYTHON=sys.executable, COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "sweep", str(work / "cpu2.toml"), "--cpu",
                           "--offline"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=7200)
    assert done.returncode == 0, f"sweep exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-3000:]}"
    assert "caches:" in done.stdout
    return work / "runs" / "cpu2"


def test_both_runs_finish_with_a_loss(sweep_dir):
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["finished", "finished"]
    assert [r["params"]["learning_rate"] for r in record["runs"]] == list(LRS)
    for entry in record["runs"]:
        assert entry["final_loss"] is not None and math.isfinite(entry["final_loss"])
        assert list((sweep_dir / entry["path"]).glob("*.safetensors"))


def test_the_second_run_reuses_the_caches_of_the_first(sweep_dir, dataset):
    first, second = (r["cache"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"])
    assert first["dir"] == second["dir"]
    # .png: the dataset's loss masks ride in the images' alpha channel (dataset build --masks auto)
    images = len([p for p in (sweep_dir / first["dir"]).iterdir() if p.suffix in (".jpg", ".png")])
    assert first["npz_before"] == 0 and first["npz_after"] == 2 * images  # latents + text-encoder outputs
    assert second["npz_before"] == second["npz_after"] == first["npz_after"]
    assert not list(Path(dataset).rglob("*.npz"))
