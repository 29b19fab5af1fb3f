"""Reading a sweep file: grid expansion, explicit runs, run names (readable, safe, unique), and its errors."""

from __future__ import annotations

import itertools
import re

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.common.paths import TEMPLATES_DIR
from orchestrator.sweep.spec import MAX_NAME, name_part, read_sweep


def sweep_file(tmp_path, text: str, name: str = "sweep.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GRID = """
name = "lr-opt"
[fixed]
max_train_epochs = 3
[grid]
learning_rate = [4e-7, 1e-5, 8e-5]
optimizer_type = ["AdamW8bit", "Adafactor"]
lr_scheduler = ["constant_with_warmup", "cosine"]
"""


def test_grid_expands_to_every_combination_with_the_first_key_slowest(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, GRID))
    lrs, opts, scheds = [4e-7, 1e-5, 8e-5], ["AdamW8bit", "Adafactor"], ["constant_with_warmup", "cosine"]
    expected = [{"learning_rate": lr, "optimizer_type": o, "lr_scheduler": s}
                for lr, o, s in itertools.product(lrs, opts, scheds)]
    assert [dict(r.params) for r in sweep.runs] == expected
    assert [dict(r.layer.values) for r in sweep.runs] == expected
    assert sweep.fixed.values == {"max_train_epochs": 3}
    assert sweep.varying == ("learning_rate", "optimizer_type", "lr_scheduler")


def test_run_names_are_made_from_the_varying_values(tmp_path):
    names = [r.name for r in read_sweep(sweep_file(tmp_path, GRID)).runs]
    assert names[1] == "lr4e-07_AdamW8bit_cosine"
    assert names[-1] == "lr8e-05_Adafactor_cosine"
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", n) for n in names)


def test_a_grid_key_with_one_value_is_not_part_of_the_names(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, "[grid]\nnetwork_dim = [64]\nlearning_rate = [1e-5, 2e-5]\n"))
    assert [r.name for r in sweep.runs] == ["lr1e-05", "lr2e-05"]
    assert all(r.layer.values["network_dim"] == 64 for r in sweep.runs)
    assert sweep.varying == ("learning_rate",)


def test_the_sweep_is_named_after_its_file_by_default(tmp_path):
    assert read_sweep(sweep_file(tmp_path, "[grid]\nseed = [1, 2]\n", "my-sweep.toml")).name == "my-sweep"


@pytest.mark.parametrize("key, value, part", [
    ("learning_rate", 4e-7, "lr4e-07"), ("network_dim", 64, "dim64"), ("flip_aug", True, "flip_aug"),
    ("flip_aug", False, "no-flip_aug"), ("vae", None, "no-vae"), ("optimizer_type", "AdamW8bit", "AdamW8bit"),
    ("vae", "/models/sdxl vae.safetensors", "sdxl-vae.safetensors"),
    ("optimizer_args", ["weight_decay=0.1"], "optimizer_args-weight_decay-0.1"),
    ("kohya.noise_offset", 0.05, "noise_offset0.05"),
])
def test_name_parts_are_short_and_filesystem_safe(key, value, part):
    assert name_part(key, value) == part


def test_names_that_collide_after_cleaning_get_a_number(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, '[grid]\nkohya.log_prefix = ["a/b", "a b", "a?b"]\n'))
    assert [r.name for r in sweep.runs] == ["a-b", "a-b-2", "a-b-3"]


def test_names_that_differ_only_in_case_are_kept_apart(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, '[grid]\noptimizer_type = ["AdamW", "adamw"]\n'))
    names = [r.name for r in sweep.runs]
    assert names[0] == "AdamW" and names[1].casefold() != names[0].casefold()


def test_very_long_names_are_shortened_and_stay_distinct(tmp_path):
    long_a, long_b = "x" * 150 + "a", "x" * 150 + "b"
    sweep = read_sweep(sweep_file(tmp_path, f'[grid]\nkohya.log_prefix = ["{long_a}", "{long_b}"]\n'))
    names = [r.name for r in sweep.runs]
    assert all(len(n) <= MAX_NAME for n in names)
    assert names[0] != names[1]


def test_explicit_runs_use_their_run_name_or_their_own_values(tmp_path):
    text = """
[[runs]]
run_name = "blog-low"
learning_rate = 4e-7
[[runs]]
learning_rate = 8e-5
optimizer_type = "Adafactor"
[[runs]]
"""
    sweep = read_sweep(sweep_file(tmp_path, text))
    assert [r.name for r in sweep.runs] == ["blog-low", "lr8e-05_Adafactor", "base"]
    assert dict(sweep.runs[1].layer.values) == {"learning_rate": 8e-5, "optimizer_type": "Adafactor"}
    assert "run_name" not in sweep.runs[0].layer.values


def test_an_automatic_name_does_not_take_an_explicit_one(tmp_path):
    text = '[[runs]]\nlearning_rate = 1e-5\n[[runs]]\nrun_name = "lr1e-05"\nlearning_rate = 2e-5\n'
    assert [r.name for r in read_sweep(sweep_file(tmp_path, text)).runs] == ["lr1e-05-2", "lr1e-05"]


def test_the_same_run_name_twice_is_an_error(tmp_path):
    text = '[[runs]]\nrun_name = "a"\nseed = 1\n[[runs]]\nrun_name = "A"\nseed = 2\n'
    with pytest.raises(MedsynthError, match="run_name 'a' is used by more than one run"):
        read_sweep(sweep_file(tmp_path, text))


def test_a_kohya_table_in_the_grid_becomes_kohya_keys(tmp_path):
    sweep = read_sweep(sweep_file(tmp_path, "[grid.kohya]\nnoise_offset = [0.0, 0.05]\n"))
    assert [dict(r.layer.values) for r in sweep.runs] == [{"kohya.noise_offset": 0.0}, {"kohya.noise_offset": 0.05}]
    assert [r.name for r in sweep.runs] == ["noise_offset0", "noise_offset0.05"]


def test_relative_paths_are_relative_to_the_sweep_file(tmp_path):
    (tmp_path / "sub").mkdir()
    sweep = read_sweep(sweep_file(tmp_path / "sub", 'dataset = "../ds"\n[grid]\nseed = [1, 2]\n'))
    assert sweep.base.values["dataset"].resolve() == (tmp_path / "ds").resolve()


@pytest.mark.parametrize("text, message", [
    ("[grid]\nlearning_rte = [1e-5]\n", r"sweep.toml \[grid\]: unknown train setting 'learning_rte'; "
                                        r"did you mean 'learning_rate'\?"),
    ('[fixed]\nnetwork_dim = "big"\n[grid]\nseed = [1, 2]\n', r"sweep.toml \[fixed\]: 'network_dim' must be an integer"),
    ('[grid]\nlearning_rate = ["fast", "slow"]\n', r"sweep.toml \[grid\]: 'learning_rate' must be a number"),
    ("[grid]\nlearning_rate = 1e-5\n", r"'learning_rate' must be a non-empty list of values.*\[fixed\]"),
    ("[grid]\nlearning_rate = []\n", r"'learning_rate' must be a non-empty list"),
    ("[grid]\n", r"\[grid\] is empty"),
    ("[fixed]\nseed = 1\n", r"either a \[grid\] table or a list of \[\[runs\]\]"),
    ("[grid]\nseed = [1]\n[[runs]]\nseed = 2\n", r"either a \[grid\] table or a list of \[\[runs\]\]"),
    ("[fixed]\nseed = 1\n[grid]\nseed = [1, 2]\n", r"'seed' is in \[fixed\] and varies too"),
    ("gird = 1\n[grid]\nseed = [1]\n", r"unknown sweep key 'gird'; did you mean 'grid'\?"),
    ('name = "a b"\n[grid]\nseed = [1]\n', r"'name' 'a b' becomes a folder"),
    ("[grid]\nrun_name = ['a']\n", r"\[grid\] cannot hold 'run_name'"),
    ("[[runs]]\nlearning_rate = 'x'\n", r"sweep.toml \[\[runs\]\] #1: 'learning_rate' must be a number"),
    ("[grid]\npreset = ['default']\n", r"set 'preset' at the top of the file"),
    ("[grid\nseed = [1]\n", r"sweep.toml: not valid TOML"),
    ("grid = 5\n", r"sweep.toml: \[grid\] must be a table"),
])
def test_bad_sweep_files_are_one_line_errors_naming_the_file_and_key(tmp_path, text, message):
    with pytest.raises(MedsynthError, match=message) as info:
        read_sweep(sweep_file(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(tmp_path / "sweep.toml") in str(info.value)


def test_a_file_name_that_cannot_be_a_folder_asks_for_a_name(tmp_path):
    path = tmp_path / "my sweep.toml"
    path.write_text("[grid]\nseed = [1, 2]\n")
    with pytest.raises(MedsynthError, match=r"'my sweep' \(from the file name: set name = .*\) becomes a folder"):
        read_sweep(path)


def test_the_example_sweep_expands_to_its_twelve_runs():
    sweep = read_sweep(TEMPLATES_DIR / "sweeps" / "lr-optimizer.toml")
    assert sweep.name == "lr-optimizer"
    assert len(sweep.runs) == 3 * 2 * 2
    assert "lr4e-07_AdamW8bit_cosine" in [r.name for r in sweep.runs]
