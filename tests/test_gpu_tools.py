"""Cheap checks of the GPU/e2e tools (tools/, bench/): no model is built and nothing is trained here."""

from __future__ import annotations

import ast
import json
import shutil
import gzip
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.common.paths import REPO_ROOT, SD_SCRIPTS_DIR
from script_loader import load_script

build_tokenizers = load_script("tools/build_tokenizers.py")
make_random_sdxl = load_script("tools/make_random_sdxl.py")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch not installed (it ships the CLIP BPE vocab): run 'make setup-kohya'")
    out = tmp_path_factory.mktemp("tok")
    build_tokenizers.build_tokenizers(out)
    return out


def test_tokenizer_folders_load_offline_and_pad_to_77(tokenizer_dir, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in build_tokenizers.TOKENIZER_FOLDERS:
        tok = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir / name, local_files_only=True)
        ids = tok("photo of female skin, me1anoma on lower extremity", padding="max_length",
                  max_length=tok.model_max_length, truncation=True).input_ids
        assert (len(tok), tok.model_max_length, len(ids)) == (49408, 77, 77)
        assert ids[0] == tok.bos_token_id


def test_tokenizer_ids_match_open_clip_reference(tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    from open_clip.tokenizer import SimpleTokenizer

    # no "!": it is bigG's pad token, an added token there (as in the hub's own laion tokenizer)
    text = "Photo of male skin, ME1ANOMA on the posterior torso, at age 45; dermoscopy (10x)."
    reference = SimpleTokenizer().encode(text)
    for name in build_tokenizers.TOKENIZER_FOLDERS:
        tok = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir / name)
        assert tok(text, add_special_tokens=False).input_ids == reference


def test_tokenizer_folder_names_are_the_ones_sd_scripts_looks_up():
    source = SD_SCRIPTS_DIR / "library" / "strategy_sdxl.py"
    if not source.is_file():
        pytest.skip("vendor/sd-scripts is empty")
    hub_ids = {node.targets[0].id: node.value.value for node in ast.parse(source.read_text()).body
               if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
               and node.targets[0].id in ("TOKENIZER1_PATH", "TOKENIZER2_PATH")}
    assert sorted(h.replace("/", "_") for h in hub_ids.values()) == sorted(build_tokenizers.TOKENIZER_FOLDERS)


