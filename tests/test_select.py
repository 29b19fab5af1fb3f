"""Selecting training rows: by diagnosis, benign as a class, and ISIC 2020 duplicates left out."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import read_metadata
from orchestrator.dataset.select import read_duplicates, select_lesions

DUPLICATES = "ISIC_2020_Training_Duplicates.csv"


@pytest.fixture(scope="module")
def isic2020(isic_dir: Path) -> pd.DataFrame:
    return read_metadata([isic_dir / "ISIC_2020_Training_GroundTruth.csv"])


@pytest.fixture
def small(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "export.csv"
    path.write_text("isic_id,attribution,copyright_license,benign_malignant,diagnosis\n"
                    "ISIC_0000001,A,CC-0,malignant,melanoma\n"
                    "ISIC_0000002,A,CC-0,benign,nevus\n"
                    "ISIC_0000003,A,CC-0,malignant,basal cell carcinoma\n"
                    "ISIC_0000004,A,CC-0,benign,Seborrheic Keratosis\n"
                    "ISIC_0000005,A,CC-0,,\n")
    return read_metadata([path])


def test_duplicates_file_gives_the_second_image_of_each_pair(isic_dir: Path):
    with (isic_dir / DUPLICATES).open(newline="") as f:
        pairs = list(csv.DictReader(f))
    dropped = read_duplicates(isic_dir / DUPLICATES)
    assert dropped == {p["image_name_2"] for p in pairs}
    assert not dropped & {p["image_name_1"] for p in pairs}
    assert len(dropped) == 425


def test_default_selects_melanoma_and_duplicates_remove_the_melanoma_pairs(isic2020: pd.DataFrame, isic_dir: Path):
    melanoma = select_lesions(isic2020)
    assert len(melanoma) == 584
    without = select_lesions(isic2020, drop_ids=read_duplicates(isic_dir / DUPLICATES))
    assert len(without) == 581
    assert set(melanoma["image_id"]) - set(without["image_id"]) == {"ISIC_9022005", "ISIC_9967383", "ISIC_6584579"}


def test_diagnosis_names_match_case_insensitively(small: pd.DataFrame):
    chosen = select_lesions(small, diagnoses=["MELANOMA", " seborrheic keratosis "])
    assert chosen["image_id"].tolist() == ["ISIC_0000001", "ISIC_0000004"]


def test_diagnosis_list_selects_several_classes(small: pd.DataFrame):
    chosen = select_lesions(small, diagnoses=("melanoma", "basal cell carcinoma"))
    assert chosen["image_id"].tolist() == ["ISIC_0000001", "ISIC_0000003"]


def test_benign_selects_rows_marked_not_malignant(small: pd.DataFrame):
    assert select_lesions(small, benign=True)["image_id"].tolist() == ["ISIC_0000002", "ISIC_0000004"]


def test_no_diagnosis_filter_keeps_every_row(small: pd.DataFrame):
    assert len(select_lesions(small, diagnoses=None)) == len(small)


def test_drop_ids_leave_out_those_images(small: pd.DataFrame):
    chosen = select_lesions(small, diagnoses=None, drop_ids={"ISIC_0000002", "ISIC_9999999"})
    assert "ISIC_0000002" not in set(chosen["image_id"])
    assert len(chosen) == len(small) - 1


def test_drop_ids_match_downsampled_names_by_their_id(tmp_path: Path):
    path = tmp_path / "gt.csv"
    path.write_text("image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                    "ISIC_0000017_downsampled,1,0,0,0,0,0,0,0,0\nISIC_0000018,1,0,0,0,0,0,0,0,0\n")
    table = read_metadata([path])
    assert select_lesions(table, drop_ids={"ISIC_0000017_downsampled"})["image_id"].tolist() == ["ISIC_0000018"]
    assert select_lesions(table, drop_ids={"ISIC_0000017"})["image_id"].tolist() == ["ISIC_0000018"]


def test_selection_returns_a_fresh_index(small: pd.DataFrame):
    assert select_lesions(small, diagnoses=["nevus"]).index.tolist() == [0]


def test_zero_selected_rows_says_what_was_asked_and_what_the_table_holds(small: pd.DataFrame):
    with pytest.raises(MedsynthError) as info:
        select_lesions(small, diagnoses=["dermatofibroma"])
    message = str(info.value)
    assert message.startswith("no rows selected: asked for diagnosis dermatofibroma, but the 5 rows hold ")
    for held in ("melanoma 1", "nevus 1", "basal cell carcinoma 1", "<no diagnosis> 1", "2 marked benign"):
        assert held in message


def test_zero_rows_after_dropping_duplicates_mentions_the_drop(small: pd.DataFrame):
    with pytest.raises(MedsynthError, match="asked for diagnosis melanoma after dropping 1 duplicate"):
        select_lesions(small, drop_ids={"ISIC_0000001"})


def test_duplicates_file_with_another_header_is_an_error(tmp_path: Path):
    path = tmp_path / "dups.csv"
    path.write_text("image,other\nISIC_0000001,ISIC_0000002\n")
    with pytest.raises(MedsynthError, match=r"dups\.csv, line 1: not a duplicates file \(no column image_name_1, "
                                            r"image_name_2\)"):
        read_duplicates(path)


def test_duplicates_row_with_empty_second_image_names_its_line(tmp_path: Path):
    path = tmp_path / "dups.csv"
    path.write_text("image_name_1,image_name_2\nISIC_0000001,ISIC_0000002\nISIC_0000003,\n")
    with pytest.raises(MedsynthError, match=r"dups\.csv, line 3: image_name_2 is empty"):
        read_duplicates(path)


def test_missing_duplicates_file_is_named_as_the_duplicates_file(tmp_path: Path):
    with pytest.raises(MedsynthError, match=r"^\S*nope\.csv: duplicates file not found$"):
        read_duplicates(tmp_path / "nope.csv")
