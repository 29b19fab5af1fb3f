"""Validation loss: the validation_split settings through the typed config, the templates (parsed back) and the dry
run's step arithmetic; the review's validation curve, best-epoch mark and overfitting message on TensorBoard files
written by tensorboard's own writer; and `medsynth generate --epoch best`. sd-scripts' own reading of the rendered
files and of its split is in tests/test_kohya_parsers.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import toml
from click.testing import CliRunner

from generate_helpers import make_run as make_lora_run
from orchestrator.cli.generate import generate as generate_command
from orchestrator.cli.train import train as train_command
from orchestrator.common.errors import MedsynthError
from orchestrator.generate import plan as gen
from orchestrator.review.draw import plot_loss
from orchestrator.review.grid import review_run
from orchestrator.runs.validation import TRAIN_EPOCH_TAG, VAL_EPOCH_TAG, VAL_STEP_TAG, best_epoch, overfitting
from orchestrator.train.config import TrainConfig
from orchestrator.train.plan import prepare
from orchestrator.train.schedule import schedule, split_counts
from orchestrator.train.settings import load_settings
from review_helpers import make_run, write_events
from orchestrator.runs.tfevents import read_scalars
from train_helpers import make_dataset

# training loss falls every epoch; validation loss is lowest at epoch 2, then rises: overfitting
OVERFIT = {TRAIN_EPOCH_TAG: [(1, 0.30), (2, 0.25), (3, 0.20), (4, 0.15)],
           VAL_EPOCH_TAG: [(1, 0.40), (2, 0.31), (3, 0.35), (4, 0.38)],
           VAL_STEP_TAG: [(10, 0.41), (20, 0.33), (30, 0.36)]}
HEALTHY = {TRAIN_EPOCH_TAG: [(1, 0.30), (2, 0.25), (3, 0.20)], VAL_EPOCH_TAG: [(1, 0.40), (2, 0.35), (3, 0.33)]}


def _plan(tmp_path: Path, *sets: str, images: int = 6, **groups):
    rows = [("female", "torso", str(40 + i), False) for i in range(images)]
    settings = load_settings(preset_name="default", cwd=tmp_path, sets=["train_batch_size=2", *sets],
                             options={"dataset": str(make_dataset(tmp_path / "ds", rows, repeats=3, **groups)),
                                      "runs_dir": str(tmp_path / "runs")})
    return prepare(settings, gpus=None, run_name="val")


def _files(plan) -> tuple[dict, dict]:
    return toml.loads(plan.files["train.toml"]), toml.loads(plan.files["dataset.toml"])


def _events(run_dir: Path, scalars) -> Path:
    return write_events(run_dir / "logs" / "20260101120000" / "network_train", scalars)


# ----------------------------------------------------------------------------------------------- config and files

def test_no_validation_renders_a_float_zero_split_and_no_validation_options(tmp_path):
    train, dataset = _files(_plan(tmp_path))
    assert dataset["general"]["validation_split"] == 0.0 and isinstance(dataset["general"]["validation_split"], float)
    assert "validation" not in train


def test_a_validation_split_set_as_an_integer_is_rendered_as_the_float_sd_scripts_needs(tmp_path):
    plan = _plan(tmp_path, "validation_split=0")
    assert re.search(r"^validation_split = 0\.0$", plan.files["dataset.toml"], flags=re.M)


def test_validation_settings_render_where_sd_scripts_reads_them_and_parse_back(tmp_path):
    plan = _plan(tmp_path, "validation_split=0.2", "validate_every_n_epochs=2", "validate_every_n_steps=5",
                 "max_validation_steps=4")
    train, dataset = _files(plan)
    assert dataset["general"]["validation_split"] == 0.2
    assert train["validation"] == {"validation_seed": plan.config.seed, "validate_every_n_epochs": 2,
                                   "validate_every_n_steps": 5, "max_validation_steps": 4}


def test_an_own_validation_seed_replaces_the_runs_seed(tmp_path):
    train, _ = _files(_plan(tmp_path, "validation_split=0.5", "validation_seed=99"))
    assert train["validation"]["validation_seed"] == 99 and train["training"]["seed"] == 42


@pytest.mark.parametrize("item, message", [
    ("validation_split=1.0", "'validation_split' must be at least 0 and below 1"),
    ("validation_split=-0.1", "'validation_split' must be at least 0 and below 1"),
    ("validation_split=true", "'validation_split' must be a number"),
    ("validation_splt=0.1", "did you mean 'validation_split'"),
    ("validate_every_n_epochs=2", "'validate_every_n_epochs' takes effect only with validation_split > 0"),
    ("max_validation_steps=3", "'max_validation_steps' takes effect only with validation_split > 0"),
])
def test_bad_validation_settings_are_refused_in_one_line(tmp_path, item, message):
    with pytest.raises(MedsynthError, match=re.escape(message)) as info:
        _plan(tmp_path, item)
    assert "\n" not in str(info.value)


def test_a_zero_validation_interval_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="'validate_every_n_steps' must be >= 1"):
        _plan(tmp_path, "validation_split=0.5", "validate_every_n_steps=0")


def test_a_split_that_holds_out_no_image_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match=r"validation_split 0.05 of 6 images holds out none"):
        _plan(tmp_path, "validation_split=0.05")


# ----------------------------------------------------------------------------------------------- step arithmetic

@pytest.mark.parametrize("images, split, expected", [
    (10, 0.2, (8, 2)), (6, 0.25, (5, 2)), (10, 0.7, (4, 7)), (3, 0.1, (3, 0)), (7, 0.0, (7, 0))])
def test_split_counts_follow_sd_scripts_rounding(images, split, expected):
    assert split_counts(images, split) == expected  # (10, 0.7): ceil(10 × 0.30000000000000004) = 4, not 3


def test_held_out_images_leave_the_steps_and_are_batched_without_repeats():
    cfg = TrainConfig(train_batch_size=2, max_train_epochs=4, validation_split=0.25, max_validation_steps=1)
    s = schedule(cfg, subsets=[(20, 3, False)])
    assert (s.images, s.validation_images, s.validation_overlap) == (15, 5, 0)
    assert s.steps_per_epoch == 23 and s.total_steps == 92  # ceil(15 × 3 / 2)
    assert s.validation_batches == 1  # ceil(5 / 2) = 3, capped by max_validation_steps
    assert "validation: 5 of 20 images held out by image, 1 batches × 4 timesteps every " \
           "epoch" in s.describe()


def test_each_class_is_split_alone_before_its_repeats_and_the_reg_folder_never():
    # 5 → 4 train + 1 held out, 20 → 15 + 5; the 30 reg images are all kept and matched to the 4 × 4 + 15 × 1
    s = schedule(TrainConfig(train_batch_size=1, validation_split=0.25),
                 subsets=[(5, 4, False), (20, 1, False), (30, 1, True)])
    assert (s.images, s.samples, s.reg_samples, s.validation_images) == (19, 31, 31, 6)
    assert s.steps_per_epoch == 62
    assert "steps: (4 × 4 + 15 × 1) + 31 reg images ÷ batch 1 = 62 steps/epoch" in s.describe()
    assert "validation: 6 of 25 images held out" in s.describe()


def test_the_dry_run_says_when_one_image_is_both_trained_on_and_held_out():
    s = schedule(TrainConfig(train_batch_size=1, validation_split=0.25), subsets=[(6, 1, False)])
    assert s.validation_overlap == 1 and "WARNING: 1 image(s) also trained on" in s.describe()


def test_validation_interval_beyond_the_run_says_validation_never_runs_at_epoch_end():
    cfg = TrainConfig(train_batch_size=1, max_train_epochs=3, validation_split=0.5, validate_every_n_epochs=5)
    assert "never at epoch end" in schedule(cfg, subsets=[(4, 1, False)]).describe()


def test_dry_run_prints_the_held_out_images_and_renders_the_split(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    monkeypatch.chdir(tmp_path / "bin")
    ds = make_dataset(tmp_path / "ds", repeats=2)
    result = CliRunner().invoke(train_command, [
        "--dry-run", "--dataset", str(ds), "--sd-scripts", str(tmp_path / "nowhere"), "--run-name", "demo",
        "--set", f"runs_dir={json.dumps(str(tmp_path / 'runs'))}", "--set", "validation_split=0.5",
        "--set", "train_batch_size=1"], env={"PATH": str(tmp_path / "bin")}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "steps: 3 images × 2 repeats ÷ batch 1 = 6 steps/epoch" in result.output
    assert "validation: 3 of 6 images held out by image" in result.output
    assert "validation_split = 0.5" in result.output


# ----------------------------------------------------------------------------------------------- review

def test_the_lowest_validation_epoch_and_overfitting_are_read_from_real_event_files(tmp_path):
    scalars = read_scalars([_events(tmp_path, OVERFIT)])
    best = best_epoch(scalars)
    assert (best.step, best.value) == (2, pytest.approx(0.31))
    message = overfitting(scalars)
    assert message.startswith("overfitting: validation loss rose from 0.31 at epoch 2 to 0.38 at epoch 4 while "
                              "training loss fell from 0.25 to 0.15")


def test_falling_validation_loss_is_not_called_overfitting(tmp_path):
    scalars = read_scalars([_events(tmp_path, HEALTHY)])
    assert overfitting(scalars) is None and best_epoch(scalars).step == 3


def test_validation_loss_rising_with_training_loss_is_not_called_overfitting(tmp_path):
    both_rise = {TRAIN_EPOCH_TAG: [(1, 0.20), (2, 0.18), (3, 0.30)], VAL_EPOCH_TAG: [(1, 0.40), (2, 0.30), (3, 0.45)]}
    scalars = read_scalars([_events(tmp_path, both_rise)])
    assert best_epoch(scalars).step == 2 and overfitting(scalars) is None  # diverging, not memorizing


def test_a_run_without_validation_has_no_best_epoch_and_no_message(tmp_path):
    scalars = read_scalars([_events(tmp_path, {TRAIN_EPOCH_TAG: [(1, 0.3), (2, 0.2)]})])
    assert best_epoch(scalars) is None and overfitting(scalars) is None


def test_the_loss_plot_draws_validation_beside_training_and_marks_the_best_epoch(tmp_path):
    scalars = read_scalars([_events(tmp_path, OVERFIT)])
    drawn = plot_loss({"r1": scalars}, tmp_path / "loss.png", show_current=True)
    assert drawn["lowest validation loss"] == ([2], [pytest.approx(0.31)])
    assert drawn[VAL_EPOCH_TAG][0] == [1, 2, 3, 4] and drawn[VAL_STEP_TAG][0] == [10, 20, 30]
    assert drawn[TRAIN_EPOCH_TAG][0] == [1, 2, 3, 4] and (tmp_path / "loss.png").stat().st_size > 0


def test_the_run_review_says_overfitting_and_shows_the_lowest_validation_loss(tmp_path):
    run = make_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=4, sets=["validation_split=0.5"])
    _events(run, OVERFIT)
    review = review_run(run)
    assert any(note.startswith("overfitting: validation loss rose") for note in review.notes)
    assert dict(review.settings)["lowest validation loss"] == "0.31 at epoch 2"


# ----------------------------------------------------------------------------------------------- generate

def _lora_run(tmp_path: Path, scalars=None) -> Path:
    run = make_lora_run(tmp_path, make_dataset(tmp_path / "ds"), epochs=4, sets=["validation_split=0.5"])
    if scalars is not None:
        _events(run, scalars)
    return run


def test_epoch_best_picks_the_lora_of_the_lowest_validation_loss(tmp_path):
    plan = gen.plan_generation(_lora_run(tmp_path, OVERFIT), count=2, epoch="best", hash_lora=False)
    assert plan.lora.name == "melanoma_lora-000002.safetensors" and plan.settings.epoch == 2
    assert "--epoch best: epoch 2: lowest validation loss 0.31" in plan.notes


def test_epoch_best_uses_the_best_kept_lora_when_the_lowest_was_not_kept(tmp_path):
    run = _lora_run(tmp_path, OVERFIT)
    (run / "melanoma_lora-000002.safetensors").unlink()
    plan = gen.plan_generation(run, count=2, epoch="best", hash_lora=False)
    assert plan.settings.epoch == 3
    assert any("among the kept LoRA files (epoch 2, 0.31, was not kept)" in n for n in plan.notes)


def test_epoch_best_without_validation_loss_is_a_clear_error(tmp_path):
    run = _lora_run(tmp_path, {TRAIN_EPOCH_TAG: [(1, 0.3), (2, 0.2)]})
    with pytest.raises(MedsynthError, match=r"--epoch best needs validation loss .* the run logged none: train with "
                                            r"a held-out share \(--set validation_split=0.1\)"):
        gen.plan_generation(run, count=2, epoch="best", hash_lora=False)


@pytest.mark.parametrize("value, message", [("worst", "'worst' is neither an epoch number nor 'best'"),
                                            ("0", "0 is not an epoch")])
def test_the_epoch_option_takes_a_number_or_best(tmp_path, value, message):
    run = _lora_run(tmp_path)
    result = CliRunner().invoke(generate_command, [str(run), "--count", "1", "--epoch", value, "--dry-run"])
    assert result.exit_code == 2 and message in result.output


def test_generate_dry_run_with_epoch_best_names_the_chosen_lora(tmp_path):
    run = _lora_run(tmp_path, HEALTHY)
    result = CliRunner().invoke(generate_command, [str(run), "--count", "1", "--epoch", "best", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "epoch 3: lowest validation loss 0.33" in result.output