def test_vocab_file_that_is_not_clip_bpe_is_refused(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b\nc d\n"))
    with pytest.raises(SystemExit, match="not the CLIP BPE vocab"):
        build_tokenizers.build_tokenizers(tmp_path / "out", bad)


def _hardcoded_clip_configs(sdxl_model_util: Path) -> list[dict]:
    """The keyword arguments of each CLIPTextConfig(...) call in sd-scripts' checkpoint loader, in order."""
    tree = ast.parse(sdxl_model_util.read_text())
    loader = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load_models_from_sdxl_checkpoint")
    return [{kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            for call in ast.walk(loader)
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "CLIPTextConfig"]


def test_random_checkpoint_text_encoders_use_the_configs_sd_scripts_loads_into():
    source = SD_SCRIPTS_DIR / "library" / "sdxl_model_util.py"
    if not source.is_file():
        pytest.skip("vendor/sd-scripts is empty")
    te1, te2 = _hardcoded_clip_configs(source)
    assert make_random_sdxl.TE1_CONFIG == te1
    assert make_random_sdxl.TE2_CONFIG == te2


def test_random_checkpoint_refuses_a_non_safetensors_name(tmp_path):
    with pytest.raises(SystemExit, match="must be a .safetensors file"):
        make_random_sdxl.main([str(tmp_path / "model.ckpt")])


# ------------------------------------------------------------------------------------------------ figures

gpu_figures = load_script("bench/gpu_figures.py")
tslog = load_script("bench/tslog.py")
trim_bnb_wheel = load_script("tools/trim_bnb_wheel.py")
# a real `medsynth train --cpu` run (2 images at 256 px, 2 epochs, 12 steps), its output timestamped by
# bench/tslog.py; paths in the files were shortened, nothing else changed
CPU_RUN = REPO_ROOT / "tests" / "data" / "cpu_train_run"


def test_timestamped_log_gives_every_step_and_the_latent_cache_time():
    log = gpu_figures.parse_tslog(CPU_RUN / "train_ts.log")
    assert sorted(log["steps"]) == list(range(1, log["steps_total"] + 1))
    times = [log["steps"][n] for n in sorted(log["steps"])]
    assert times == sorted(times)
    events = log["events"]
    assert events["load_model"] < events["cache_latents"] < events["cache_text_encoder"] < events["train_start"] \
        <= events["loop_start"] < times[0]
    assert 0 < events["cache_latents_s"] < events["cache_text_encoder"] - events["cache_latents"]
    assert len(events["sample"]) == len(events["save"]) == 2  # one per epoch
    assert log["errors"] == []


def test_tensorboard_and_timestamped_log_agree_on_the_step_rate():
    pytest.importorskip("tensorboard")
    tb = {step: wall for step, wall, _ in gpu_figures.tensorboard_scalars(CPU_RUN)["loss/current"]}
    from_log = gpu_figures.parse_tslog(CPU_RUN / "train_ts.log")["steps"]
    assert sorted(tb) == sorted(from_log)
    rate_tb = gpu_figures.steady_state(tb)["steps_per_s"]
    rate_log = gpu_figures.steady_state(from_log)["steps_per_s"]
    assert rate_tb == pytest.approx(rate_log, rel=0.15)


def test_steady_state_skips_warm_up_steps_and_epoch_end_gaps():
    times, t = {}, 0.0
    for step in range(1, 21):
        t += 9.0 if step <= 2 else (12.0 if step == 11 else 0.5)  # slow start, one save + sample gap
        times[step] = t
    fig = gpu_figures.steady_state(times, warmup=5)
    assert fig["steps_per_s"] == pytest.approx(2.0)
    assert fig["gaps_s"] == [12.0]
    assert fig["steady_intervals"] == 14


def test_steady_state_leaves_out_steps_that_cross_an_epoch_end():
    times = {step: 0.5 * step + (1.0 if step > 10 else 0.0) for step in range(1, 21)}  # a 1 s save after step 10
    assert gpu_figures.steady_state(times, warmup=0)["steps_per_s"] < 2.0
    fig = gpu_figures.steady_state(times, warmup=0, steps_per_epoch=10)
    assert fig["steps_per_s"] == pytest.approx(2.0)
    assert fig["steady_intervals"] == 18


def test_run_figures_without_lora_fall_back_to_the_configured_batch(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CPU_RUN, run)
    fig = gpu_figures.run_figures(run, run / "train_ts.log")
    assert fig["lora_files"] == [] and fig["sample_images"] == 0
    assert fig["images_per_step"] == json.loads((run / "run.json").read_text())["config"]["train_batch_size"]
    assert fig["images_per_s"] == pytest.approx(fig["steps_per_s"] * fig["images_per_step"], rel=1e-3)


def test_mfu_is_achieved_flops_over_the_card_peak(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(CPU_RUN, run)
    flops = {"flops_per_image": {"step": 16.25e12}}
    fig = gpu_figures.run_figures(run, run / "train_ts.log", flops=flops, peak_tflops=989.0)
    assert fig["tflops_achieved"] == pytest.approx(16.25 * fig["images_per_s"], abs=0.06)
    assert fig["mfu_pct"] == pytest.approx(100 * fig["tflops_achieved"] / 989.0, abs=0.06)


def test_lora_inspection_reports_the_stored_rank_and_metadata(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors", reason="safetensors not installed (sd-scripts' requirements: make setup-kohya)")
    from safetensors.torch import save_file

    down = torch.randn(8, 3) @ torch.randn(3, 640)  # rank 3 stored in a dim-8 slot
    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    path = tmp_path / "x_lora.safetensors"
    save_file({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": torch.zeros(640, 8),
               f"{key}.alpha": torch.tensor(4.0)}, str(path), metadata={"ss_network_dim": "8", "ss_network_alpha": "4.0"})
    info = gpu_figures.inspect_lora(path)
    assert (info["lora_down_rank"], info["lora_down_shape"], info["lora_modules"]) == (3, [8, 640], 1)
    assert (info["ss_network_dim"], info["ss_network_alpha"]) == ("8", "4.0")


def test_card_peak_lookup_tells_h100_variants_apart():
    assert gpu_figures.peak_bf16_tflops("NVIDIA H100 PCIe") < gpu_figures.peak_bf16_tflops("NVIDIA H100 80GB HBM3")
    assert gpu_figures.peak_bf16_tflops("NVIDIA H200") == gpu_figures.peak_bf16_tflops("NVIDIA H100 80GB HBM3")
    assert gpu_figures.peak_bf16_tflops("Some Unknown Card") is None


def test_nvidia_smi_samples_give_peak_memory_and_busy_utilisation(tmp_path):
    csv = tmp_path / "mem.csv"
    csv.write_text("1024, 0\n70000, 50\n[N/A], [N/A]\n65000, 100\n")
    fig = gpu_figures.gpu_memory(csv)
    assert fig["peak_vram_mib_nvidia_smi"] == 70000
    assert fig["gpu_util_mean_pct_when_busy"] == 75.0
    assert fig["gpu_samples"] == 3


def test_combined_figures_divide_every_run_by_the_seed_blog_and_default_runs():
    out = gpu_figures.combine({"default": {"images_per_s": 12.0}, "seed-blog": {"images_per_s": 1.5},
                               "compile": {"images_per_s": 18.0}, "broken": {}}, {"versions": {"gpu": "X"}})
    assert out["speedup_images_per_s"] == {"default/seed-blog": 8.0, "compile/seed-blog": 12.0,
                                           "compile/default": 1.5}
    assert out["versions"] == {"gpu": "X"} and set(out["runs"]) == {"default", "seed-blog", "compile", "broken"}


def test_runs_that_shared_the_card_get_the_overhead_measured_on_runs_that_had_it_alone():
    parts = {"default": {"peak_vram_mib_nvidia_smi": 80000, "torch_max_reserved_mib": 79000},
             "seed-blog": {"peak_vram_mib_nvidia_smi": 17000, "torch_max_reserved_mib": 15800},
             "low-vram": {"shared_gpu": True, "peak_vram_mib_nvidia_smi": 40000, "torch_max_reserved_mib": 13000},
             "killed": {"peak_vram_mib_nvidia_smi": 5000}}
    out = gpu_figures.combine(parts, {})
    assert out["cuda_overhead_mib"] == 1100.0  # median of 1000 and 1200; the shared run's 27000 is not used
    assert out["runs"]["low-vram"]["peak_vram_mib_estimated"] == 14100.0
    assert "peak_vram_mib_estimated" not in out["runs"]["killed"]


def test_timestamped_nvidia_smi_samples_are_split_into_the_runs_phases(tmp_path):
    from datetime import datetime

    t0 = datetime(2026, 11, 26, 8, 0, 0).timestamp()
    # two epochs: steps, then save + sample at each epoch end, then the final save
    log = {"t0_epoch": t0, "events": {"loop_start": 60.0, "save": [99.5, 139.5, 145.0], "sample": [100.0, 140.0]},
           "steps": {1: 62.0, 2: 64.0, 3: 99.0, 4: 110.0, 5: 139.0}}
    rows = [(10, 7000), (50, 9000), (70, 30000), (105, 33000), (120, 31000), (141, 35000), (150, 12000)]
    csv = tmp_path / "mem.csv"
    csv.write_text("".join(f"2026/11/26 08:0{s // 60}:{s % 60:02d}.000, {m}, 50\n" for s, m in rows))
    memory = gpu_figures.gpu_memory(csv)
    assert memory["peak_vram_mib_nvidia_smi"] == 35000 and len(memory["samples"]) == len(rows)
    assert gpu_figures.memory_phases(memory["samples"], log) == {"setup": 9000, "training": 31000,
                                                                 "sampling": 35000, "end": 12000}
    assert gpu_figures.memory_phases(memory["samples"], {**log, "t0_epoch": None}) == {}  # no tslog t0: no phases


def test_allocator_peaks_are_read_for_the_run_they_belong_to(tmp_path):
    peaks = tmp_path / "peaks"
    peaks.mkdir()
    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    for pid, run, mib in ((1, run_a, 14000.0), (2, run_b, 21000.0), (3, run_a, 900.0)):
        (peaks / f"{pid}.json").write_text(json.dumps({
            "pid": pid, "argv": ["sdxl_train_network.py", "--config_file", str(run / "train.toml")],
            "devices": [{"index": 0, "name": "H200", "max_reserved_mib": mib, "max_allocated_mib": mib - 500}]}))
    assert gpu_figures.cuda_peaks(peaks, run_a) == {"torch_max_reserved_mib": 14000.0,
                                                    "torch_max_allocated_mib": 13500.0, "torch_peak_pid": 1}
    assert gpu_figures.cuda_peaks(peaks, tmp_path / "runs" / "c") == {}


def test_exit_hook_records_the_processes_cuda_peaks(tmp_path):
    """The hook itself needs CUDA, which this machine lacks: a stand-in torch module plays the CUDA runtime."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "torch.py").write_text(
        "class cuda:\n"
        "    is_available = is_initialized = staticmethod(lambda: True)\n"
        "    device_count = staticmethod(lambda: 1)\n"
        "    get_device_name = staticmethod(lambda i: 'Card')\n"
        "    max_memory_reserved = staticmethod(lambda i: 3 * 2**30)\n"
        "    max_memory_allocated = staticmethod(lambda i: 2 * 2**30)\n")
    out = tmp_path / "peaks"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'bench' / 'cuda_peak'}{os.pathsep}{fake}",
           "MEDSYNTH_CUDA_PEAK_DIR": str(out)}
    subprocess.run([sys.executable, "-c", "import torch", "--config_file", "r/train.toml"], env=env, check=True)
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)  # no torch: nothing to report
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["devices"] == [{"index": 0, "name": "Card", "max_reserved_mib": 3072.0,
                                  "max_allocated_mib": 2048.0}]
    assert record["argv"][-1] == "r/train.toml"


def test_timestamp_filter_splits_progress_bar_redraws_into_lines():
    import io
    import os

    read, write = os.pipe()
    os.write(write, b"loading\nsteps:   0%| 0/2\rsteps:  50%| 1/2\rsteps: 100%| 2/2\ndone")
    os.close(write)
    log, echo = io.StringIO(), io.StringIO()
    with os.fdopen(read, "rb") as src:
        tslog.timestamp_stream(src, log, echo, echo_every=1e9)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("# t0_epoch=")
    assert [ln.split("] ", 1)[1] for ln in lines[1:]] == ["loading", "steps:   0%| 0/2", "steps:  50%| 1/2",
                                                         "steps: 100%| 2/2", "done"]
    assert "steps:  50%" not in echo.getvalue()  # redraws are throttled on the console, not in the log


def test_trimmed_wheel_keeps_only_the_named_native_libraries_with_a_valid_record(tmp_path):
    import base64
    import hashlib
    import zipfile

    src = tmp_path / "bitsandbytes-0.0-py3-none-manylinux_2_24_x86_64.whl"
    files = {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/libbitsandbytes_cpu.so": b"cpu",
             "bitsandbytes/libbitsandbytes_cuda130.so": b"130", "bitsandbytes/libbitsandbytes_cuda121.so": b"121"}
    with zipfile.ZipFile(src, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("bitsandbytes-0.0.dist-info/RECORD", "stale\n")
    dst = trim_bnb_wheel.trim_wheel(src, tmp_path / "out")
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.0.dist-info/RECORD").decode().splitlines()
        for row in record[:-1]:
            name, digest, size = row.split(",")
            data = z.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
    assert "bitsandbytes/libbitsandbytes_cuda121.so" not in names
    assert {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"} <= names


def test_unet_step_flops_count_activation_gradients_and_grow_with_resolution(sd_scripts_dir):
    flops_unet = load_script("bench/flops_unet.py")
    small = flops_unet.unet_step_flops(256, 256, network_dim=8)
    large = flops_unet.unet_step_flops(512, 512, network_dim=8)
    assert small["step"] == small["forward"] + small["backward"]
    assert small["backward"] > 0.5 * small["forward"] > 0  # activation gradients, not only the LoRA weights
    assert 3 < large["forward"] / small["forward"] < 6  # 4x the pixels; text-side projections do not grow


def test_compiled_run_log_gives_recompiles_and_the_first_step_time(tmp_path):
    log = tmp_path / "train_ts.log"
    log.write_text("# t0_epoch=1000.000\n"
                   "[   10.000] load StableDiffusion checkpoint\n"
                   "[   40.000] steps:   0%|          | 0/4 [00:00<?, ?it/s]\n"
                   "[  130.500] steps:  25%|##        | 1/4 [01:30<04:30, 90.5s/it]\n"
                   "[  131.000] V1126 [0/1] Recompiling function forward in sdxl_original_unet.py:1077\n"
                   "[  190.000] steps:  50%|#####     | 2/4 [02:30<02:30, 60.0s/it]\n"
                   "[  191.000] V1126 [0/2] Recompiling function forward in sdxl_original_unet.py:1077\n")
    parsed = gpu_figures.parse_tslog(log)
    assert parsed["events"]["recompiles"] == 2 and parsed["t0_epoch"] == 1000.0
    run = tmp_path / "run"
    run.mkdir()
    assert gpu_figures.run_figures(run, log)["first_step_s"] == 90.5
