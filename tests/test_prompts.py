"""Sample prompts from the dataset manifest's most frequent (sex, site, age band) combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.age import age_band
from orchestrator.train.sample_prompts import prompts_from_manifest, sample_prompts
from train_helpers import caption_for, make_dataset


def test_age_band_is_the_decade():
    assert age_band("57") == "50s" and age_band("50.0") == "50s" and age_band("") is None and age_band("x") is None


def test_the_report_and_generate_band_ages_as_the_sample_prompts_do():
    import pandas as pd

    from orchestrator.dataset.report import MISSING, summarise
    from orchestrator.generate.prompts import field_values

    assert age_band(57) == age_band(57.0) == "50s" and age_band(pd.NA) is None and age_band(float("nan")) is None
    table = pd.DataFrame({"sex": ["male", "female", "male"], "site": ["torso"] * 3,
                          "age": pd.array([57, 75, None], dtype="Int64")})
    assert summarise(table, hair=None, skipped=0).by_field["age band"] == {"50s": 1, "70s": 1, MISSING: 1}
    rows = pd.DataFrame({"age": ["57", "75.0", ""]})
    assert field_values(rows, "age_band", Path("manifest.csv")).tolist() == ["50s", "70s", ""]


def test_most_frequent_combination_comes_first_in_caption_wording(tmp_path):
    rows = [("female", "lower extremity", "50", False)] * 3 + [("male", "torso", "70", False)] * 2 \
        + [("male", "head/neck", "30", False)]
    ds = make_dataset(tmp_path / "ds", rows)
    prompts = prompts_from_manifest(ds / "manifest.csv", 2)
    assert [p for p, _ in prompts] == [caption_for("female", "lower extremity", "50", False),
                                       caption_for("male", "torso", "70", False)]
    assert "3 images" in prompts[0][1]


def test_ages_in_one_band_form_one_combination(tmp_path):
    rows = [("female", "torso", "50", False), ("female", "torso", "55", False), ("female", "torso", "55", False),
            ("male", "torso", "30", False), ("male", "torso", "40", False)]
    ds = make_dataset(tmp_path / "ds", rows)
    (first, origin), *_ = prompts_from_manifest(ds / "manifest.csv", 1)
    assert "3 images female/torso/50s" in origin
    assert first == caption_for("female", "torso", "55", False)  # the band's most frequent caption


def test_non_hairy_caption_is_preferred(tmp_path):
    rows = [("female", "torso", "50", True), ("female", "torso", "50", True), ("female", "torso", "50", False)]
    ds = make_dataset(tmp_path / "ds", rows)
    (text, _), = prompts_from_manifest(ds / "manifest.csv", 1)
    assert not text.endswith("hairy")


def test_skipped_rows_do_not_make_prompts(tmp_path):
    ds = make_dataset(tmp_path / "ds", [("male", "torso", "70", False)], skipped=5)
    texts = [p for p, _ in prompts_from_manifest(ds / "manifest.csv", 4)]
    assert texts == [caption_for("male", "torso", "70", False)]


def test_each_prompt_gets_its_own_fixed_seed(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    prompts = sample_prompts(ds / "manifest.csv", count=3, base_seed=500)
    assert [p.seed for p in prompts] == [500, 501, 502]
    assert prompts == sample_prompts(ds / "manifest.csv", count=3, base_seed=500)  # the same every call


def test_config_texts_replace_the_manifest(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    prompts = sample_prompts(ds / "manifest.csv", count=3, base_seed=1, texts=("a", "b"))
    assert [p.text for p in prompts] == ["a", "b"] and [p.seed for p in prompts] == [1, 2]


def test_prompts_file_replaces_the_manifest(tmp_path):
    ds = make_dataset(tmp_path / "ds")
    f = tmp_path / "p.txt"
    f.write_text("# comment\nfirst prompt\n\n  second prompt  \n", encoding="utf-8")
    prompts = sample_prompts(ds / "manifest.csv", count=3, base_seed=1, texts_file=f)
    assert [p.text for p in prompts] == ["first prompt", "second prompt"]
    assert prompts[1].source == f"{f}:4"


def test_empty_prompts_file_is_an_error(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# only a comment\n", encoding="utf-8")
    with pytest.raises(MedsynthError, match="no prompt lines"):
        sample_prompts(tmp_path / "none.csv", count=1, base_seed=1, texts_file=f)


def test_manifest_without_usable_rows_is_an_error(tmp_path):
    ds = make_dataset(tmp_path / "ds", [], skipped=2)
    with pytest.raises(MedsynthError, match="no image with status 'ok'"):
        prompts_from_manifest(ds / "manifest.csv", 4)


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(MedsynthError, match="manifest.csv"):
        prompts_from_manifest(tmp_path / "manifest.csv", 4)
