"""ISIC Archive metadata exports (isic-cli): legacy and hierarchical diagnosis/site columns, read by name."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import detect_format, read_metadata
from orchestrator.common.paths import DEMO_DIR
from orchestrator.dataset.select import select_lesions

DEMO = DEMO_DIR / "metadata.csv"


def write(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    return read_metadata([DEMO])


def test_demo_csv_is_detected_as_archive_export():
    assert detect_format(DEMO.read_text().splitlines()[0].split(","), DEMO) == "isic_archive"


def test_demo_csv_selects_its_melanoma_rows(demo: pd.DataFrame):
    with DEMO.open(newline="") as f:
        expected = {r["isic_id"] for r in csv.DictReader(f) if r["diagnosis"] == "melanoma"}
    melanoma = select_lesions(demo)
    assert set(melanoma["image_id"]) == expected
    assert len(melanoma) == 20
    assert melanoma["malignant"].all()


def test_demo_csv_keeps_attribution_and_licence(demo: pd.DataFrame):
    assert set(demo["attribution"]) == {"Anonymous"}
    assert set(demo["license"]) == {"CC-0"}
    assert (demo["source"] == "isic_archive").all()


def test_demo_rows_agree_with_isic2019_and_take_missing_sites_from_it(demo: pd.DataFrame, isic_dir: Path):
    pair = [isic_dir / "ISIC_2019_Training_Metadata.csv", isic_dir / "ISIC_2019_Training_GroundTruth.csv"]
    combined = read_metadata([DEMO, *pair]).set_index("image_id")
    isic2019 = read_metadata(pair).set_index("image_id")
    shared = sorted(set(demo["image_id"]) & set(isic2019.index))
    assert shared and combined.index.is_unique
    assert (combined.loc[shared, "source"] == "isic_archive").all()          # first source wins
    no_site = demo.loc[demo["site"].isna() & demo["image_id"].isin(shared), "image_id"]
    assert len(no_site) > 0
    assert (combined.loc[no_site, "site"] == isic2019.loc[no_site, "site"]).all()


def test_hierarchical_diagnosis_columns_mark_melanoma_and_malignancy(tmp_path: Path):
    path = write(tmp_path / "export.csv",
                 "isic_id,attribution,copyright_license,age_approx,anatom_site_1,diagnosis_1,diagnosis_2,"
                 "diagnosis_3,sex",
                 "ISIC_0000001,Hospital A,CC-BY,60,Trunk,Malignant,Malignant melanocytic proliferations "
                 "(Melanoma),Melanoma Invasive,male",
                 "ISIC_0000002,Hospital A,CC-BY-NC,40,Upper extremity,Malignant,Malignant melanocytic "
                 "proliferations (Melanoma),Melanoma in situ,female",
                 "ISIC_0000003,Anonymous,CC-0,35,Head and neck,Benign,Benign melanocytic proliferations,Nevus,male",
                 "ISIC_0000004,Anonymous,CC-0,,,Indeterminate,,,")
    table = read_metadata([path]).set_index("image_id")
    assert table["diagnosis"].tolist()[:3] == ["melanoma", "melanoma", "nevus"]
    assert table["malignant"].tolist()[:3] == [True, True, False]
    assert table["site"].tolist()[:3] == ["trunk", "upper extremity", "head and neck"]
    assert table.loc["ISIC_0000004", ["diagnosis", "malignant", "site", "age", "sex"]].isna().all()
    assert table.loc["ISIC_0000002", "license"] == "CC-BY-NC"


def test_hierarchical_diagnosis_wins_over_legacy_and_legacy_fills_its_gaps(tmp_path: Path):
    path = write(tmp_path / "export.csv",
                 "isic_id,attribution,copyright_license,benign_malignant,diagnosis,diagnosis_1,diagnosis_3",
                 "ISIC_0000001,A,CC-0,malignant,melanoma metastasis,Malignant,Melanoma metastasis",
                 "ISIC_0000002,A,CC-0,benign,nevus,,",
                 "ISIC_0000003,A,CC-0,indeterminate,atypical melanocytic proliferation,Benign,Nevus")
    table = read_metadata([path])
    assert table["diagnosis"].tolist() == ["melanoma", "nevus", "nevus"]
    assert table["malignant"].tolist() == [True, False, False]


def test_general_site_wins_over_anatom_site_1(tmp_path: Path):
    path = write(tmp_path / "export.csv",
                 "isic_id,attribution,copyright_license,anatom_site_1,anatom_site_general",
                 "ISIC_0000001,A,CC-0,Trunk,anterior torso",
                 "ISIC_0000002,A,CC-0,Trunk,")
    assert read_metadata([path])["site"].tolist() == ["anterior torso", "trunk"]


def test_indeterminate_benign_malignant_leaves_malignant_missing(tmp_path: Path):
    path = write(tmp_path / "export.csv", "isic_id,attribution,copyright_license,benign_malignant",
                 "ISIC_0000001,A,CC-0,indeterminate/malignant")
    assert pd.isna(read_metadata([path])["malignant"].iloc[0])


def test_export_without_any_diagnosis_column_fails_selection_clearly(tmp_path: Path):
    path = write(tmp_path / "export.csv", "isic_id,attribution,copyright_license,sex",
                 "ISIC_0000001,A,CC-0,female")
    table = read_metadata([path])
    with pytest.raises(MedsynthError, match="no rows selected: asked for diagnosis melanoma"):
        select_lesions(table)


def test_fitzpatrick_skin_type_becomes_a_roman_numeral_or_missing(tmp_path: Path):
    path = write(tmp_path / "export.csv", "isic_id,attribution,copyright_license,fitzpatrick_skin_type",
                 "ISIC_0000001,A,CC-0,III", "ISIC_0000002,A,CC-0,", "ISIC_0000003,A,CC-0,vi",
                 "ISIC_0000004,A,CC-0,2")
    values = read_metadata([path])["fitzpatrick"]
    assert [None if pd.isna(v) else v for v in values] == ["III", None, "VI", "II"]


def test_a_fitzpatrick_type_out_of_range_names_its_line(tmp_path: Path):
    path = write(tmp_path / "export.csv", "isic_id,attribution,copyright_license,fitzpatrick_skin_type",
                 "ISIC_0000001,A,CC-0,III", "ISIC_0000002,A,CC-0,VII")
    with pytest.raises(MedsynthError, match=r"export.csv, line 3: fitzpatrick_skin_type 'VII' is not a Fitzpatrick"):
        read_metadata([path])


def test_an_export_without_fitzpatrick_leaves_it_missing(demo: pd.DataFrame):
    assert demo["fitzpatrick"].isna().all()
