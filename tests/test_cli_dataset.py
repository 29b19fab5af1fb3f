"""`medsynth dataset build` as a user runs it: project file, options, one-line errors and exit codes."""

from __future__ import annotations

import csv
import hashlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from orchestrator.cli.main import main
from orchestrator.common.paths import DEMO_DIR, REPO_ROOT


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


def test_a_project_folders_own_caption_template_is_used_from_any_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "templates").mkdir(parents=True)
    (project / "templates" / "caption.j2").write_text("dermoscopy, {{ trigger }}", encoding="utf-8")
    cfg = _project(project)
    monkeypatch.chdir(tmp_path)  # not the project folder
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    captions = {p.read_text().strip() for p in (project / "built" / "train" / "1_melanoma").glob("*.caption")}
    assert captions == {"dermoscopy, me1anoma"}


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
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv", str(bad),
                           "--images", str(DEMO_DIR / "images"), "--out", str(tmp_path / "o")],
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


def test_settings_stack_field_defaults_the_project_table_and_the_options(tmp_path):
    from orchestrator.dataset.settings import load_settings

    cfg = _project(tmp_path, "repeats = 3\ntrigger = 'from-file'\n")
    settings = load_settings(config=None, options={"repeats": None, "trigger": "given", "out": "elsewhere"},
                             cwd=tmp_path)  # the project file found in cwd; None is an option not given
    assert (settings.repeats, settings.trigger, settings.resolution, settings.class_name) == (3, "given", 256,
                                                                                           "melanoma")
    assert settings.out == tmp_path / "elsewhere" and settings.csv == (DEMO_DIR / "metadata.csv",)
    assert load_settings(config=cfg, options={}, cwd=tmp_path / "sub").out == tmp_path / "built"


def test_every_option_has_help_text():
    from orchestrator.cli.dataset import dataset_build

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


def test_two_diagnoses_under_one_class_and_trigger_are_refused_on_one_line(tmp_path):
    cfg = _project(tmp_path)
    result = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--workers", "1", "--quiet",
                                       "--diagnosis", "melanoma", "--diagnosis", "nevus"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "'diagnoses' (melanoma, nevus) mixes classes" in result.output
    assert "build one dataset per class, each with its own --diagnosis, --class, --trigger" in result.output
    assert not (tmp_path / "built").exists()
    # the same diagnosis spelt twice is one class
    same = CliRunner().invoke(main, ["dataset", "build", "--config", str(cfg), "--dry-run", "--diagnosis",
                                     "melanoma", "--diagnosis", " Melanoma"])
    assert same.exit_code == 0, same.output


def test_settings_made_in_code_refuse_a_mixed_selection_too(tmp_path):
    from orchestrator.dataset.settings import DatasetSettings
    from orchestrator.common.errors import MedsynthError

    with pytest.raises(MedsynthError, match=r"'diagnoses' \(melanoma, nevus\) mixes classes"):
        DatasetSettings(csv=(DEMO_DIR / "metadata.csv",), images=(DEMO_DIR / "images",), out=tmp_path / "out",
                        diagnoses=("melanoma", "nevus"))


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


# ---- one build at a time, and no partial build left behind: real `medsynth dataset build` processes ----

def _build_command(out: Path, *extra: str, resolution: int = 192) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli.main", "dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"),
            "--images", str(DEMO_DIR / "images"), "--out", str(out), "--resolution", str(resolution),
            "--workers", "1", "--quiet", *extra]


