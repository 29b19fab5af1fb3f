"""A non-editable install: the wheel carries templates/ inside the package, and an installed medsynth works from
any folder. The runs folder, sd-scripts and a user's own templates and presets are found from the project (the
project file's folder, else the working directory), never from where the package is installed.

The wheel is built offline from a copy of the checkout and pip-installed into a fresh venv that sees this
environment's site-packages only as a plain path (so the checkout's editable finder there is not loaded)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from orchestrator.common import paths
from orchestrator.train.settings import load_settings, preset_names
from orchestrator.common.paths import DEMO_DIR, REPO_ROOT, TEMPLATES_DIR
from orchestrator.train.render import render_template
from train_helpers import write_fake_python, write_fake_sd_scripts

SOURCES = ("pyproject.toml", "README.md", "orchestrator", "templates")  # what the build reads
IMAGES = 4


def run_checked(argv, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")  # a copy: the build writes build/ and *.egg-info beside the sources
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO_ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    run_checked([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                 "-w", out, src])
    return next(out.glob("medsynth-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict[str, Path]:
    venv = tmp_path_factory.mktemp("venv")
    run_checked([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run_checked([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    purelib = Path(run_checked([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # the dependencies, from this environment; a path listed in a .pth file gets none of its own .pth files read
    (purelib / "zz-medsynth-test-deps.pth").write_text("".join(f"{d}\n" for d in site.getsitepackages()))
    return {"bin": venv / "bin", "python": python, "site": purelib}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "MEDSYNTH_PYTHON")}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "COLUMNS": "200", **extra}


def medsynth(installed, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The installed console script, run in `cwd`."""
    return subprocess.run([str(installed["bin"] / "medsynth"), *args], cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


def snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")
            if "__pycache__" not in p.parts}


def demo_subset(folder: Path) -> tuple[Path, Path]:
    """meta.csv (ISIC Archive export format) and imgs/ with the first few melanomas of the demo set."""
    images = folder / "imgs"
    images.mkdir(parents=True)
    with (DEMO_DIR / "metadata.csv").open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if r["diagnosis"] == "melanoma"][:IMAGES]
        fields = reader.fieldnames
    with (folder / "meta.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        shutil.copy2(DEMO_DIR / "images" / f"{row['isic_id']}.jpg", images)
    return folder / "meta.csv", images


def test_the_wheel_carries_the_templates_inside_the_package_and_every_subpackage(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"orchestrator/templates/{p.relative_to(TEMPLATES_DIR).as_posix()}"
                 for p in TEMPLATES_DIR.rglob("*") if p.suffix in (".j2", ".toml")}
    packages = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "orchestrator").rglob("__init__.py")}
    assert {"orchestrator/templates/train.toml.j2", "orchestrator/templates/presets/default.toml"} <= templates
    assert templates <= names, sorted(templates - names)
    assert packages <= names, sorted(packages - names)  # a new subpackage must be listed in pyproject.toml
    assert "orchestrator/kohya/contract.json" in names
    assert not [n for n in names if n.split("/")[0] in ("templates", "runs", "vendor", "datasets")]


def test_a_source_checkout_reads_the_top_level_templates():
    assert paths.SOURCE_ROOT == REPO_ROOT
    assert TEMPLATES_DIR == REPO_ROOT / "templates" and (TEMPLATES_DIR / "train.toml.j2").is_file()
    assert paths.find_template("caption.j2", folder=REPO_ROOT) == REPO_ROOT / "templates" / "caption.j2"


def test_runs_default_to_the_project_folder_else_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_project_dir", None)  # load_settings sets it; restored after the test
    project = tmp_path / "project" / "medsynth.toml"
    project.parent.mkdir()
    project.write_text("[train]\n")
    beside = load_settings(project=project, project_tables={"train": {}, "dataset": {}}, cwd=tmp_path / "cwd")
    assert beside.config.runs_dir == project.parent.resolve() / "runs"
    plain = load_settings(cwd=tmp_path / "cwd")
    assert plain.config.runs_dir == tmp_path / "cwd" / "runs"
    given = load_settings(sets=["runs_dir=elsewhere"], cwd=tmp_path / "cwd")
    assert given.config.runs_dir == tmp_path / "cwd" / "elsewhere"


