"""Leakage of the test fold into a LoRA's training set: the benchmark's trace from a synthetic folder to its run,
dataset and manifest (orchestrator.generate.provenance), and the re-check of a split-built dataset at `medsynth
train` and `medsynth generate`. Real demo builds, real run folders, generate's own writers."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from generate_helpers import TRAIN_SETS, make_run, synthetic_folder
from split_helpers import build_dataset, build_with_split, demo_with_patients

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.record import read_record, write_record
from orchestrator.dataset.split import Split, read_split
from orchestrator.generate import plan as gen
from orchestrator.generate.provenance import check_synthetic_leaks, trace_synthetic
from orchestrator.train import launch
from orchestrator.train.settings import load_settings

TEST_FOLD = 2


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The demo table split in 4 folds; one dataset built without fold 2, one built from every image."""
    root = tmp_path_factory.mktemp("built")
    csv_path = demo_with_patients(root)
    return {"split": root / "split.csv", "held_out": build_with_split(root, csv_path, test_fold=TEST_FOLD),
            "whole": build_dataset(root, csv_path, out="whole")}


def _copy(built, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built[name], tmp_path / name))


def _plant(dataset: Path, row: dict[str, str]) -> None:
    """Append `row` to the manifest and re-record its sha256 with no split file, as a hand-edited (or older)
    build would read: training then has nothing to re-check it against."""
    manifest = dataset / "manifest.csv"
    header = manifest.read_text().splitlines()[0].split(",")
    with manifest.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=header, restval="", lineterminator="\n").writerow({"status": "ok", **row})
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    write_record(dataset, dataclasses.replace(read_record(dataset), manifest_sha256=digest, split_file=None))


def _test_fold(split: Split) -> pd.DataFrame:
    return split.table[split.table["fold"] == TEST_FOLD]


