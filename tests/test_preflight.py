"""Preflight checks: GPUs, optimizer packages, base model, offline tokenizers, disk, the sd-scripts pin, probes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.train import preflight
from orchestrator.train.config import TrainConfig
from orchestrator.common.errors import MedsynthError
from train_helpers import write_fake_sd_scripts, write_tokenizers


def probe(gpus=(), bnb=True):
    return preflight.Probe("py", {"torch": "2"}, tuple(preflight.Gpu(n, g) for n, g in gpus), bnb, True)


def test_gpu_ids_and_process_count_are_checked():
    two = probe([("a", 80), ("b", 24)])
    assert [g.name for g in preflight.check_gpus(two, min_gpu_gib=15, num_processes=1, gpu_ids=(1,))] == ["b"]
    with pytest.raises(MedsynthError, match="only 2 GPU"):
        preflight.check_gpus(two, min_gpu_gib=15, num_processes=1, gpu_ids=(2,))
    with pytest.raises(MedsynthError, match="needs as many GPUs"):
        preflight.check_gpus(two, min_gpu_gib=15, num_processes=3, gpu_ids=())


def test_8bit_optimizer_needs_bitsandbytes():
    with pytest.raises(MedsynthError, match="bitsandbytes"):
        preflight.check_optimizer(TrainConfig(optimizer_type="AdamW8bit"), probe(bnb=False))
    preflight.check_optimizer(TrainConfig(optimizer_type="AdamW"), probe(bnb=False))


@pytest.mark.parametrize("name", ["PagedAdamW", "PagedAdamW32bit"])
def test_paged_optimizers_need_bitsandbytes_too(name):
    # sd-scripts imports bitsandbytes for them (train_util.get_optimizer) although they are not 8-bit
    with pytest.raises(MedsynthError, match="bitsandbytes"):
        preflight.check_optimizer(TrainConfig(optimizer_type=name), probe(bnb=False))


def test_model_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(MedsynthError, match="expected a .safetensors"):
        preflight.check_model(str(tmp_path / "m.txt"), offline=False)
    (tmp_path / "diffusers").mkdir()
    with pytest.raises(MedsynthError, match="model_index.json"):
        preflight.check_model(str(tmp_path / "diffusers"), offline=False)
    with pytest.raises(MedsynthError, match="not found"):
        preflight.check_model(str(tmp_path / "missing.safetensors"), offline=False)
    preflight.check_model("stabilityai/stable-diffusion-xl-base-1.0", offline=False)
    with pytest.raises(MedsynthError, match="not in the cache"):
        preflight.check_model("stabilityai/stable-diffusion-xl-base-1.0", offline=True)
    (tmp_path / "hf" / "hub" / "models--stabilityai--stable-diffusion-xl-base-1.0").mkdir(parents=True)
    preflight.check_model("stabilityai/stable-diffusion-xl-base-1.0", offline=True)


def test_offline_tokenizers_are_checked(tmp_path):
    with pytest.raises(MedsynthError, match="tokenizer_cache_dir"):
        preflight.check_tokenizers(None)
    with pytest.raises(MedsynthError, match="vocab.json missing"):
        preflight.check_tokenizers(tmp_path)
    write_tokenizers(tmp_path / "ok")
    preflight.check_tokenizers(tmp_path / "ok")
    write_tokenizers(tmp_path / "long", max_length=10**30)
    with pytest.raises(MedsynthError, match="model_max_length must be 77"):
        preflight.check_tokenizers(tmp_path / "long")


def test_disk_estimate_grows_with_what_is_kept(tmp_path):
    small = preflight.estimate_disk_bytes(TrainConfig(network_dim=8, max_train_epochs=2))
    big = preflight.estimate_disk_bytes(TrainConfig(network_dim=128, max_train_epochs=50))
    assert big > small > 0
    with pytest.raises(MedsynthError, match="free"):
        preflight.check_disk(tmp_path, TrainConfig(network_dim=10**9))


def test_missing_sd_scripts_is_a_clear_error(tmp_path):
    with pytest.raises(MedsynthError, match="sdxl_train_network.py not found"):
        preflight.check_sd_scripts(tmp_path, preflight.Preflight())


def test_sd_scripts_checkout_at_another_commit_is_refused(tmp_path):
    sd = write_fake_sd_scripts(tmp_path / "sd")
    git = ["git", "-C", str(sd), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    with pytest.raises(MedsynthError, match="medsynth is validated against"):
        preflight.check_sd_scripts(sd, preflight.Preflight())


def test_probe_of_a_real_interpreter_reports_packages(tmp_path):
    probe = preflight.probe_python(sys.executable, dict(os.environ))
    assert probe.python == sys.executable and "toml" in probe.packages
    assert probe.packages["toml"] is not None  # medsynth itself depends on it
    assert isinstance(probe.gpus, tuple) and isinstance(probe.tensorboard, bool)


def test_probe_of_a_missing_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(MedsynthError, match="MEDSYNTH_PYTHON"):
        preflight.probe_python(str(tmp_path / "no-python"), dict(os.environ))
