"""`medsynth generate`: the run's LoRA and settings, the sdxl_gen_img.py command, output mapping, metadata,
resuming, failures, several processes, dropped near-copies staying dropped, and the CLI. A tiny real Python script stands in for the generation
interpreter ($MEDSYNTH_PYTHON; tests/generate_helpers.py): it reads the prompt file and writes PNGs with the
prompt and seed in their text chunks, as sdxl_gen_img.py does."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from generate_helpers import calls, make_run, png_with_text, write_fake_gen_python, write_fake_gen_sd_scripts
from orchestrator.generate import plan as gen
from orchestrator.generate import command as gen_cmd
from orchestrator.generate import run as gen_run
from orchestrator.generate import outputs
from orchestrator.generate.memorized import drop_memorized
from orchestrator.cli.generate import generate as generate_command
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import read_metadata
from orchestrator.runs.facts import read_run
from train_helpers import make_dataset

HERE = Path(__file__).parent


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A finished run (3 epochs) on a 6-image dataset, a fake interpreter and sd-scripts folder."""
    monkeypatch.setenv("MEDSYNTH_PYTHON", str(write_fake_gen_python(tmp_path)))
    monkeypatch.setenv("FAKE_HELPERS", str(HERE))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_MODE", raising=False)
    run_dir = make_run(tmp_path, make_dataset(tmp_path / "ds"),
                       sets=["sample_steps=12", "sample_cfg_scale=6.5", "sample_width=512", "sample_height=768"])
    return {"run": run_dir, "sd": write_fake_gen_sd_scripts(tmp_path / "sd"), "calls": tmp_path / "calls.jsonl",
            "python": os.environ["MEDSYNTH_PYTHON"]}


def _generate(fake, count=5, gpu_ids=(None,), **kw):
    plan = gen.plan_generation(fake["run"], count=count, seed=kw.pop("seed", 0), epoch=kw.pop("epoch", None))
    out = io.BytesIO()
    outcome = gen_run.generate(plan.items, plan.settings, synthetic=plan.synthetic, lora=plan.lora,
                           run_name=plan.run.name, run_dir=plan.run.run_dir, sd_scripts=fake["sd"],
                           python=fake["python"], env=dict(os.environ), gpu_ids=list(gpu_ids), out=out,
                           extra_fields=plan.extra_fields, **kw)
    return plan, outcome, out.getvalue().decode()


def _metadata(plan) -> list[dict[str, str]]:
    return outputs.read_synthetic_metadata(plan.synthetic / "metadata.csv")


# ----------------------------------------------------------------------------------------------- the run

def test_the_final_lora_has_no_epoch_suffix_and_earlier_epochs_do(fake):
    run = read_run(fake["run"])
    assert gen.lora_for_epoch(run, None) == (fake["run"] / "melanoma_lora.safetensors", 3)
    assert gen.lora_for_epoch(run, 3) == (fake["run"] / "melanoma_lora.safetensors", 3)
    assert gen.lora_for_epoch(run, 2) == (fake["run"] / "melanoma_lora-000002.safetensors", 2)


def test_a_missing_epoch_lists_the_epochs_present(fake):
    (fake["run"] / "melanoma_lora-000001.safetensors").unlink()
    with pytest.raises(MedsynthError, match=r"no epoch 1 file .*epochs present: 2, 3"):
        gen.lora_for_epoch(read_run(fake["run"]), 1)


def test_an_unfinished_run_uses_its_newest_epoch(fake):
    (fake["run"] / "melanoma_lora.safetensors").unlink()
    assert gen.lora_for_epoch(read_run(fake["run"]), None)[1] == 2


def test_a_run_without_any_lora_file_says_so_in_plain_words(fake):
    for lora in fake["run"].glob("melanoma_lora*.safetensors"):
        lora.unlink()
    with pytest.raises(MedsynthError, match=r": no LoRA file \(melanoma_lora\[-NNNNNN\]\.safetensors\); epochs "
                                            r"present: none"):
        gen.lora_for_epoch(read_run(fake["run"]), None)


