"""Build a randomly initialised SDXL base checkpoint of the real architecture, for training without a hub.

The four parts are made with the classes sd-scripts loads an SDXL checkpoint into (library/sdxl_model_util.py
load_models_from_sdxl_checkpoint) and written with sd-scripts' own save_stable_diffusion_checkpoint, so
sdxl_train_network.py loads the single file exactly like sd_xl_base_1.0.safetensors ("All keys matched").
Weights are random (PyTorch default init): the models train and sample, the images are noise.

Parameters are created directly in the target dtype and device, so a bf16 build on the CPU peaks near the
file size (~7 GB) rather than at the fp32 size.

usage: python tools/make_random_sdxl.py OUT.safetensors [--device cpu|cuda] [--dtype bf16|fp16|fp32]
       [--sd-scripts DIR] [--seed N] [--check] [--json INFO.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
DTYPES = ("bf16", "fp16", "fp32")

# the text-encoder configs sdxl_model_util.load_models_from_sdxl_checkpoint hard-codes (it loads into these)
_CLIP_COMMON = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-05, dropout=0.0,
                    attention_dropout=0.0, initializer_range=0.02, initializer_factor=1.0, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, model_type="clip_text_model")
TE1_CONFIG = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  hidden_act="quick_gelu", projection_dim=768, **_CLIP_COMMON)
TE2_CONFIG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  hidden_act="gelu", projection_dim=1280, **_CLIP_COMMON)


def _import_sd_scripts(sd_scripts: Path) -> None:
    if not (sd_scripts / "library" / "sdxl_model_util.py").is_file():
        raise SystemExit(f"error: {sd_scripts} is not an sd-scripts checkout (library/sdxl_model_util.py missing)")
    sys.path.insert(0, str(sd_scripts))


def build_models(device: str, dtype_name: str, seed: int) -> dict[str, Any]:
    """The four SDXL parts, randomly initialised, already on `device` in `dtype_name`."""
    import torch
    from diffusers import AutoencoderKL
    from library import model_util, sdxl_original_unet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    torch.manual_seed(seed)
    makers: dict[str, Callable[[], Any]] = {
        "unet": lambda: sdxl_original_unet.SdxlUNet2DConditionModel(),
        "te1": lambda: CLIPTextModel(CLIPTextConfig(**TE1_CONFIG)),
        "te2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TE2_CONFIG)),
        "vae": lambda: AutoencoderKL(**model_util.create_vae_diffusers_config()),
    }
    previous = torch.get_default_dtype()
    models = {}
    try:
        torch.set_default_dtype(dtype)  # allocate (and init) in the target dtype: no fp32 copy of 3.5 B params
        with torch.device(device):
            for name, make in makers.items():
                models[name] = make().to(dtype).eval()
    finally:
        torch.set_default_dtype(previous)
    return models


def smoke_check(models: dict[str, Any]) -> dict[str, Any]:
    """One small U-Net forward and one VAE encode: random weights must still give finite numbers."""
    import torch
    from library import sdxl_model_util

    unet, vae = models["unet"], models["vae"]
    p = next(unet.parameters())
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 32, 32, device=p.device, dtype=p.dtype), torch.tensor([500], device=p.device),
                   torch.randn(1, 77, 2048, device=p.device, dtype=p.dtype),
                   torch.randn(1, 2816, device=p.device, dtype=p.dtype))
        img = torch.rand(1, 3, 256, 256, device=p.device, dtype=p.dtype) * 2 - 1
        lat = vae.encode(img).latent_dist.sample() * sdxl_model_util.VAE_SCALE_FACTOR
    return {"unet_out_finite": bool(torch.isfinite(out).all()), "unet_out_std": float(out.float().std()),
            "vae_latent_finite": bool(torch.isfinite(lat).all()), "vae_latent_std": float(lat.float().std())}


def save_checkpoint(models: dict[str, Any], out: Path) -> int:
    """Write with sd-scripts' own saver (original SDXL key layout), atomically; returns the number of keys."""
    import torch
    from library import sdxl_model_util

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial.safetensors")  # the saver picks the format from the suffix
    te2 = models["te2"]
    # real SDXL checkpoints carry OpenCLIP's logit_scale (conditioner.embedders.1.model.logit_scale)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=next(te2.parameters()).dtype)
    try:
        # save_dtype=None: the models are already in the target dtype, so no second host copy of the weights
        keys = sdxl_model_util.save_stable_diffusion_checkpoint(
            str(tmp), models["te1"], te2, models["unet"], 0, 0, None, models["vae"], logit_scale,
            {"format": "pt", "note": "random init, not a trained model"}, save_dtype=None)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return keys


def make_random_sdxl(out: Path, device: str = "cpu", dtype: str = "bf16", seed: int = 1234,
                     sd_scripts: Path = REPO_ROOT / "vendor" / "sd-scripts", check: bool = False) -> dict[str, Any]:
    """Build, optionally check, and save; returns figures (parameter counts, timings, file size)."""
    _import_sd_scripts(sd_scripts)
    t0 = time.time()
    models = build_models(device, dtype, seed)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    info: dict[str, Any] = {"device": device, "dtype": dtype, "seed": seed, "build_s": round(time.time() - t0, 1),
                            "params": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}}
    if check:
        info["check"] = smoke_check(models)
    t1 = time.time()
    info["keys"] = save_checkpoint(models, out)
    info["save_s"] = round(time.time() - t1, 1)
    info["file_bytes"] = out.stat().st_size
    info["total_s"] = round(time.time() - t0, 1)
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where the weights are made)")
    p.add_argument("--dtype", default="bf16", choices=DTYPES)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--sd-scripts", type=Path, default=REPO_ROOT / "vendor" / "sd-scripts")
    p.add_argument("--check", action="store_true", help="run a tiny U-Net forward and VAE encode before saving")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.out.suffix != ".safetensors":
        raise SystemExit(f"error: {args.out}: the checkpoint must be a .safetensors file")
    info = make_random_sdxl(args.out, args.device, args.dtype, args.seed, args.sd_scripts, args.check)
    if args.check and not (info["check"]["unet_out_finite"] and info["check"]["vae_latent_finite"]):
        raise SystemExit(f"error: random SDXL gave non-finite outputs: {info['check']}")
    print("checkpoint:", json.dumps(info))
    if args.json:
        args.json.write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