def test_a_clean_synthetic_set_is_clean_with_the_chain_of_files_it_checked(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    synthetic = synthetic_folder(tmp_path, dataset, out=tmp_path / "elsewhere")
    check = check_synthetic_leaks(synthetic, read_split(built["split"]), TEST_FOLD)
    run_dir = tmp_path / "runs" / "r1"
    assert check.status == "clean"
    assert check.checked == (synthetic / "metadata.csv", synthetic / "generation.json", run_dir / "run.json",
                             dataset / "dataset.json", dataset / "manifest.csv")
    assert check.message == "no image, lesion or patient of test fold 2 is in the LoRA's training set"


def test_a_lora_trained_on_the_whole_table_is_refused_naming_the_first_test_image(built, tmp_path):
    synthetic = synthetic_folder(tmp_path, _copy(built, "whole", tmp_path))
    split = read_split(built["split"])
    manifest = pd.read_csv(tmp_path / "whole" / "manifest.csv", dtype=str)
    leaked = sorted(set(manifest["image_id"]) & set(_test_fold(split)["image_id"]))
    assert leaked
    with pytest.raises(MedsynthError) as caught:
        check_synthetic_leaks(synthetic, split, TEST_FOLD, split_file=built["split"])
    assert str(caught.value) == (
        f"synthetic/metadata.csv -> synthetic/generation.json -> r1/run.json -> whole/dataset.json -> "
        f"whole/manifest.csv: image {leaked[0]} of test fold 2 is in the LoRA's training set ({len(leaked)} images "
        f"in all): rebuild the dataset with --split {built['split']} --test-fold 2 and retrain")


def test_a_planted_test_patient_is_named(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    split = read_split(built["split"])
    patient = _test_fold(split)["group_id"].iloc[0]
    _plant(dataset, {"image_id": "ISIC_9999999", "patient_id": patient})
    with pytest.raises(MedsynthError, match=f"manifest.csv: patient {patient} of test fold 2 is in the LoRA's "
                                            f"training set \\(1 patients in all\\)"):
        check_synthetic_leaks(synthetic_folder(tmp_path, dataset), split, TEST_FOLD)


def test_a_planted_test_lesion_is_named(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    split = read_split(built["split"])
    lesion = pd.DataFrame([{"image_id": "ISIC_8888888", "group_kind": "lesion", "group_id": "HAM_0000118",
                            "fold": TEST_FOLD}])
    with_lesion = Split(pd.concat([split.table, lesion], ignore_index=True), split.folds)
    _plant(dataset, {"image_id": "ISIC_8888887", "lesion_id": "HAM_0000118", "status": "skipped"})
    with pytest.raises(MedsynthError, match="lesion HAM_0000118 of test fold 2 is in the LoRA's training set"):
        check_synthetic_leaks(synthetic_folder(tmp_path, dataset), with_lesion, TEST_FOLD)


def test_an_older_generation_record_in_the_run_folder_is_traced_through_it(built, tmp_path):
    synthetic = synthetic_folder(tmp_path, _copy(built, "held_out", tmp_path), record_run=False)
    trace = trace_synthetic(synthetic)
    assert "run_dir" not in json.loads((synthetic / "generation.json").read_text())
    assert trace.untraced is None and trace.run_dir == tmp_path / "runs" / "r1"
    assert trace.chain == ("synthetic/metadata.csv -> r1/run.json -> held_out/dataset.json -> "
                           "held_out/manifest.csv")


def test_a_synthetic_folder_with_no_traceable_run_is_untraced_with_the_reason(built, tmp_path):
    synthetic = synthetic_folder(tmp_path, _copy(built, "held_out", tmp_path), out=tmp_path / "elsewhere",
                           record_run=False)
    check = check_synthetic_leaks(synthetic, read_split(built["split"]), TEST_FOLD)
    assert check.status == "untraced" and check.checked == (synthetic / "metadata.csv",)
    assert check.message == (f"not checked for leaks: {synthetic / 'generation.json'}: records no run folder "
                             f"(written by an older medsynth) and {tmp_path / 'elsewhere'} is no run folder: "
                             f"generate into the run folder again")


def test_a_manifest_rebuilt_after_training_leaves_the_set_untraced(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    synthetic = synthetic_folder(tmp_path, dataset)
    _plant(dataset, {"image_id": "ISIC_7777777"})
    trace = trace_synthetic(synthetic)
    assert trace.dataset is None and trace.checked[-1] == dataset / "dataset.json"
    assert trace.untraced == (f"{dataset / 'manifest.csv'}: changed since run r1 was trained on it (sha256 differs "
                              f"from {tmp_path / 'runs' / 'r1' / 'run.json'}): the LoRA's training set is not known")


def test_a_folder_generate_did_not_write_is_untraced(tmp_path):
    trace = trace_synthetic(tmp_path)
    assert trace.checked == () and trace.untraced == (f"{tmp_path / 'metadata.csv'}: missing: not a folder "
                                                      f"'medsynth generate' wrote")


def _settings(tmp_path: Path, dataset: Path):
    (tmp_path / "sdxl.safetensors").write_bytes(b"weights")
    runs = f"runs_dir={json.dumps(str(tmp_path / 'runs'))}"
    return load_settings(preset_name="default", cwd=tmp_path, sets=[runs, *TRAIN_SETS],
                         options={"dataset": str(dataset),
                                  "pretrained_model_name_or_path": str(tmp_path / "sdxl.safetensors")})


def _plant_test_patient(dataset: Path, split_path: Path) -> str:
    """A row of a test patient appended to a split-built dataset's manifest (its record keeps the split file)."""
    patient = _test_fold(read_split(split_path))["group_id"].iloc[0]
    manifest = dataset / "manifest.csv"
    header = manifest.read_text().splitlines()[0].split(",")
    with manifest.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=header, restval="", lineterminator="\n").writerow(
            {"image_id": "ISIC_9999999", "status": "skipped", "patient_id": patient})
    return patient


def test_training_refuses_a_split_built_dataset_whose_manifest_holds_a_test_patient(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    patient = _plant_test_patient(dataset, built["split"])
    with pytest.raises(MedsynthError) as caught:
        launch.dry_run(_settings(tmp_path, dataset), sd_scripts=tmp_path / "no-sd-scripts", cpu=True)
    assert str(caught.value) == (f"{dataset / 'manifest.csv'}: patient {patient} of test fold 2 is in the manifest "
                                 f"(1 patients in all) of {built['split'].resolve()}: rebuild the dataset with "
                                 f"--split {built['split'].resolve()} --test-fold 2")


def test_generation_refuses_a_run_whose_dataset_now_holds_a_test_patient(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    run_dir = make_run(tmp_path, dataset, sets=TRAIN_SETS)
    patient = _plant_test_patient(dataset, built["split"])
    with pytest.raises(MedsynthError, match=f"patient {patient} of test fold 2 is in the manifest"):
        gen.plan_generation(run_dir, count=2)


def test_a_changed_split_file_is_a_warning_in_the_dry_run_not_a_refusal(built, tmp_path):
    dataset = _copy(built, "held_out", tmp_path)
    split_path = tmp_path / "split.csv"
    shutil.copy(built["split"], split_path)
    write_record(dataset, dataclasses.replace(read_record(dataset), split_file=str(split_path)))
    with split_path.open("a") as fh:
        fh.write("ISIC_5555555,image,ISIC_5555555,0\n")
    text = launch.dry_run(_settings(tmp_path, dataset), sd_scripts=tmp_path / "no-sd-scripts", cpu=True)
    assert (f"warning: {split_path} changed since {dataset} was built (its sha256 differs from the build's): the "
            f"manifest was not re-checked for images of test fold 2") in text.splitlines()


def test_a_moved_run_is_traced_through_the_folder_its_synthetic_set_sits_in(built, tmp_path):
    synthetic = synthetic_folder(tmp_path, _copy(built, "held_out", tmp_path))
    moved = Path(shutil.move(tmp_path / "runs", tmp_path / "moved")) / "r1"
    trace = trace_synthetic(moved / "synthetic")
    assert trace.untraced is None and trace.run_dir == moved
    assert not synthetic.exists() and trace.checked[2] == moved / "run.json"
