"""Bad metadata input: each case is a one-line MedsynthError naming the file (and the line where there is one)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import FORMATS, detect_format, read_metadata

HEADER_2020 = "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target"
ROW_2020 = "ISIC_0000001,IP_0000001,male,45,torso,melanoma,malignant,1"


def csv_file(tmp_path: Path, *lines: str, name: str = "meta.csv", end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_text(end.join(lines) + end, newline="")
    return path


def fails(paths: list[Path], pattern: str, fmt: str | None = None) -> str:
    """The one-line error reading `paths` gives; the files are left as they were."""
    before = {p: p.read_bytes() for p in paths if p.is_file()}
    with pytest.raises(MedsynthError, match=pattern) as info:
        read_metadata(paths, fmt)
    assert {p: p.read_bytes() for p in paths if p.is_file()} == before
    message = str(info.value)
    assert "\n" not in message
    return message


def test_empty_file_is_an_error_naming_it(tmp_path: Path):
    path = csv_file(tmp_path, name="empty.csv", end="")
    assert fails([path], r"empty\.csv: empty file").startswith(str(path))


def test_file_of_blank_lines_is_an_empty_file(tmp_path: Path):
    path = csv_file(tmp_path, "", "  ", name="blank.csv")
    assert fails([path], r"blank\.csv: empty file").startswith(str(path))


def test_header_without_rows_is_an_error(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020)
    assert fails([path], r"meta\.csv: no data rows").startswith(str(path))


def test_missing_file_is_an_error_naming_it(tmp_path: Path):
    path = tmp_path / "nowhere.csv"
    assert fails([path], r"nowhere\.csv: metadata file not found").startswith(str(path))
    assert not path.exists()  # reading never creates the file it was asked for


def test_non_utf8_file_is_an_error_naming_it(tmp_path: Path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER_2020}\nISIC_0000001,IP_1,m\xe4le,45,torso,,benign,0\n".encode("latin-1"))
    before = path.read_bytes()
    assert fails([path], r"latin1\.csv, line 2: not UTF-8").startswith(str(path))
    assert path.read_bytes() == before  # the source is never rewritten


def test_unrecognised_header_lists_formats_tried_and_closest_missing_columns(tmp_path: Path):
    path = csv_file(tmp_path, "image_name,patient_id,sex,age_approx,site,target", "ISIC_0000001,IP_1,male,45,torso,0")
    message = fails([path], r"meta\.csv, line 1: header not recognised")
    for name in ("isic2020 training", "isic2019 metadata", "isic2019 ground truth", "ham10000", "isic_archive"):
        assert name in message
    assert "closest is isic2020 training, which lacks column(s) anatom_site_general_challenge" in message


def test_detect_format_names_the_file_for_an_unknown_header():
    with pytest.raises(MedsynthError, match=r"other\.csv, line 1: header not recognised"):
        detect_format(["a", "b"], Path("other.csv"))


def test_repeated_header_column_is_an_error(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020 + ",sex", ROW_2020 + ",male")
    assert fails([path], r"line 1: column sex appears more than once").startswith(str(path))


def test_forced_format_with_missing_columns_is_an_error(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020)
    message = fails([path], r"meta\.csv, line 1: format ham10000 was given but the header lacks column\(s\) "
                            r"lesion_id, image_id, dx, age, localization", fmt="ham10000")
    assert message.startswith(str(path))


def test_forced_format_that_matches_reads_the_file(tmp_path: Path):
    table = read_metadata([csv_file(tmp_path, HEADER_2020, ROW_2020)], "isic2020")
    assert table["malignant"].tolist() == [True]


def test_unknown_forced_format_lists_the_known_ones(tmp_path: Path):
    message = fails([csv_file(tmp_path, HEADER_2020, ROW_2020)], "unknown metadata format 'isic2018'", fmt="isic2018")
    assert all(f in message for f in FORMATS)


@pytest.mark.parametrize("row", [ROW_2020 + ",extra", "ISIC_0000002,IP_0000001,male,45,torso"])
def test_row_with_wrong_column_count_names_its_line(tmp_path: Path, row: str):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, row)
    assert fails([path], r"meta\.csv, line 3: expected 8 columns as in the header, found").startswith(str(path))


@pytest.mark.parametrize("age", ["forty", "-5", "nan", "inf"])
def test_non_numeric_or_impossible_age_names_its_line(tmp_path: Path, age: str):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, f"ISIC_0000002,IP_1,male,{age},torso,nevus,benign,0")
    assert fails([path], rf"meta\.csv, line 3: age_approx '{age}' is not an age in years").startswith(str(path))


@pytest.mark.parametrize("target", ["yes", "", "2"])
def test_target_that_is_not_zero_or_one_names_its_line(tmp_path: Path, target: str):
    path = csv_file(tmp_path, HEADER_2020, f"ISIC_0000002,IP_1,male,45,torso,nevus,benign,{target}")
    assert fails([path], rf"meta\.csv, line 2: target '{target}' is not 0 or 1").startswith(str(path))


def test_unexpected_sex_value_names_its_line(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, "ISIC_0000002,IP_1,M,45,torso,nevus,benign,0")
    assert fails([path], r"meta\.csv, line 2: sex 'M' is not male, female, unknown or empty").startswith(str(path))


@pytest.mark.parametrize("image", ["../x", "a/b", "", ".hidden", "a\\b", "C:x"])
def test_image_id_that_is_not_a_plain_file_name_names_its_line(tmp_path: Path, image: str):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, f"{image},IP_1,male,45,torso,nevus,benign,0")
    assert fails([path], r"meta\.csv, line 3: image_name '.*' is not a plain image file name").startswith(str(path))


def test_same_image_twice_with_different_metadata_names_both_lines(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, "ISIC_0000002,IP_1,female,50,torso,nevus,benign,0",
                    ROW_2020.replace(",45,", ",50,"))
    message = fails([path], r"meta\.csv, line 4: image ISIC_0000001 repeats line 2 with different age")
    assert message.startswith(str(path))


def test_interleaved_repeats_are_reported_per_image(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, "ISIC_0000002,IP_1,female,50,torso,nevus,benign,0",
                    ROW_2020.replace("male", "female"), "ISIC_0000002,IP_1,female,55,torso,nevus,benign,0")
    message = fails([path], r"meta\.csv, line 4: image ISIC_0000001 repeats line 2 with different sex$")
    assert message.startswith(str(path))


def test_same_image_twice_with_identical_metadata_is_kept_once(tmp_path: Path):
    table = read_metadata([csv_file(tmp_path, HEADER_2020, ROW_2020, ROW_2020)])
    assert table["image_id"].tolist() == ["ISIC_0000001"]
    assert table["source_line"].tolist() == [2]


def test_line_endings_and_final_newline_do_not_change_the_table(tmp_path: Path):
    lines = (HEADER_2020, ROW_2020, "ISIC_0000002,IP_1,,,,,benign,0")
    lf = read_metadata([csv_file(tmp_path, *lines, name="lf.csv")])
    crlf = read_metadata([csv_file(tmp_path, *lines, name="crlf.csv", end="\r\n")])
    bare = tmp_path / "bare.csv"
    bare.write_text("\r\n".join(lines), newline="")
    for other in (crlf, read_metadata([bare])):
        pd.testing.assert_frame_equal(other.drop(columns="source_file"), lf.drop(columns="source_file"))


def test_na_looking_text_is_kept_as_written_and_empty_cells_are_missing(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, "ISIC_0000002,NA,,,,,benign,0")
    row = read_metadata([path]).iloc[0]
    assert row["patient_id"] == "NA"
    assert row[["sex", "age", "site", "diagnosis"]].isna().all()


def test_blank_line_between_rows_keeps_later_line_numbers(tmp_path: Path):
    path = csv_file(tmp_path, HEADER_2020, ROW_2020, "", "ISIC_0000002,IP_1,male,45,torso,nevus,benign,0")
    assert read_metadata([path])["source_line"].tolist() == [2, 4]


def test_no_paths_is_an_error():
    with pytest.raises(MedsynthError, match="no metadata CSV given"):
        read_metadata([])


def test_non_utf8_byte_deep_in_a_large_file_names_its_line(tmp_path: Path):
    rows = [f"ISIC_{i:07d},IP_1,male,45,torso,,benign,0" for i in range(20000)]
    path = tmp_path / "latin1.csv"
    path.write_bytes("\n".join([HEADER_2020, *rows]).encode() + "\nISIC_9999999,IP_1,m\xe4le,45,torso,,benign,0\n"
                     .encode("latin-1"))
    offset = path.read_bytes().index(b"\xe4")
    message = fails([path], rf"latin1\.csv, line 20002: not UTF-8 text \(byte 0xe4 at offset {offset}\)$")
    assert message.startswith(str(path))


# ---- paths the operating system refuses: one line through the CLI, naming the path, never a traceback ----

@pytest.mark.parametrize("option", ["--csv", "--images", "--duplicates"])
def test_an_input_path_that_is_a_symlink_loop_is_one_line_naming_it(tmp_path: Path, option: str):
    from click.testing import CliRunner

    from orchestrator.cli.main import main
    from orchestrator.common.paths import DEMO_DIR

    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # ELOOP on open: exists() says False, open() raises
    given = {"--csv": DEMO_DIR / "metadata.csv", "--images": DEMO_DIR / "images", option: loop}
    args = ["dataset", "build", "--csv", str(given["--csv"]), "--images", str(given["--images"]),
            "--out", str(tmp_path / "ds"), "--dry-run"]
    if option == "--duplicates":
        args += ["--duplicates", str(loop)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: {loop}: cannot read the ")
    assert result.output.endswith(": Too many levels of symbolic links\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]
