"""`medsynth benchmark` end to end: real torchvision trainings on tiny images (32 px, 1 to 4 epochs) of the demo set and
of generated pattern images, real result files, real CLI runs (in-process and as a subprocess that is killed)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from generate_helpers import synthetic_folder
from script_loader import load_script
from split_helpers import build_dataset, demo_with_patients

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.common.filelock import exclusive
from orchestrator.common.paths import DEMO_DIR, REPO_ROOT
from orchestrator.dataset.split import read_split

pytest.importorskip("torchvision", reason="the benchmark trains torchvision models: run 'make setup' for torch")

STRATA = {"sex", "age_band", "site", "skin_tone"}
ARMS = ["real", "oversample", "synthetic x1", "control"]
RESULTS = {"real-seed0.json", "oversample-seed0.json", "synthetic-x1-seed0.json", "control-seed0.json"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """The demo set's 5-fold split and a stand-in synthetic folder of its training melanomas (no test fold 0 image)."""
    root = tmp_path_factory.mktemp("demo")
    split = root / "split.csv"
    run = CliRunner().invoke(main, ["dataset", "split", "--csv", str(DEMO_DIR / "metadata.csv"), "--folds", "5",
                                    "--out", str(split)])
    assert run.exit_code == 0, run.output
    standin = load_script("tools/standin_synthetic.py")
    standin.write_standin([DEMO_DIR / "metadata.csv"], [DEMO_DIR / "images"], split, 0, 10, root / "synthetic")
    return {"split": split, "synthetic": root / "synthetic"}


# The known answer: malignant lesions carry a pattern (faint diagonal stripes); the real training set has few of
# them. Synthetic images that carry the pattern must raise AUROC beyond the CI; as many benign-looking images
# labelled malignant (shuffled labels) must not. Checked offline with generator seeds 0-2 (not tuned to one).
SIDE = 32


def _lesion(rng: np.random.Generator, striped: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    image = np.empty((SIDE, SIDE, 3), np.float32)
    image[:] = np.array([200, 160, 140]) + rng.normal(0, 15, 3)   # skin
    cy, cx = rng.uniform(10, 22, 2)
    ry, rx = rng.uniform(5, 10, 2)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image[inside] = np.array([90, 60, 50]) + rng.normal(0, 15, 3)   # the lesion
    if striped:
        image[inside & ((xx + yy) % 4 < 2)] += np.array([-24, 24, 72])
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _images(rng: np.random.Generator, striped: list[bool]) -> np.ndarray:
    return np.stack([_lesion(rng, s) for s in striped])


@pytest.mark.timeout(240)
def test_pattern_bearing_synthetic_images_raise_auroc_beyond_the_ci_and_shuffled_labels_do_not():
    from orchestrator.benchmark.fit import train_and_score
    from orchestrator.benchmark.metrics import summarise
    rng = np.random.default_rng(0)
    y_test = np.r_[np.ones(30, int), np.zeros(70, int)]
    test = _images(rng, list(y_test.astype(bool)))
    real = _images(rng, [False] * 80 + [True] * 6)
    real_labels = [0] * 80 + [1] * 6
    arms = {"real": (real, real_labels),
            "synthetic": (np.concatenate([real, _images(rng, [True] * 42)]), real_labels + [1] * 42),
            "shuffled": (np.concatenate([real, _images(rng, [False] * 42)]), real_labels + [1] * 42)}
    scores = {name: np.stack([train_and_score(images, labels, test, model="resnet18", weights=None, epochs=4,
                                              batch_size=32, learning_rate=1e-3, seed=seed, oversample=False,
                                              device="cpu", desc=name, progress=False)[0] for seed in range(2)])
              for name, (images, labels) in arms.items()}
    patients = np.array([f"p{i}" for i in range(len(y_test))])
    vs_real = {name: summarise(y_test, scores[name], patients, n_boot=1000, baseline=scores["real"])["vs_real"]["auroc"]
               for name in ("synthetic", "shuffled")}
    assert vs_real["synthetic"]["lo"] > 0, vs_real
    assert vs_real["shuffled"]["lo"] <= 0, vs_real


def _args(demo, out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--csv", str(DEMO_DIR / "metadata.csv"), "--images", str(DEMO_DIR / "images"),
            "--split", str(demo["split"]), "--synthetic", str(demo["synthetic"]), "--out", str(out),
            "--image-size", "32", "--epochs", "1", "--seeds", "1", "--ratios", "0,1", "--n-boot", "200",
            "--workers", "1", "--quiet", *extra]


def _bench(demo, out: Path, *extra: str):
    return CliRunner().invoke(main, _args(demo, out, *extra))


def _trained(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("medsynth: training ")]


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}