@pytest.mark.parametrize("content, why", [
    (b"", "empty LoRA file (0 bytes"),
    (b"lora of epoch 3", "not a safetensors LoRA file (no safetensors header)"),
    (None, "not a safetensors LoRA file (its header indexes 4 bytes of tensors, it holds 2: cut short?)"),
])
def test_a_lora_file_that_cannot_be_loaded_is_refused_in_a_dry_run_too(fake, tmp_path, content, why):
    lora = fake["run"] / "melanoma_lora.safetensors"
    lora.write_bytes(content if content is not None else lora.read_bytes()[:-2])  # None: cut short
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "2", "--dry-run",
                                                   "--sd-scripts", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: {lora}: {why}")
    gen.check_lora_file(fake["run"] / "melanoma_lora-000002.safetensors")  # a whole one passes


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(MedsynthError, match="not a medsynth run"):
        read_run(tmp_path, need_train=True)


def test_settings_come_from_the_runs_sample_settings_and_model(fake):
    plan = gen.plan_generation(fake["run"], count=2)
    s = plan.settings
    assert (s.sampler, s.steps, s.cfg_scale, s.width, s.height) == ("euler_a", 12, 6.5, 512, 768)
    assert s.model == str(fake["run"].parent.parent / "sdxl.safetensors")
    assert s.negative_prompt and s.precision == "bf16" and s.sdpa
    assert s.lora_file == "melanoma_lora.safetensors" and len(s.lora_sha256) == 64
    assert gen.plan_generation(fake["run"], count=2, cpu=True).settings.precision == "bf16"


def test_the_command_carries_the_lora_prompts_and_run_settings(fake, tmp_path):
    plan = gen.plan_generation(fake["run"], count=2)
    argv = gen_cmd.gen_command("py", Path("/sd"), plan.settings, lora=plan.lora, prompts=tmp_path / "p.txt",
                           outdir=tmp_path, batch_size=4, cpu=True)
    assert argv[:3] == ["py", "-m", "accelerate.commands.launch"] and "--cpu" in argv
    after = argv[argv.index("/sd/sdxl_gen_img.py") + 1:]
    pairs = dict(zip(after, after[1:]))
    assert pairs["--network_module"] == "networks.lora" and pairs["--network_weights"] == str(plan.lora)
    assert pairs["--from_file"] == str(tmp_path / "p.txt") and pairs["--batch_size"] == "4"
    assert (pairs["--sampler"], pairs["--steps"], pairs["--scale"]) == ("euler_a", "12", "6.5")
    assert "--sequential_file_name" in after and "--bf16" in after


def test_a_prompt_line_has_the_seed_size_steps_scale_and_negative_prompt(fake):
    plan = gen.plan_generation(fake["run"], count=1)
    item, s = plan.items[0], plan.settings
    assert gen_cmd.prompt_line(item, s) == (f"{item.prompt} --n {s.negative_prompt} --w 512 --h 768 --s 12 --l 6.5 "
                                        f"--d {item.seed}")


def test_a_negative_prompt_sd_scripts_would_expand_is_refused(tmp_path):
    run_dir = make_run(tmp_path, make_dataset(tmp_path / "ds"), sets=['negative_prompt="blurry, {text|watermark}"'])
    with pytest.raises(MedsynthError, match=r"negative prompt .* contains '\{'"):
        gen.plan_generation(run_dir, count=1)


def test_scales_are_written_without_an_exponent_which_sd_scripts_cannot_read():
    assert [gen_cmd.decimal(v) for v in (6.5, 8.0, 7.25, 1e-5)] == ["6.5", "8", "7.25", "0.00001"]


# ----------------------------------------------------------------------------------------------- running

def test_generation_writes_named_images_and_isic2020_metadata(fake):
    plan, outcome, printed = _generate(fake, count=5)
    assert (outcome.made, outcome.kept, outcome.missing, outcome.exit_code) == (5, 0, [], 0)
    names = sorted(p.name for p in (plan.synthetic / "images").iterdir())
    assert names == [f"SYN_{n:07d}.png" for n in range(1, 6)]
    rows = _metadata(plan)
    assert list(rows[0])[:8] == list(outputs.ISIC2020_COLUMNS)
    for row, item in zip(rows, plan.items):
        assert row["image_name"] == f"SYN_{item.number:07d}" and row["prompt"] == item.prompt
        assert row["seed"] == str(item.seed) and row["synthetic"] == "1"
        assert (row["sex"], row["age_approx"], row["anatom_site_general_challenge"]) == \
               (item.row["sex"], item.row["age"], item.row["site"])
        assert (row["diagnosis"], row["benign_malignant"], row["target"]) == ("melanoma", "malignant", "1")
        assert row["lora_sha256"] == gen.sha256_of(plan.lora)
        assert outputs.png_text(plan.synthetic / "images" / f"{row['image_name']}.png")["seed"] == row["seed"]
    assert "fake gen: 5 prompts" in printed and "fake gen: 5 prompts" in (plan.synthetic / "generate.log").read_text()
    assert not list(plan.synthetic.glob(".work-*"))  # the per-run work folder is removed


