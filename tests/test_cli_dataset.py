"""`medsynth dataset build` as a user runs it: project file, options, one-line errors and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.paths import DEMO_DIR, REPO_ROOT


def _project(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "medsynth.toml"
    cfg.write_text(
        "[dataset]\n"
        f"csv = ['{DEMO_DIR / 'metadata.csv'}']\n"
        f"images = ['{DEMO_DIR / 'images'}']\n"
        "out = 'built'\n"
        "resolution = 256\n" + extra, encoding="utf-8")
    return cfg


def test_build_reads_the_project_file_and_prints_a_summary(tmp_path):
    cfg = _project(tmp_path)
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 20 images" in result.output and "sex:" in result.output
    # relative paths in the project file are relative to its folder
    assert (tmp_path / "built" / "train" / "1_melanoma").is_dir()


def test_command_line_options_override_the_project_file(tmp_path):
    cfg = _project(tmp_path)
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--quiet", "--workers", "1",
                                       "--out", str(tmp_path / "other"), "--repeats", "4"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "other" / "train" / "4_melanoma").glob("*.jpg"))) == 20


def test_unknown_project_setting_is_a_one_line_error_with_a_suggestion(tmp_path):
    cfg = _project(tmp_path, "resolutoin = 512\n")
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "unknown dataset setting 'resolutoin'; did you mean 'resolution'?" in result.output
    assert str(cfg) in result.output


def test_unknown_project_table_is_refused(tmp_path):
    cfg = _project(tmp_path, "[trian]\nx = 1\n")
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg)])
    assert result.exit_code == 1 and "unknown table 'trian'; did you mean 'train'?" in result.output


def test_missing_required_setting_names_the_option(tmp_path):
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(_project(tmp_path)).replace(
        "medsynth.toml", "none.toml")])
    assert result.exit_code == 1 and "project file not found" in result.output
    empty = tmp_path / "empty.toml"
    empty.write_text("[dataset]\n")
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(empty)])
    assert result.exit_code == 1 and "'csv' is missing" in result.output


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    cfg = _project(tmp_path)
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: 20 rows selected" in result.output
    assert not (tmp_path / "built").exists()


def test_installed_console_script_exits_nonzero_on_bad_input(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "dataset", "build", "--csv", str(bad),
                           "--images", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and str(bad) in proc.stderr


def test_every_option_is_explained_in_help():
    result = CliRunner().invoke(main, ["dataset", "build", "--help"])
    assert result.exit_code == 0
    for option in ("--csv", "--images", "--duplicates", "--out", "--class", "--repeats", "--resolution",
                   "--workers", "--strict", "--dry-run", "--no-resize", "--format", "--config"):
        assert option in result.output


def test_site_map_keys_match_sites_whatever_their_case(tmp_path):
    cfg = _project(tmp_path, "site_map = { 'Lower Extremity' = 'leg' }\n")
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    captions = (tmp_path / "built" / "manifest.csv").read_text(encoding="utf-8")
    assert "me1anoma on leg" in captions and "on lower extremity" not in captions


def test_every_option_has_help_text():
    from orchestrator.cli import dataset_build

    for param in dataset_build.params:
        assert getattr(param, "help", None), f"{param.name} has no --help text"


def test_unknown_format_in_the_project_file_names_the_file_and_key(tmp_path):
    cfg = _project(tmp_path, "format = 'isic2021'\n")
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--dry-run"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"{cfg} [dataset]: 'format' must be one of isic2020" in result.output


def test_selecting_another_diagnosis_into_the_melanoma_folder_warns(tmp_path):
    cfg = _project(tmp_path)
    args = ["dataset", "build", "--config", str(cfg), "--dry-run", "--diagnosis", "nevus"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "warning: selecting diagnoses nevus into the class folder '1_melanoma'" in result.output
    result = CliRunner().invoke(main, [*args, "--class", "nevus"])
    assert result.exit_code == 0 and "warning" not in result.output


def test_command_line_turns_off_what_the_project_file_turns_on(tmp_path):
    cfg = _project(tmp_path, "strict = true\nresize = false\n")
    images = tmp_path / "images"
    shutil.copytree(DEMO_DIR / "images", images)
    (images / "ISIC_0000004.jpg").unlink()
    base = ["dataset", "build", "--config", str(cfg), "--quiet", "--workers", "1", "--images", str(images)]
    assert CliRunner().invoke(main, base).exit_code == 1  # strict from the file: the missing image is fatal
    result = CliRunner().invoke(main, [*base, "--no-strict", "--resize"])
    assert result.exit_code == 0, result.output
    assert "wrote 19 images" in result.output
    resized = cv2.imread(str(tmp_path / "built" / "train" / "1_melanoma" / "ISIC_0000002.jpg"))
    assert max(resized.shape[:2]) == 256
