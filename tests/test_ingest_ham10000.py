"""HAM10000_metadata.csv in its Kaggle (7 columns, float ages, LF) and Dataverse (8 columns, CRLF) variants.

The file is not in ../shared, so the rows are written here in the documented layout.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import detect_format, read_metadata
from orchestrator.dataset.select import select_lesions

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
# (lesion_id, image_id, dx, dx_type, age, sex, localization, dataset)
ROWS = [
    ("HAM_0000118", "ISIC_0027419", "bkl", "histo", "80", "male", "scalp", "vidir_modern"),
    ("HAM_0002730", "ISIC_0026769", "mel", "histo", "", "female", "back", "rosendahl"),
    ("HAM_0002730", "ISIC_0025661", "mel", "histo", "55", "unknown", "unknown", "rosendahl"),
    ("HAM_0001466", "ISIC_0031633", "nv", "follow_up", "75", "male", "lower extremity", "vidir_molemax"),
    ("HAM_0002761", "ISIC_0029068", "bcc", "histo", "60", "male", "face", "vidir_modern"),
    ("HAM_0005132", "ISIC_0025837", "akiec", "histo", "70", "female", "upper extremity", "vienna_dias"),
    ("HAM_0001396", "ISIC_0025276", "vasc", "consensus", "35", "female", "trunk", "vidir_modern"),
    ("HAM_0002955", "ISIC_0024396", "df", "consensus", "40", "male", "acral", "rosendahl"),
]


def kaggle_csv(path: Path) -> Path:
    lines = [HEADER] + [",".join((*r[:4], f"{r[4]}.0" if r[4] else "", *r[5:7])) for r in ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def dataverse_csv(path: Path) -> Path:
    lines = [HEADER + ",dataset"] + [",".join(r) for r in ROWS]
    path.write_bytes("\r\n".join(lines).encode())   # CRLF and no final newline, as downloaded
    return path


@pytest.fixture(params=[kaggle_csv, dataverse_csv], ids=["kaggle-7-columns", "dataverse-8-columns"])
def ham(request, tmp_path: Path) -> pd.DataFrame:
    return read_metadata([request.param(tmp_path / "HAM10000_metadata.csv")])


def test_both_variants_are_detected_as_ham10000(tmp_path: Path):
    for write in (kaggle_csv, dataverse_csv):
        path = write(tmp_path / f"{write.__name__}.csv")
        assert detect_format(path.read_text().splitlines()[0].split(","), path) == "ham10000"


def test_both_variants_give_the_same_table(tmp_path: Path):
    fields = ["image_id", "sex", "age", "site", "diagnosis", "malignant"]
    seven = read_metadata([kaggle_csv(tmp_path / "a.csv")])
    eight = read_metadata([dataverse_csv(tmp_path / "b.csv")])
    pd.testing.assert_frame_equal(seven[fields], eight[fields])


def test_mel_rows_are_melanoma_and_malignant(ham: pd.DataFrame):
    melanoma = select_lesions(ham)
    assert sorted(melanoma["image_id"]) == sorted(r[1] for r in ROWS if r[2] == "mel")
    assert melanoma["malignant"].all()


def test_dx_codes_get_the_isic2019_names(ham: pd.DataFrame):
    names = dict(zip(ham["image_id"], ham["diagnosis"]))
    assert [names[r[1]] for r in ROWS] == ["benign keratosis", "melanoma", "melanoma", "nevus",
                                           "basal cell carcinoma", "actinic keratosis", "vascular lesion",
                                           "dermatofibroma"]
    malignant = dict(zip(ham["image_id"], ham["malignant"]))
    assert {r[2] for r in ROWS if malignant[r[1]]} == {"mel", "bcc", "akiec"}


def test_unknown_and_empty_cells_are_missing(ham: pd.DataFrame):
    row = ham.set_index("image_id").loc["ISIC_0025661"]
    assert pd.isna(row["sex"]) and pd.isna(row["site"])
    assert row["age"] == 55
    assert pd.isna(ham.set_index("image_id").loc["ISIC_0026769", "age"])


def test_localization_is_kept_as_written(ham: pd.DataFrame):
    assert ham.set_index("image_id").loc["ISIC_0031633", "site"] == "lower extremity"
    assert (ham["source"] == "ham10000").all()


def test_non_numeric_age_is_an_error_naming_the_line(tmp_path: Path):
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_text(HEADER + "\nHAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp\n"
                             "HAM_0000119,ISIC_0027420,nv,histo,eighty,male,scalp\n")
    with pytest.raises(MedsynthError, match=r"HAM10000_metadata\.csv, line 3: age 'eighty' is not an age"):
        read_metadata([path])