def _start(command: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    # cwd: a folder without medsynth.toml, so only the options count
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_until(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the build ended ({proc.returncode}) before the awaited point: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the build never reached the awaited point")
        time.sleep(0.02)


def _in_image_stage(out: Path):
    class_dir = out.with_name(f".{out.name}.building") / "train" / "1_melanoma"
    return lambda: class_dir.is_dir() and any(class_dir.iterdir())


def _complete_dataset(out: Path, images: int) -> bool:
    """Every manifest row is ok and its image and caption exist, and the class folder holds nothing else."""
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    listed = {r["output_path"] for r in rows} | {str(Path(r["output_path"]).with_suffix(".caption")) for r in rows}
    present = {p.relative_to(out).as_posix() for p in (out / "train").rglob("*") if p.is_file()}
    return len(rows) == images and {r["status"] for r in rows} == {"ok"} and listed == present


def _leftovers(parent: Path, name: str = "ds") -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_build_of_the_same_out_is_refused_at_once_and_the_first_finishes_intact(tmp_path):
    out = tmp_path / "ds"
    first = _start(_build_command(out), tmp_path)
    _wait_until(_in_image_stage(out), first)
    first.send_signal(signal.SIGSTOP)  # held in the middle of its image stage, so the second meets it there
    try:
        started = time.monotonic()
        second = subprocess.run(_build_command(out), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        refused_in = time.monotonic() - started
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1
    assert second.stderr == (f"error: out {out}: another medsynth dataset build (pid {first.pid}) is building this "
                             f"folder; wait for it to finish or stop it, then run again\n")
    assert refused_in < 60  # at once: it did not wait for the first
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert _complete_dataset(out, 20)
    assert _leftovers(tmp_path) == []


def test_two_builds_started_a_moment_apart_leave_one_complete_dataset(tmp_path):
    out = tmp_path / "ds"
    first = _start(_build_command(out), tmp_path)
    time.sleep(0.3)
    second = _start(_build_command(out), tmp_path)
    outcomes = [(proc.communicate(timeout=300)[1], proc.returncode)[::-1] for proc in (first, second)]
    for code, err in outcomes:  # each either built, or was refused in one line; none crashed on the other's files
        assert code == 0 or (code == 1 and err.count("\n") == 1 and "another medsynth dataset build" in err), err
    assert 0 in [code for code, _ in outcomes]
    assert _complete_dataset(out, 20)
    assert _leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def previous_dataset(tmp_path_factory) -> Path:
    """A finished build of the demo melanomas at 256 px (the signal tests rebuild at 192 px, so with image work)."""
    from orchestrator.dataset.settings import DatasetSettings
    from orchestrator.dataset.build import build_dataset

    out = tmp_path_factory.mktemp("previous") / "ds"
    build_dataset(DatasetSettings(csv=(DEMO_DIR / "metadata.csv",), images=(DEMO_DIR / "images",), out=out,
                                  resolution=256, workers=1), progress=False)
    return out


@pytest.mark.parametrize("signum, with_previous", [(signal.SIGTERM, True), (signal.SIGINT, False),
                                                   (signal.SIGHUP, True)])
def test_a_stop_signal_during_the_image_stage_removes_the_partial_build_and_says_so_in_one_line(
        tmp_path, previous_dataset, signum, with_previous):
    out = tmp_path / "ds"
    if with_previous:
        shutil.copytree(previous_dataset, out)
    before = _tree_digest(out) if with_previous else None
    proc = _start(_build_command(out), tmp_path)
    _wait_until(_in_image_stage(out), proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert err.count("\n") == 1
    assert err.startswith(f"error: interrupted ({name}): removed the partial build {tmp_path / '.ds.building'}; ")
    assert _leftovers(tmp_path) == []
    if with_previous:
        assert _tree_digest(out) == before and f"the previous dataset in {out} is intact" in err
    else:
        assert not out.exists() and f"{out} was not written" in err


@pytest.fixture
def small_disk(tmp_path):
    """(folder, preexec_fn, error text): a 640 KiB tmpfs where this process may mount one (as root; the demo
    melanomas take ~300 KiB at 128 px, ~1.1 MiB at 512 px), else a plain folder and a 4 KiB file-size limit
    for the child (RLIMIT_FSIZE: a longer write fails with EFBIG)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = shutil.which("mount") is not None and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(disk)], capture_output=True).returncode == 0
    if mounted:
        yield disk, None, "No space left on device"
        subprocess.run(["umount", str(disk)], check=True)
    else:
        import resource

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        yield disk, limit, "File too large"


@pytest.mark.parametrize("with_previous", [False, True])
def test_a_full_disk_is_one_line_and_leaves_no_partial_build(tmp_path, small_disk, with_previous):
    disk, preexec, reason = small_disk
    out = disk / "ds"
    if with_previous:  # a small earlier build that fits; the rebuild at 512 px does not
        subprocess.run(_build_command(out, resolution=128), cwd=tmp_path, capture_output=True, check=True)
    before = _tree_digest(out) if with_previous else None
    proc = subprocess.run(_build_command(out, resolution=512), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: cannot write ")
    assert reason in proc.stderr and f"removed the partial build {disk / '.ds.building'}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # at most the image cache (kept so that the re-run redoes no work) and the previous dataset, unchanged
    assert [p.name for p in disk.iterdir() if p.name not in (".medsynth-image-cache.json", "ds")] == []
    if with_previous:
        assert _tree_digest(out) == before and f"the previous dataset in {out} is intact" in proc.stderr
    else:
        assert not out.exists()


@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    """An empty read-only file system (a tmpfs mounted ro; root can write through permissions, not through that)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (not root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("under, message", [
    ("ds", "cannot write in {ro}: Read-only file system"),
    ("new/ds", "cannot create the folder {ro}/new: Read-only file system"),
])
def test_out_on_a_read_only_file_system_is_one_line_naming_the_folder(tmp_path, read_only_folder, under, message):
    out = read_only_folder / under
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(DEMO_DIR / "images"), "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output == f"error: out {out}: {message.format(ro=read_only_folder)}\n"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("out, message", [
    ("/proc/medsynth-ds", "cannot write in /proc: "),
    ("/proc/medsynth-no-such/ds", "cannot create the folder /proc/medsynth-no-such: "),
])
def test_out_where_no_folder_can_be_made_is_one_line_naming_it(out, message):
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(DEMO_DIR / "images"), "--out", out, "--workers", "1", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: out {out}: {message}")


def _duplicates(tmp_path: Path) -> Path:
    path = tmp_path / "duplicates.csv"  # ISIC_0000004 is a melanoma, ISIC_0000001 a nevus (not selected anyway)
    path.write_text("image_name_1,image_name_2\nISIC_0000002,ISIC_0000004\nISIC_0000000,ISIC_0000001\n")
    return path


def test_dry_run_says_what_would_be_built_not_that_rows_are_skipped(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(DEMO_DIR / "images", images)
    (images / "ISIC_0000013.jpg").unlink()
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(images), "--duplicates", str(_duplicates(tmp_path)), "--out",
                                       str(tmp_path / "ds"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("selected: 19   missing images: 1   duplicates dropped: 1   to build: 18\n")
    assert "skipped" not in result.output
    assert (f"dry run: 19 rows selected, 1 missing images, 1 duplicates dropped; would write 18 images + captions "
            f"to {tmp_path / 'ds'}/train/1_melanoma/ (nothing written)") in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["duplicates.csv", "images"]


def test_dry_run_with_no_image_found_warns_that_a_build_would_fail(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(empty), "--out", str(tmp_path / "ds"), "--dry-run"])
    assert result.exit_code == 0
    assert "selected: 20   missing images: 20   duplicates dropped: 0   to build: 0" in result.output
    assert f"warning: none of the 20 selected images is in {empty}: a build would fail" in result.stderr


def test_build_summary_counts_the_duplicates_dropped(tmp_path):
    result = CliRunner().invoke(main, ["dataset", "build", "--csv", str(DEMO_DIR / "metadata.csv"), "--images",
                                       str(DEMO_DIR / "images"), "--duplicates", str(_duplicates(tmp_path)),
                                       "--out", str(tmp_path / "ds"), "--resolution", "128", "--workers", "1",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("images: 19   skipped: 0   duplicates dropped: 1\n")
    assert "wrote 19 images + captions" in result.output and "(0 skipped, 1 duplicates dropped, " in result.output
    assert (tmp_path / "ds" / "report.txt").read_text().startswith("images: 19   skipped: 0   duplicates dropped: 1\n")