def _error_line(run) -> str:
    """The one 'error: ...' line of a refused CLI run."""
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (run.output, run.exception)
    return errors[0]


@pytest.fixture(scope="module")
def finished(demo, tmp_path_factory) -> tuple[Path, str]:
    """A finished demo benchmark's folder, and its output."""
    out = tmp_path_factory.mktemp("finished") / "bench"
    run = _bench(demo, out)
    assert run.exit_code == 0, run.output
    return out, run.output


@pytest.mark.timeout(300)
def test_the_demo_benchmark_records_every_arm_with_cis_strata_and_the_split(finished):
    out, output = finished
    assert len(_trained(output)) == 4
    record = json.loads((out / "benchmark.json").read_text())
    assert [arm["name"] for arm in record["arms"]] == ARMS
    for arm in record["arms"]:
        assert arm["skipped"] is None
        for name, metric in arm["metrics"].items():
            if metric["value"] is not None:
                assert metric["lo"] <= metric["value"] <= metric["hi"], (arm["name"], name, metric)
        assert set(arm["strata"]) == STRATA
        if arm["kind"] == "real":
            assert arm["vs_real"] is None
        else:
            assert set(arm["vs_real"]) == set(arm["metrics"])
    assert record["split"]["train"] == {"images": 32, "malignant": 16, "groups": 32}
    assert record["split"]["test"] == {"images": 8, "malignant": 4, "groups": 8}
    assert record["leakage"]["status"] == "untraced"
    assert {p.name for p in (out / "results").iterdir()} == RESULTS
    assert (out / "benchmark.html").is_file()


@pytest.mark.timeout(240)
def test_a_rerun_trains_nothing_and_a_deleted_result_is_all_it_retrains(demo, finished, tmp_path):
    out = Path(shutil.copytree(finished[0], tmp_path / "bench"))
    record = json.loads((out / "benchmark.json").read_text())
    again = _bench(demo, out)
    assert again.exit_code == 0, again.output
    assert _trained(again.output) == []
    assert json.loads((out / "benchmark.json").read_text()) == record

    before = _mtimes(out)
    (out / "results" / "oversample-seed0.json").unlink()
    resumed = _bench(demo, out)
    assert resumed.exit_code == 0, resumed.output
    assert _trained(resumed.output) == ["medsynth: training oversample, seed 0 (1 of 1 to train, 4 in all) on cpu"]
    after = _mtimes(out)
    del before["oversample-seed0.json"], after["oversample-seed0.json"]
    assert after == before


@pytest.mark.timeout(240)
def test_other_training_settings_retrain_every_arm(demo, finished, tmp_path):
    out = Path(shutil.copytree(finished[0], tmp_path / "bench"))
    longer = _bench(demo, out, "--epochs", "2")
    assert longer.exit_code == 0, longer.output
    assert len(_trained(longer.output)) == 4
    assert json.loads((out / "benchmark.json").read_text())["settings"]["epochs"] == 2