def test_a_project_folders_own_preset_and_template_override_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_project_dir", None)
    own = tmp_path / "templates"
    (own / "presets").mkdir(parents=True)
    (own / "presets" / "default.toml").write_text('description = "mine"\n[train]\nmax_train_epochs = 3\n')
    (own / "presets" / "mine.toml").write_text("[train]\n")
    (own / "sample_prompts.txt.j2").write_text("# my own prompts template\n")
    project = tmp_path / "medsynth.toml"
    project.write_text("[train]\n")
    settings = load_settings(project=project, project_tables={"train": {}, "dataset": {}}, cwd=tmp_path / "cwd")
    assert settings.preset.path == own / "presets" / "default.toml" and settings.config.max_train_epochs == 3
    assert {"mine", "seed-blog", "low-vram"} <= set(preset_names(tmp_path))
    assert render_template("sample_prompts.txt.j2", {}) == "# my own prompts template\n"
    assert paths.find_template("train.toml.j2") == TEMPLATES_DIR / "train.toml.j2"  # the others stay packaged


def test_installed_medsynth_builds_a_dataset_and_dry_runs_training_from_another_folder(installed, tmp_path):
    work = tmp_path / "work"
    csv_path, images = demo_subset(work)
    where = run_checked([installed["python"], "-c", "import orchestrator.common.paths as p; print(p.__file__); "
                         "print(p.TEMPLATES_DIR); print(p.SOURCE_ROOT)"], cwd=work, env=clean_env()).stdout.split()
    assert where == [str(installed["site"] / "orchestrator" / "common" / "paths.py"),
                     str(installed["site"] / "orchestrator" / "templates"), "None"]
    before = snapshot(installed["site"])
    built = medsynth(installed, work, "dataset", "build", "--csv", csv_path.name, "--images", images.name,
                     "--out", "ds", "--workers", "1", "--resolution", "256")
    assert built.returncode == 0, built.stdout + built.stderr
    assert len(list((work / "ds" / "train" / "1_melanoma").glob("*.caption"))) == IMAGES
    meta = json.loads((work / "ds" / "dataset.json").read_text())
    assert meta["caption_template"] == str(installed["site"] / "orchestrator" / "templates" / "caption.j2")
    dry = medsynth(installed, work, "train", "--dry-run", "--dataset", "ds")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"run: {work / 'runs'}/melanoma-default-" in dry.stdout
    assert f"{work / 'vendor' / 'sd-scripts'}/sdxl_train_network.py not found: unpack" in dry.stdout  # warned, one line
    assert "--- train.toml" in dry.stdout and "written by medsynth from templates/train.toml.j2" in dry.stdout
    assert not (work / "runs").exists()  # a dry run writes nothing
    assert snapshot(installed["site"]) == before  # nor anything into the installation


def test_installed_medsynth_trains_beside_the_project_file_with_its_own_template_preset_and_sd_scripts(
        installed, tmp_path):
    project = tmp_path / "project"
    demo_subset(project)
    (project / "m.safetensors").write_bytes(b"weights")
    own = project / "templates"
    (own / "presets").mkdir(parents=True)
    (own / "presets" / "mine.toml").write_text('description = "mine"\n[train]\nmax_train_epochs = 2\n'
                                               'train_batch_size = 1\n')
    (own / "train.toml.j2").write_text("# my own train template\n" + (TEMPLATES_DIR / "train.toml.j2").read_text())
    sd_scripts = write_fake_sd_scripts(project / "vendor" / "sd-scripts")
    (project / "medsynth.toml").write_text(
        '[dataset]\ncsv = ["meta.csv"]\nimages = ["imgs"]\nout = "ds"\nresolution = 256\nworkers = 1\n'
        '[train]\npreset = "mine"\npretrained_model_name_or_path = "m.safetensors"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = ("--config", str(project / "medsynth.toml"))
    before = snapshot(installed["site"])
    built = medsynth(installed, elsewhere, "dataset", "build", *config)
    assert built.returncode == 0, built.stdout + built.stderr
    done = medsynth(installed, elsewhere, "train", *config, "--run-name", "r",
                    MEDSYNTH_PYTHON=str(write_fake_python(tmp_path)), FAKE_GPUS="NVIDIA H100:79.1")
    assert done.returncode == 0, done.stdout + done.stderr
    run = project / "runs" / "r"
    assert (run / "train.toml").read_text().startswith("# my own train template")
    assert json.loads((run / "run.json").read_text())["preset"] == "mine"
    assert f"cd {sd_scripts}" in (run / "command.sh").read_text()
    assert (run / "melanoma_lora.safetensors").is_file()  # the fake trainer saved its last epoch there
    assert not (elsewhere / "runs").exists() and list(elsewhere.iterdir()) == []
    assert snapshot(installed["site"]) == before