def test_metadata_reads_back_as_isic2020_with_our_own_reader(fake):
    plan, _, _ = _generate(fake, count=4)
    table = read_metadata([plan.synthetic / "metadata.csv"])
    assert set(table["source"]) == {"isic2020"}
    assert list(table["image_id"]) == [f"SYN_{n:07d}" for n in range(1, 5)]
    assert list(table["sex"].fillna("")) == [i.row["sex"] for i in plan.items]
    assert list(table["age"].astype(int)) == [int(i.row["age"]) for i in plan.items]
    assert table["malignant"].all() and set(table["diagnosis"]) == {"melanoma"}


# ISIC 2020's flat diagnosis ('melanoma') is not the isic-metadata vocabulary ('Melanoma, NOS', since its
# hierarchical diagnoses): the column keeps the 2020 values for ISIC 2020 readers (the test above), so it is left out
ISIC2020_VOCABULARY_ONLY = ("diagnosis",)


def _isic_errors(row: dict[str, str]) -> list[str]:
    """What the isic-metadata package's own row validation (MetadataRow, as the ISIC archive checks an upload)
    finds wrong in one metadata.csv row."""
    from isic_metadata.metadata import MetadataRow
    from pydantic import ValidationError

    try:
        MetadataRow.model_validate({k: v for k, v in row.items() if k not in ISIC2020_VOCABULARY_ONLY})
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def test_metadata_marks_the_images_synthetic_with_their_provenance_and_passes_isic_validation(fake):
    from orchestrator import __version__

    plan, _, _ = _generate(fake, count=4, epoch=2)
    rows = _metadata(plan)
    assert len(rows) == 4
    assert {r["image_name"]: _isic_errors(r) for r in rows} == {r["image_name"]: [] for r in rows}
    assert {r["image_manipulation"] for r in rows} == {"synthetic"}
    assert {(r["medsynth_version"], r["medsynth_run"], r["medsynth_epoch"], r["lora_file"]) for r in rows} == \
           {(__version__, plan.run.name, "2", "melanoma_lora-000002.safetensors")}


def test_isic_validation_refuses_a_row_that_is_not_marked_synthetic_in_its_vocabulary(fake):
    plan, _, _ = _generate(fake, count=1)
    (row,) = _metadata(plan)
    assert _isic_errors({**row, "image_manipulation": "generated"}) == \
           ["image_manipulation: Input should be 'instrument only', 'altered' or 'synthetic'"]


def test_a_skin_tone_build_adds_the_drawn_band_to_the_metadata(fake):
    manifest = Path(json.loads((fake["run"] / "run.json").read_text())["dataset"]["path"]) / "manifest.csv"
    rows = list(csv.DictReader(manifest.open(newline="", encoding="utf-8")))
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0], "skin_tone"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, "skin_tone": "tan" if i % 2 else "light"} for i, r in enumerate(rows))
    plan, _, _ = _generate(fake, count=4)
    assert any("changed since the run was trained" in note for note in plan.notes)
    assert [r["skin_tone"] for r in _metadata(plan)] == [i.row["skin_tone"] for i in plan.items]
    assert set(read_metadata([plan.synthetic / "metadata.csv"])["source"]) == {"isic2020"}


def test_sd_scripts_runs_in_its_folder_with_the_prompt_file_it_is_given(fake):
    plan, _, _ = _generate(fake, count=3)
    (call,) = calls(fake["calls"])
    assert Path(call["cwd"]).resolve() == fake["sd"].resolve()
    assert call["lines"] == [gen_cmd.prompt_line(i, plan.settings) for i in plan.items]


