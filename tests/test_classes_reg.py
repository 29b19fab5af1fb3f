"""Regularization images and several classes at once: the folders `dataset build` writes, their captions and
repeats, what dataset.json, the manifest and the report say, and what training and generation make of them."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
import toml
from class_helpers import build, demo_csv, plan_for, two_classes
from click.testing import CliRunner
from split_helpers import build_with_split, demo_with_patients

from orchestrator.cli.main import main
from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.captions import CaptionSettings
from orchestrator.dataset.classes import balanced_repeats, derived_trigger
from orchestrator.dataset.record import read_dataset
from orchestrator.generate.prompts import plan_items
from orchestrator.train.sample_prompts import sample_prompts


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _captions(folder: Path) -> list[str]:
    return [p.read_text(encoding="utf-8").strip() for p in sorted(folder.glob("*.caption"))]


@pytest.fixture(scope="module")
def reg_build(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("reg"), repeats=2, reg_diagnosis="nevus")


@pytest.fixture(scope="module")
def class_build(tmp_path_factory) -> Path:
    return two_classes(tmp_path_factory.mktemp("classes"), class_triggers={"nevus": "nevu5"})


# ----------------------------------------------------------------------------------------------- reg images

def test_reg_diagnosis_writes_a_reg_folder_of_that_diagnosis_captioned_without_the_trigger(reg_build):
    rows = {r["image_id"]: r for r in _manifest(reg_build)}
    reg = sorted((reg_build / "reg" / "1_nevus").glob("*.jpg"))
    assert len(reg) == 20 and len(list((reg_build / "train" / "2_melanoma").glob("*.jpg"))) == 20
    assert {rows[p.stem]["diagnosis"] for p in reg} == {"nevus"}
    assert {rows[p.stem]["folder"] for p in reg} == {"reg/1_nevus"}
    captions = _captions(reg_build / "reg" / "1_nevus")
    assert all(", nevus" in c and "me1anoma" not in c for c in captions)
    assert "photo of female skin, nevus on anterior torso, at age 55" in captions


def test_dataset_json_records_the_reg_folder_as_an_is_reg_subset(reg_build):
    subsets = read_dataset(reg_build).subsets
    assert [(s.image_dir.name, s.repeats, s.images, s.trigger, s.is_reg) for s in subsets] == [
        ("2_melanoma", 2, 20, "me1anoma", False), ("1_nevus", 1, 20, "nevus", True)]
    assert "reg/1_nevus" in (reg_build / "report.txt").read_text(encoding="utf-8")


def test_reg_images_are_cut_to_the_count_sd_scripts_uses(tmp_path):
    out = build(tmp_path, melanoma=3, reg_diagnosis="nevus", repeats=2)
    assert len(list((out / "reg" / "1_nevus").glob("*.jpg"))) == 3 * 2


def test_reg_diagnosis_never_takes_a_test_fold_image(tmp_path):
    out = build_with_split(tmp_path, demo_with_patients(tmp_path), "--reg-diagnosis", "nevus")
    lines = [line for line in (tmp_path / "split.csv").read_text().splitlines() if not line.startswith("#")]
    split = {r["image_id"]: r["fold"] for r in csv.DictReader(lines)}
    reg = [r for r in _manifest(out) if r["folder"].startswith("reg/")]
    assert reg and all(split[r["image_id"]] != "2" for r in reg)


def test_reg_diagnosis_equal_to_a_trained_diagnosis_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="reg_diagnosis.*other than the trained ones"):
        build(tmp_path, reg_diagnosis="Melanoma")


def test_reg_images_folder_is_captioned_with_the_generic_class_word(tmp_path):
    folder = tmp_path / "prior"
    folder.mkdir()
    for name in ("ISIC_0000000", "ISIC_0000001"):   # nevi of the demo, not in the melanoma training set
        shutil.copy(DEMO_DIR / "images" / f"{name}.jpg", folder / f"prior_{name}.jpg")
    out = build(tmp_path, reg_images=folder)
    assert _captions(out / "reg" / "1_skin_lesion") == ["photo of skin, skin lesion"] * 2
    shutil.copy(DEMO_DIR / "images" / "ISIC_0000002.jpg", folder / "ISIC_0000002.jpg")   # a training melanoma
    with pytest.raises(MedsynthError, match="ISIC_0000002 is also a training image"):
        build(tmp_path / "again", reg_images=folder)


# ----------------------------------------------------------------------------------------------- classes

def test_balanced_repeats_make_images_times_repeats_equal_across_classes():
    repeats = balanced_repeats({"melanoma": 5, "nevus": 20, "dermatofibroma": 7}, base=2)
    assert repeats == {"melanoma": 8, "nevus": 2, "dermatofibroma": 6}
    assert balanced_repeats({"a": 3, "b": 1000}, base=1) == {"a": 333, "b": 1}


@pytest.mark.parametrize("name, token", [("melanoma", "me1anoma"), ("nevus", "n3vus"),
                                         ("basal_cell_carcinoma", "basa1cellcarcinoma"), ("dermatofibroma", "d3rmatofibroma")])
def test_derived_triggers_swap_one_letter_for_a_look_alike_digit(name, token):
    assert derived_trigger(name) == token


def test_balance_classes_builds_one_folder_per_diagnosis_with_its_trigger(class_build):
    assert sorted(p.name for p in (class_build / "train").iterdir()) == ["1_nevus", "4_melanoma"]
    assert all("me1anoma" in c for c in _captions(class_build / "train" / "4_melanoma"))
    assert all("nevu5" in c and "me1anoma" not in c for c in _captions(class_build / "train" / "1_nevus"))
    folders = Counter((r["folder"], r["trigger"], r["diagnosis"]) for r in _manifest(class_build))
    assert folders == {("train/4_melanoma", "me1anoma", "melanoma"): 5, ("train/1_nevus", "nevu5", "nevus"): 20}


def test_report_shows_the_balance_of_images_times_repeats(class_build):
    report = (class_build / "report.txt").read_text(encoding="utf-8")
    assert "train/4_melanoma" in report and "5 x 4   =      20   50.0%" in report
    assert "20 x 1   =      20   50.0%" in report


def test_mixing_diagnoses_without_balance_classes_is_still_refused(tmp_path):
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(demo_csv(tmp_path)), "--images",
                                    str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--diagnosis", "melanoma",
                                    "--diagnosis", "nevus", "--dry-run"])
    assert run.exit_code == 1 and "mixes classes" in run.output and "--balance-classes" in run.output


def test_dry_run_of_two_classes_lists_both_folders_and_the_balance(tmp_path):
    (tmp_path / "prior").mkdir()
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(demo_csv(tmp_path, melanoma=5)), "--images",
                                    str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--diagnosis", "melanoma",
                                    "--diagnosis", "nevus", "--balance-classes", "--reg-images", str(tmp_path / "prior"),
                                    "--dry-run"])
    assert run.exit_code == 1 and "prior: holds no .jpg, .jpeg or .png image" in run.output
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(demo_csv(tmp_path, melanoma=5)), "--images",
                                    str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--diagnosis", "melanoma",
                                    "--diagnosis", "nevus", "--balance-classes", "--dry-run"])
    assert run.exit_code == 0, run.output
    assert "ds/train/4_melanoma/, " in run.output and "ds/train/1_nevus/ (nothing written)" in run.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("args, message", [
    (["--trigger", "bcc=bcc1"], "--trigger bcc=...: no such class among melanoma, nevus"),
    (["--trigger", "nevus=me1anoma"], "trigger 'me1anoma' is not one class's own word"),
    (["--trigger", "x1"], "--trigger x1: give one trigger, or with --balance-classes CLASS=TOKEN"),
    (["--class", "lesions"], "--class names one class: with --balance-classes each diagnosis names its own folder"),
])
def test_bad_per_class_triggers_are_one_line_errors(tmp_path, args, message):
    run = CliRunner().invoke(main, ["dataset", "build", "--csv", str(demo_csv(tmp_path)), "--images",
                                    str(DEMO_DIR / "images"), "--out", str(tmp_path / "ds"), "--diagnosis", "melanoma",
                                    "--diagnosis", "nevus", "--balance-classes", "--dry-run", *args])
    assert run.exit_code == 1 and message in run.output and run.output.count("\n") == 1, run.output


# ----------------------------------------------------------------------------------------------- training

def test_dataset_toml_has_one_subset_per_folder_and_reg_as_is_reg(reg_build, class_build, tmp_path):
    reg = toml.loads(plan_for(reg_build, tmp_path / "r").files["dataset.toml"])["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s["num_repeats"], s["class_tokens"], s.get("is_reg")) for s in reg] == [
        ("2_melanoma", 2, "me1anoma", None), ("1_nevus", 1, "nevus", True)]
    two = toml.loads(plan_for(class_build, tmp_path / "c").files["dataset.toml"])["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s["num_repeats"], s["class_tokens"]) for s in two] == [
        ("4_melanoma", 4, "me1anoma"), ("1_nevus", 1, "nevu5")]


def test_reg_images_double_the_steps_and_the_plan_says_so(reg_build, tmp_path):
    plan = plan_for(reg_build, tmp_path)
    assert plan.schedule.samples == 20 * 2 and plan.schedule.reg_samples == 40
    assert plan.schedule.steps_per_epoch == 80   # batch 1
    assert "20 images × 2 repeats + 40 reg images ÷ batch 1 = 80 steps/epoch" in plan.schedule.describe()


def test_two_classes_add_up_their_images_times_repeats(class_build, tmp_path):
    plan = plan_for(class_build, tmp_path, "train_batch_size=3")
    assert plan.schedule.steps_per_epoch == math.ceil((5 * 4 + 20 * 1) / 3)
    assert "(5 × 4 + 20 × 1) ÷ batch 3" in plan.schedule.describe()
    assert json.loads(json.dumps(plan.schedule.__dict__))["samples"] == 40


def test_masked_loss_masks_the_training_images_and_trains_reg_images_whole(tmp_path):
    out = build(tmp_path, melanoma=3, nevus=3, reg_diagnosis="nevus", masks="auto")
    assert {p.suffix for p in (out / "train" / "1_melanoma").iterdir() if p.suffix != ".caption"} == {".png"}
    assert {p.suffix for p in (out / "reg" / "1_nevus").iterdir() if p.suffix != ".caption"} == {".jpg"}
    files = plan_for(out, tmp_path, "masked_loss=true", "validation_split=0.34").files   # validated in prepare
    subsets = toml.loads(files["dataset.toml"])["datasets"][0]["subsets"]
    assert [(s.get("is_reg", False), s.get("alpha_mask", False)) for s in subsets] == [(False, True), (True, False)]


def test_sample_prompts_come_from_every_class_and_never_from_reg_images(class_build, reg_build):
    texts = [p.text for p in sample_prompts(class_build / "manifest.csv", count=4, base_seed=0)]
    assert len(texts) == 4 and sum("me1anoma" in t for t in texts) == 2 and sum("nevu5" in t for t in texts) == 2
    assert all("me1anoma" in p.text for p in sample_prompts(reg_build / "manifest.csv", count=6, base_seed=0))


def test_a_sweep_cache_folder_refuses_a_dataset_of_several_folders(reg_build, tmp_path):
    with pytest.raises(MedsynthError, match="2 folders .* cannot share one cache folder"):
        read_dataset(reg_build).with_image_dir(tmp_path)


# ----------------------------------------------------------------------------------------------- generation

def test_generate_balances_diagnoses_in_each_class_trigger(class_build):
    items = plan_items(class_build / "manifest.csv", 40, seed=1, balance="diagnosis", settings=CaptionSettings())
    assert Counter(i.row["diagnosis"] for i in items) == {"melanoma": 20, "nevus": 20}
    assert all(("nevu5" in i.prompt) == (i.row["diagnosis"] == "nevus") for i in items)


def test_generate_never_draws_a_reg_image(reg_build):
    items = plan_items(reg_build / "manifest.csv", 30, seed=0, balance=None, settings=CaptionSettings())
    assert {i.row["folder"] for i in items} == {"train/2_melanoma"}


def test_a_hand_edited_subset_in_dataset_json_is_a_one_line_error(tmp_path, reg_build):
    out = tmp_path / "ds"
    shutil.copytree(reg_build, out)
    record = json.loads((out / "dataset.json").read_text())
    record["subsets"][1]["is_reg"] = "yes"
    (out / "dataset.json").write_text(json.dumps(record))
    with pytest.raises(MedsynthError, match=r"dataset.json.*is_reg.*must be true or false") as info:
        read_dataset(out)
    assert "\n" not in str(info.value)