def _cli_process(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(240)
def test_a_killed_benchmark_keeps_its_finished_results_and_a_rerun_finishes_the_rest(demo, tmp_path):
    out = tmp_path / "bench"
    process = _cli_process(_args(demo, out, "--epochs", "2"))
    results = out / "results"
    deadline = time.monotonic() + 180
    while not (results.is_dir() and any(p.suffix == ".json" for p in results.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no result file appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.splitlines()[-1].startswith("error: interrupted (SIGTERM)"), stderr
    assert "Traceback" not in stderr
    kept = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    assert 1 <= len(kept) < 4 and set(kept) <= RESULTS, kept
    assert not (out / "benchmark.json").exists()

    finish = _bench(demo, out, "--epochs", "2")
    assert finish.exit_code == 0, finish.output
    assert len(_trained(finish.output)) == 4 - len(kept)
    assert {name: (results / name).stat().st_mtime_ns for name in kept} == kept
    assert {p.name for p in results.iterdir()} == RESULTS


@pytest.mark.timeout(240)
def test_a_synthetic_set_whose_lora_saw_the_test_fold_is_refused_naming_the_image(tmp_path):
    csv_path = demo_with_patients(tmp_path)
    split = tmp_path / "split.csv"
    run = CliRunner().invoke(main, ["dataset", "split", "--csv", str(csv_path), "--folds", "4", "--out", str(split)])
    assert run.exit_code == 0, run.output
    synthetic = synthetic_folder(tmp_path, build_dataset(tmp_path, csv_path, out="whole"))
    folds = read_split(split).table
    trained_on = set(pd.read_csv(tmp_path / "whole" / "manifest.csv", dtype=str)["image_id"])
    leaked = sorted(trained_on & set(folds.loc[folds["fold"] == 2, "image_id"]))
    out = tmp_path / "bench"
    refused = CliRunner().invoke(main, ["benchmark", "--csv", str(csv_path), "--images", str(DEMO_DIR / "images"),
                                        "--split", str(split), "--test-fold", "2", "--synthetic", str(synthetic),
                                        "--out", str(out), "--image-size", "32", "--epochs", "1", "--seeds", "1",
                                        "--workers", "1", "--quiet"])
    assert refused.exit_code != 0
    line = _error_line(refused)
    assert f"image {leaked[0]} of test fold 2 is in the LoRA's training set" in line, line
    assert not (out / "benchmark.json").exists()
    assert not (out / "results").exists()


@pytest.mark.timeout(180)
def test_emit_slurm_writes_one_task_per_arm_and_seed_whose_task_the_gathering_run_keeps(demo, tmp_path):
    out = tmp_path / "bench"
    emitted = _bench(demo, out, "--emit", "slurm")
    assert emitted.exit_code == 0, emitted.output
    script = out / "benchmark.slurm"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert "#SBATCH --array=0-3\n" in script.read_text()   # 4 arms x 1 seed
    assert not (out / "results").exists() or not list((out / "results").iterdir())

    task = subprocess.run(["bash", str(script)], check=False, env={**os.environ, "SLURM_ARRAY_TASK_ID": "0",
                                                     "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=150)
    assert task.returncode == 0, task.stderr
    assert [p.name for p in (out / "results").iterdir()] == ["real-seed0.json"]
    assert not (out / "benchmark.json").exists()

    gathered = _bench(demo, out)
    assert gathered.exit_code == 0, gathered.output
    assert len(_trained(gathered.output)) == 3
    assert "real, seed 0" not in gathered.output


def _bad_inputs(demo, tmp_path) -> list[tuple[list[str], str]]:
    not_weights = tmp_path / "weights.pt"
    not_weights.write_text("not a state_dict")
    no_metadata = tmp_path / "no_metadata"
    (no_metadata / "images").mkdir(parents=True)
    other_split = tmp_path / "other_split.csv"
    other_split.write_text("\n".join(line.replace("ISIC_", "XYZ_") for line in demo["split"].read_text().splitlines())
                           + "\n")
    return [(["--model", "resnt18"], "did you mean 'resnet18'?"),
            (["--weights", str(not_weights)], f"{not_weights}: not a state_dict of torchvision's resnet18"),
            (["--test-fold", "7"], f"--test-fold 7 is not a fold of {demo['split']}"),
            (["--synthetic", str(no_metadata)], str(no_metadata / "metadata.csv")),
            (["--ratios", "a,b"], "--ratios 'a,b': expected numbers separated by commas"),
            (["--split", str(other_split)], f"is not in {other_split}")]


@pytest.mark.timeout(120)
def test_bad_input_is_one_error_line_naming_it(demo, tmp_path):
    for extra, named in _bad_inputs(demo, tmp_path):
        out = tmp_path / "bench"
        run = _bench(demo, out, *extra)
        assert run.exit_code != 0, (extra, run.output)
        line = _error_line(run)
        assert named in line, (extra, line)
        assert not (out / "benchmark.json").exists()


@pytest.mark.timeout(120)
def test_a_second_benchmark_on_the_same_arm_and_seed_is_refused(demo, tmp_path):
    out = tmp_path / "bench"
    (out / "results").mkdir(parents=True)
    lock = out / "results" / ".real-seed0.lock"
    with exclusive(lock, cannot_write="cannot write", busy=lambda pid: f"busy{pid}"):
        run = _bench(demo, out)
    assert run.exit_code != 0
    line = _error_line(run)
    assert f"another medsynth benchmark (pid {os.getpid()}) is training real seed 0" in line, line
    assert not (out / "benchmark.json").exists()


@pytest.mark.parametrize("edit", [{"seconds": "fast"}, {"seed": "0"}, {"losses": ["x"]}])
def test_a_hand_edited_result_file_is_one_error_naming_the_file_and_key(tmp_path, edit):
    from orchestrator.benchmark import record

    path = tmp_path / "results" / "real-seed0.json"
    record.write_result(path, record.TaskResult("real", 0, "k", np.zeros(3), [0.5], 1.0, "cpu"))
    assert record.read_result(path, key="k", test_images=3).seconds == 1.0
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **edit}))
    with pytest.raises(MedsynthError, match=str(path)) as caught:
        record.read_result(path, key="k", test_images=3)
    assert "\n" not in str(caught.value) and next(iter(edit)) in str(caught.value)