def test_a_rerun_keeps_the_images_and_generates_nothing(fake):
    plan, _, _ = _generate(fake, count=4)
    before = {p.name: p.stat().st_mtime_ns for p in (plan.synthetic / "images").iterdir()}
    _, outcome, _ = _generate(fake, count=4)
    assert (outcome.made, outcome.kept) == (0, 4) and len(calls(fake["calls"])) == 1
    assert {p.name: p.stat().st_mtime_ns for p in (plan.synthetic / "images").iterdir()} == before


def test_a_rerun_generates_only_the_missing_images(fake):
    plan, _, _ = _generate(fake, count=4)
    (plan.synthetic / "images" / "SYN_0000003.png").unlink()
    _, outcome, _ = _generate(fake, count=6)
    assert (outcome.made, outcome.kept) == (3, 3)
    assert calls(fake["calls"])[-1]["lines"] == [gen_cmd.prompt_line(plan.items[2], plan.settings)] + \
        [gen_cmd.prompt_line(i, plan.settings) for i in gen.plan_generation(fake["run"], count=6).items[4:]]
    assert [r["image_name"] for r in _metadata(plan)] == [f"SYN_{n:07d}" for n in range(1, 7)]


def test_a_smaller_count_after_a_larger_one_reports_the_images_not_listed(fake):
    plan, first, _ = _generate(fake, count=5)
    assert first.unlisted == []
    _, outcome, _ = _generate(fake, count=3)
    assert (outcome.made, outcome.kept) == (0, 3)
    assert [r["image_name"] for r in _metadata(plan)] == [f"SYN_{n:07d}" for n in range(1, 4)]
    assert outcome.unlisted == ["SYN_0000004.png", "SYN_0000005.png"]


def test_cli_warns_about_images_beyond_the_count(fake):
    args = ["--sd-scripts", str(fake["sd"])]
    assert CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "3", *args]).exit_code == 0
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "2", *args])
    assert result.exit_code == 0, result.output
    assert "1 images in" in result.output and "beyond the count 2" in result.output and "SYN_0000003.png" in result.output


def test_an_image_whose_png_says_another_seed_is_regenerated(fake):
    plan, _, _ = _generate(fake, count=2)
    (plan.synthetic / "images" / "SYN_0000002.png").write_bytes(png_with_text(8, 8, {"prompt": "x", "seed": "1"}))
    _, outcome, _ = _generate(fake, count=2)
    assert (outcome.made, outcome.kept) == (1, 1)


def test_other_settings_into_the_same_folder_are_refused(fake):
    _generate(fake, count=2)
    with pytest.raises(MedsynthError, match=r"made with lora_file = 'melanoma_lora.safetensors', this run has 'melanoma_lora-000002.safetensors'.*another output folder"):
        _generate(fake, count=2, epoch=2)


def test_a_failing_generation_keeps_what_it_made_and_returns_the_exit_code(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail2")
    plan, outcome, _ = _generate(fake, count=5)
    assert outcome.exit_code == 3 and outcome.made == 2 and outcome.missing == [3, 4, 5]
    assert [r["image_name"] for r in _metadata(plan)] == ["SYN_0000001", "SYN_0000002"]
    monkeypatch.setenv("FAKE_MODE", "ok")
    _, outcome, _ = _generate(fake, count=5)
    assert (outcome.made, outcome.kept, outcome.missing) == (3, 2, [])


def test_an_output_with_the_wrong_seed_is_an_error_naming_the_file(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "wrongseed")
    with pytest.raises(MedsynthError, match=r"im_000001.png: sd-scripts wrote seed"):
        _generate(fake, count=2)


def test_several_processes_share_the_images_one_gpu_each(fake):
    plan, outcome, printed = _generate(fake, count=5, gpu_ids=(0, 1))
    assert outcome.made == 5
    by_gpu = {c["cuda"]: c["lines"] for c in calls(fake["calls"])}
    assert sorted(by_gpu) == ["0", "1"]
    assert sorted(by_gpu["0"] + by_gpu["1"]) == sorted(gen_cmd.prompt_line(i, plan.settings) for i in plan.items)
    assert "[0] fake gen: 3 prompts" in printed and "[1] fake gen: 2 prompts" in printed
    assert len(_metadata(plan)) == 5


# ----------------------------------------------------------------------------------------------- the CLI

def test_dry_run_prints_the_command_and_first_prompts_and_writes_nothing(fake, tmp_path):
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "7", "--dry-run",
                                                   "--sd-scripts", str(tmp_path / "nowhere")])
    assert result.exit_code == 0, result.output
    plan = gen.plan_generation(fake["run"], count=7)
    assert "sdxl_gen_img.py" in result.output and "--network_weights" in result.output
    assert gen_cmd.prompt_line(plan.items[0], plan.settings) in result.output
    assert "7 to generate" in result.output and "warning (a launch would stop here)" in result.output
    assert not (fake["run"] / "synthetic").exists()


