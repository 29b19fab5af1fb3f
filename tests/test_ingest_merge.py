"""Several sources at once: each image id kept once, first source winning and later ones filling its gaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import read_metadata

HAM = "lesion_id,image_id,dx,dx_type,age,sex,localization"
ARCHIVE = "isic_id,attribution,copyright_license,age_approx,anatom_site_general,benign_malignant,diagnosis,sex"


def csv_file(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_in_two_sources_is_kept_once_with_gaps_filled_from_the_later(tmp_path: Path):
    archive = csv_file(tmp_path / "archive.csv", ARCHIVE, "ISIC_0024306,Anonymous,CC-0,,,malignant,melanoma,male",
                       "ISIC_0000001,Anonymous,CC-0,30,torso,benign,nevus,female")
    ham = csv_file(tmp_path / "ham.csv", HAM, "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    table = read_metadata([archive, ham])
    assert table["image_id"].tolist() == ["ISIC_0024306", "ISIC_0000001"]
    row = table.iloc[0]
    assert (row["source"], row["source_file"], row["source_line"]) == ("isic_archive", str(archive), 2)
    assert (row["age"], row["site"], row["license"]) == (45, "back", "CC-0")


def test_later_source_only_images_follow_the_first_sources_rows(tmp_path: Path):
    archive = csv_file(tmp_path / "archive.csv", ARCHIVE, "ISIC_0000001,A,CC-0,30,torso,benign,nevus,female")
    ham = csv_file(tmp_path / "ham.csv", HAM, "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    assert read_metadata([ham, archive])["image_id"].tolist() == ["ISIC_0024306", "ISIC_0000001"]


def test_different_site_wording_between_sources_is_not_a_conflict(tmp_path: Path):
    archive = csv_file(tmp_path / "archive.csv", ARCHIVE,
                       "ISIC_0024306,A,CC-0,45,posterior torso,malignant,melanoma,male")
    ham = csv_file(tmp_path / "ham.csv", HAM, "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    assert read_metadata([archive, ham])["site"].tolist() == ["posterior torso"]
    assert read_metadata([ham, archive])["site"].tolist() == ["back"]


@pytest.mark.parametrize("field,archive_row", [
    ("sex", "ISIC_0024306,A,CC-0,45,back,malignant,melanoma,female"),
    ("age", "ISIC_0024306,A,CC-0,50,back,malignant,melanoma,male"),
    ("malignant", "ISIC_0024306,A,CC-0,45,back,benign,nevus,male"),
])
def test_conflicting_field_between_sources_names_both_files_and_lines(tmp_path: Path, field: str, archive_row: str):
    ham = csv_file(tmp_path / "ham.csv", HAM, "HAM_0000002,ISIC_0000009,nv,histo,30.0,female,back",
                   "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    archive = csv_file(tmp_path / "archive.csv", ARCHIVE, archive_row)
    with pytest.raises(MedsynthError, match=rf"image ISIC_0024306: {field} .* at .*ham\.csv, line 3 "
                                            rf"conflicts with .* at .*archive\.csv, line 2"):
        read_metadata([ham, archive])


def test_conflict_between_two_later_sources_is_caught_after_filling(tmp_path: Path):
    first = csv_file(tmp_path / "first.csv", ARCHIVE, "ISIC_0024306,A,CC-0,,back,malignant,melanoma,")
    second = csv_file(tmp_path / "second.csv", HAM, "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    third = csv_file(tmp_path / "third.csv", ARCHIVE, "ISIC_0024306,A,CC-0,,back,malignant,melanoma,female")
    with pytest.raises(MedsynthError, match=r"sex male at .*second\.csv, line 2 conflicts with female at "
                                            r".*third\.csv, line 2"):
        read_metadata([first, second, third])


def test_same_file_given_twice_reads_like_once(tmp_path: Path):
    archive = csv_file(tmp_path / "archive.csv", ARCHIVE, "ISIC_0000001,A,CC-0,30,torso,benign,nevus,female",
                       "ISIC_0000002,A,CC-0,35,torso,malignant,melanoma,male")
    assert read_metadata([archive, archive]).equals(read_metadata([archive]))


def test_2019_ground_truth_pairs_with_metadata_given_before_another_source(tmp_path: Path):
    gt = csv_file(tmp_path / "gt.csv", "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK", "ISIC_0000001,1.0,0,0,0,0,0,0,0,0")
    meta = csv_file(tmp_path / "meta.csv", "image,age_approx,anatom_site_general,lesion_id,sex",
                    "ISIC_0000001,60,anterior torso,,female")
    ham = csv_file(tmp_path / "ham.csv", HAM, "HAM_0000001,ISIC_0024306,mel,histo,45.0,male,back")
    table = read_metadata([gt, ham, meta])
    assert table["image_id"].tolist() == ["ISIC_0024306", "ISIC_0000001"]
    row = table.iloc[1]
    assert (row["diagnosis"], row["sex"], row["source_file"]) == ("melanoma", "female", str(meta))
