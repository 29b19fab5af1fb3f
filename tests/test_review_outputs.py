"""Finding sd-scripts' sample images in a run folder: names, resume duplicates, files still being written."""

from __future__ import annotations

import argparse
import os
import re
import time

import pytest

from orchestrator.runs.outputs import Column, event_files, find_samples, parse_sample_name, png_complete
from orchestrator.common.paths import SD_SCRIPTS_DIR
from review_helpers import OUTPUT_NAME, sample_name, write_events, write_sample, write_torn_sample


def sd_scripts_sample_name(output_name: str | None, epoch: int | None, steps: int, index: int,
                           seed: int | None) -> str:
    """The file name as the pinned train_util.sample_image_inference builds it (its own lines, executed)."""
    source = (SD_SCRIPTS_DIR / "library" / "train_util.py").read_text(encoding="utf-8")
    wanted = ("ts_str = ", "num_suffix = ", "seed_suffix = ", "img_filename = ")
    lines = [line.strip() for line in source.splitlines() if line.strip().startswith(wanted)]
    assert len(lines) == 4, lines
    scope = {"time": time, "args": argparse.Namespace(output_name=output_name), "epoch": epoch, "steps": steps,
             "seed": seed, "i": index}
    exec("\n".join(lines), scope)  # noqa: S102  (the pinned sd-scripts' own naming code)
    return scope["img_filename"]


@pytest.mark.parametrize("output_name, epoch, steps, index, seed, column", [
    ("melanoma_lora", 3, 120, 1, 1001, Column("epoch", 3)),
    ("melanoma_lora", 0, 0, 0, 1000, Column("epoch", 0)),          # sample_at_first
    ("melanoma_lora", None, 1200, 12, None, Column("step", 1200)),  # step-based, no seed
    (None, 2, 40, 4, 7, Column("epoch", 2)),                        # no output_name: no prefix
    ("mel_2e-5_cosine", 1, 5, 0, 42, Column("epoch", 1)),
])
def test_sample_names_made_by_sd_scripts_code_are_recognised(output_name, epoch, steps, index, seed, column):
    if not (SD_SCRIPTS_DIR / "library" / "train_util.py").is_file():
        pytest.skip("vendor/sd-scripts is empty: run 'git submodule update --init' (needs network)")
    name = sd_scripts_sample_name(output_name, epoch, steps, index, seed)
    sample = parse_sample_name(name, output_name)
    assert sample is not None, name
    assert (sample.column, sample.prompt_index, sample.seed) == (column, index, seed)
    assert re.fullmatch(r"\d{14}", sample.timestamp)


def test_other_output_names_and_other_files_are_not_samples():
    assert parse_sample_name("other_lora_e000001_00_20261126040714_42.png", OUTPUT_NAME) is None
    assert parse_sample_name(f"{OUTPUT_NAME}_e000001_00_20261126040714_42.jpg", OUTPUT_NAME) is None
    assert parse_sample_name(f"{OUTPUT_NAME}_e000001_00_2026112604071_42.png", OUTPUT_NAME) is None
    assert parse_sample_name(f"{OUTPUT_NAME}-000001.safetensors", OUTPUT_NAME) is None


def test_newest_timestamp_wins_after_a_resume(tmp_path):
    run = tmp_path / "run"
    write_sample(run, sample_name(epoch=2, index=0, ts="20261126040000", seed=1000), (10, 10, 10))
    newer = write_sample(run, sample_name(epoch=2, index=0, ts="20261126050000", seed=1000), (20, 20, 20))
    first = write_sample(run, sample_name(epoch=0, index=0, ts="20261126030000", seed=1000), (30, 30, 30))
    again = write_sample(run, sample_name(epoch=0, index=0, ts="20261126045000", seed=1000), (40, 40, 40))
    found = find_samples(run / "sample", OUTPUT_NAME)
    assert found[(Column("epoch", 2), 0)].path == newer
    assert found[(Column("epoch", 0), 0)].path == again != first
    assert len(found) == 2


def test_a_sample_still_being_written_is_passed_over_for_the_older_one(tmp_path):
    run = tmp_path / "run"
    older = write_sample(run, sample_name(epoch=1, index=0, ts="20261126040000", seed=1000), (10, 10, 10))
    torn = write_torn_sample(run, sample_name(epoch=1, index=0, ts="20261126050000", seed=1000))
    alone = write_torn_sample(run, sample_name(epoch=2, index=0, ts="20261126060000", seed=1000))
    assert not png_complete(torn) and png_complete(older)
    found = find_samples(run / "sample", OUTPUT_NAME)
    assert found[(Column("epoch", 1), 0)].path == older
    assert (Column("epoch", 2), 0) not in found and alone.exists()


def test_no_sample_folder_means_no_samples(tmp_path):
    assert find_samples(tmp_path / "sample", OUTPUT_NAME) == {}


def test_columns_order_epoch_ends_and_steps_on_one_axis():
    columns = [Column("step", 30), Column("epoch", 2), Column("epoch", 0), Column("step", 10)]
    ordered = sorted(columns, key=lambda c: c.position(10))
    assert ordered == [Column("epoch", 0), Column("step", 10), Column("epoch", 2), Column("step", 30)]
    assert Column("epoch", 0).label == "epoch 0 (before training)" and Column("step", 30).label == "step 30"


def test_event_files_of_every_launch_are_found_oldest_first(tmp_path):
    run = tmp_path / "run"
    first = write_events(run / "logs" / "20261126040000" / "network_train", {"loss/current": [(1, 1.0)]})
    second = write_events(run / "logs" / "20261126050000" / "network_train", {"loss/current": [(2, 1.0)]})
    stat = first.stat()
    os.utime(first, ns=(stat.st_atime_ns, second.stat().st_mtime_ns - 10**9))
    assert event_files(run) == [first, second]


def test_event_files_fall_back_to_the_configured_logging_dir(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "tb"
    run.mkdir()
    found = write_events(elsewhere / "x" / "network_train", {"lr/unet": [(1, 1e-5)]})
    assert event_files(run) == []
    assert event_files(run, elsewhere) == [found]