def test_dry_run_command_is_shell_quoted_for_paths_with_spaces(fake, tmp_path):
    sd = tmp_path / "sd scripts"
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "2", "--dry-run",
                                                   "--sd-scripts", str(sd)])
    assert result.exit_code == 0, result.output
    line = result.output.split("command (first process):\n", 1)[1].splitlines()[0]
    assert str(sd / "sdxl_gen_img.py") in shlex.split(line)


def test_cli_generates_and_prints_a_summary(fake, tmp_path):
    out = tmp_path / "elsewhere"
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "3", "--balance", "sex",
                                                   "--out", str(out), "--sd-scripts", str(fake["sd"])])
    assert result.exit_code == 0, result.output
    assert "3 generated, 0 kept" in result.output
    assert re.search(r"sex: female (67|33)% \(training 50%\), male (33|67)% \(training 50%\)", result.output)
    assert len(list((out / "synthetic" / "images").glob("SYN_*.png"))) == 3


def test_cli_exits_with_the_generators_code(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail2")
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "3", "--sd-scripts", str(fake["sd"])])
    assert result.exit_code == 3 and "exited with code 3" in result.output


def test_cli_reports_a_zero_exit_without_images(fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "none")
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "2", "--sd-scripts", str(fake["sd"])])
    assert result.exit_code == 1 and "exited 0 but 2 images are missing" in result.output


def test_cli_refuses_both_distribution_modes(fake):
    result = CliRunner().invoke(generate_command, [str(fake["run"]), "--count", "2", "--match-distribution",
                                                   "--balance", "site"])
    assert result.exit_code == 1 and "exclude each other" in result.output


def test_cli_help_explains_every_option():
    result = CliRunner().invoke(generate_command, ["--help"])
    for option in ("--count", "--epoch", "--match-distribution", "--balance", "--seed", "--out", "--dry-run",
                   "--batch-size", "--num-processes", "--keep-hair", "--offline", "--cpu", "--drop-memorized"):
        assert option in result.output


# ----------------------------------------------------------------------------------------------- sd-scripts' own parsers

def test_sd_scripts_own_parsers_read_the_command_and_prompt_file_as_meant(fake, sd_scripts_dir, tmp_path):
    plan = gen.plan_generation(fake["run"], count=4, seed=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(gen_cmd.prompt_line(i, plan.settings) + "\n" for i in plan.items), encoding="utf-8")
    argv = gen_cmd.gen_command(sys.executable, sd_scripts_dir, plan.settings, lora=plan.lora, prompts=prompts,
                           outdir=tmp_path / "o", batch_size=2, cpu=True)
    done = subprocess.run([sys.executable, str(HERE / "gen_parser_probe.py")], input=json.dumps({"argv": argv}),
                          capture_output=True, text=True, cwd=sd_scripts_dir, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(sd_scripts_dir), "HF_HUB_OFFLINE": "1"})
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("GEN_PROBE ")), None)
    assert done.returncode == 0 and line, done.stderr[-3000:]
    seen = json.loads(line[len("GEN_PROBE "):])
    assert seen["launch"]["script"] == str(sd_scripts_dir / "sdxl_gen_img.py") and seen["launch"]["cpu"]
    args, s = seen["args"], plan.settings
    assert args["ckpt"] == s.model and args["network_module"] == ["networks.lora"]
    assert args["network_weights"] == [str(plan.lora)] and args["from_file"] == str(prompts)
    assert (args["sampler"], args["steps"], args["scale"], args["W"], args["H"]) == ("euler_a", 12, 6.5, 512, 768)
    assert args["sequential_file_name"] and args["batch_size"] == 2 and args["images_per_prompt"] == 1
    assert args["bf16"] and args["sdpa"]
    for parsed, item in zip(seen["prompts"], plan.items, strict=True):
        assert parsed == {"prompt": item.prompt, "width": 512, "height": 768, "steps": 12, "scale": 6.5,
                          "seeds": [item.seed], "negative_prompt": s.negative_prompt, "variants": 1}


def test_each_process_sees_one_of_the_visible_gpus(monkeypatch):
    from orchestrator.generate.job import gpu_ids_per_process as _gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _gpus(2, cpu=False) == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1b,GPU-77c2")  # UUIDs, as some schedulers set them
    assert _gpus(2, cpu=False) == ["GPU-8a1b", "GPU-77c2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _gpus(3, cpu=False) == ["0", "1", "2"]
    assert _gpus(1, cpu=False) == [None] and _gpus(2, cpu=True) == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(MedsynthError, match="lists 1"):
        _gpus(2, cpu=False)


def test_png_text_reads_what_pil_writes_as_sd_scripts_does(tmp_path):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()  # sd-scripts: metadata.add_text("prompt", ...), ("seed", ...); non-Latin-1 text becomes iTXt
    info.add_text("prompt", "photo of skin, me1anoma — ünïcode")
    info.add_text("seed", "123")
    Image.new("RGB", (16, 16)).save(tmp_path / "im.png", pnginfo=info)
    assert outputs.png_text(tmp_path / "im.png") == {"prompt": "photo of skin, me1anoma — ünïcode", "seed": "123"}
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert outputs.png_text(tmp_path / "bad.png") == {}


def test_prompts_keep_the_site_wording_the_dataset_was_captioned_with(tmp_path):
    from orchestrator.dataset.settings import DatasetSettings
    from orchestrator.dataset.build import build_dataset
    from orchestrator.common.paths import DEMO_DIR

    dataset = build_dataset(DatasetSettings(csv=(DEMO_DIR / "metadata.csv",), images=(DEMO_DIR / "images",),
                                            out=tmp_path / "ds", resolution=256, workers=1,
                                            site_map={"posterior torso": "back"}), progress=False).out
    plan = gen.plan_generation(make_run(tmp_path, dataset), count=40, seed=3)
    prompts = [item.prompt for item in plan.items]
    assert any(" on back" in p for p in prompts)
    assert not any("posterior torso" in p for p in prompts)


def test_generation_json_reads_back_as_the_settings_with_its_schema_version(fake):
    plan, _, _ = _generate(fake, count=1)
    assert json.loads((plan.synthetic / "generation.json").read_text())["schema_version"] == 1
    assert outputs.read_generation(plan.synthetic) == plan.settings
    assert outputs.read_generation(plan.synthetic / "nothing-here") is None
    assert outputs.read_generation_run(plan.synthetic) == plan.run.run_dir.resolve()   # the leak check follows it


DELETED = object()


@pytest.mark.parametrize("edit, message", [
    ({"schema_version": DELETED}, None),  # written before the file had a version: version 1, read as it is
    ({"schema_version": 2}, "generation record schema version 2; this medsynth reads version 1"),
    ({"steps": None}, "key 'steps' is None, not of type <class 'int'> (hand-edited wrongly?)"),
    ({"network_args": "a=1"}, "key 'network_args' is 'a=1', not of type tuple[str, ...]"),
    ({"sdpa": 1}, "key 'sdpa' is 1, not of type <class 'bool'>"),
    ({"seed": DELETED}, "key 'seed' is missing (hand-edited wrongly?): move the folder away"),
])
def test_a_hand_edited_generation_json_is_one_line_naming_the_file_and_key(fake, edit, message):
    plan, _, _ = _generate(fake, count=1)
    path = plan.synthetic / "generation.json"
    data = json.loads(path.read_text())
    for key, value in edit.items():
        if value is DELETED:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    if message is None:
        assert outputs.read_generation(plan.synthetic) == plan.settings
        return
    with pytest.raises(MedsynthError) as caught:
        outputs.read_generation(plan.synthetic)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_the_synthetic_metadata_reader_names_a_missing_column(fake):
    plan, _, _ = _generate(fake, count=2)
    assert [r["image_name"] for r in _metadata(plan)] == ["SYN_0000001", "SYN_0000002"]
    path = plan.synthetic / "metadata.csv"
    path.write_text(path.read_text().replace("lora_sha256", "lora_hash"))
    with pytest.raises(MedsynthError, match=re.escape(f"{path}: not a medsynth generate metadata file: no column "
                                                      f"'lora_sha256'")):
        _metadata(plan)


# ----------------------------------------------------------------------------------------------- --drop-memorized

def _plant_copy(fake, plan, number: int) -> None:
    """Overwrite SYN_<number> with a flipped copy of a training image, its PNG text still saying its seed and
    prompt (a memorized image as sdxl_gen_img.py would write it)."""
    item = plan.items[number - 1]
    source = next((fake["run"].parent.parent / "ds" / "train").rglob("*.jpg"))
    rgb = cv2.flip(cv2.imread(str(source)), 1)[:, :, ::-1]
    (plan.synthetic / "images" / f"SYN_{number:07d}.png").write_bytes(
        png_with_text(rgb.shape[1], rgb.shape[0], {"prompt": item.prompt, "seed": str(item.seed)}, rgb=rgb))


def test_a_dropped_image_is_neither_generated_again_nor_listed(fake):
    plan, _, _ = _generate(fake, count=3)
    _plant_copy(fake, plan, 2)
    assert drop_memorized(plan.synthetic, fake["run"].parent.parent / "ds" / "train").moved == ["SYN_0000002.png"]
    _, outcome, _ = _generate(fake, count=3)
    assert (outcome.made, outcome.kept, outcome.set_aside, outcome.missing) == (0, 2, 1, [])
    assert len(calls(fake["calls"])) == 1
    assert [r["image_name"] for r in _metadata(plan)] == ["SYN_0000001", "SYN_0000003"]
    _, outcome, _ = _generate(fake, count=4)
    assert calls(fake["calls"])[-1]["lines"] == [gen_cmd.prompt_line(gen.plan_generation(fake["run"], count=4)
                                                                      .items[3], plan.settings)]
    assert not (plan.synthetic / "images" / "SYN_0000002.png").exists()


def test_cli_drop_memorized_reports_the_dropped_images_and_keeps_them_dropped(fake):
    args = [str(fake["run"]), "--count", "3", "--sd-scripts", str(fake["sd"])]
    assert CliRunner().invoke(generate_command, args).exit_code == 0
    _plant_copy(fake, gen.plan_generation(fake["run"], count=3), 3)
    result = CliRunner().invoke(generate_command, [*args, "--drop-memorized"])
    assert result.exit_code == 0, result.output
    assert "memorization screen: 1 of 3 images dropped as near-copies of a training image" in result.output
    assert "1 of the 3 images are set aside in memorized/" in result.output
    assert (fake["run"] / "synthetic" / "memorized" / "SYN_0000003.png").is_file()
    again = CliRunner().invoke(generate_command, args)  # without the flag: still dropped, nothing screened
    assert again.exit_code == 0, again.output
    assert "0 generated, 2 kept" in again.output and "1 of the 3 images are set aside" in again.output
    assert "memorization screen" not in again.output


def test_dry_run_says_the_screen_will_run_and_refuses_a_dataset_without_training_images(fake, tmp_path):
    args = [str(fake["run"]), "--count", "2", "--dry-run", "--sd-scripts", str(fake["sd"])]
    result = CliRunner().invoke(generate_command, [*args, "--drop-memorized"])
    assert result.exit_code == 0, result.output
    assert f"memorization screen: after the generation, every image is screened against the training images in " \
           f"{tmp_path / 'ds' / 'train'}" in result.output
    assert "memorization screen" not in CliRunner().invoke(generate_command, args).output
    shutil.rmtree(tmp_path / "ds" / "train")
    result = CliRunner().invoke(generate_command, [*args, "--drop-memorized"])
    assert result.exit_code != 0 and f"{tmp_path / 'ds' / 'train'}: no training images" in result.output
    assert CliRunner().invoke(generate_command, args).exit_code == 0
