"""FLOPs of one SDXL LoRA training step per image: U-Net forward + backward, counted by torch.utils.flop_counter.

The model is sd-scripts' own SdxlUNet2DConditionModel with networks.lora applied the way sdxl_train_network.py
applies it (U-Net only), built on the meta device: no weights are allocated, so this runs on any CPU in seconds.
The base weights are frozen as in LoRA training, so the backward pass computes activation gradients and the LoRA
weights' gradients only; that is the work a step really does ("model FLOPs", gradient-checkpointing recompute
excluded). The figure feeds the MFU in bench/gpu_figures.py.

usage: python bench/flops_unet.py [--height 1024 --width 1024] [--batch 1] [--network-dim 128] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO_ROOT / "vendor" / "sd-scripts"
CONTEXT_TOKENS, CONTEXT_DIM, ADM_DIM = 77, 2048, 2816  # SDXL: both text encoders' states concatenated; pooled+sizes


def unet_step_flops(height: int, width: int, batch: int = 1, network_dim: int | None = 128,
                    sd_scripts: Path = SD_SCRIPTS) -> dict[str, int]:
    """FLOPs of forward and of backward for one training step on `batch` images of height x width pixels."""
    sys.path.insert(0, str(sd_scripts))
    import torch
    from library import sdxl_original_unet
    from torch.utils.flop_counter import FlopCounterMode

    if height % 8 or width % 8:
        raise SystemExit(f"error: {height}x{width}: the VAE needs sides divisible by 8")
    with torch.device("meta"):
        unet = sdxl_original_unet.SdxlUNet2DConditionModel()
        unet.requires_grad_(False)
        if network_dim:
            from networks import lora

            network = lora.create_network(1.0, network_dim, network_dim, None, [], unet)
            network.apply_to([], unet, apply_text_encoder=False, apply_unet=True)
        else:  # no adapter: let gradients reach the input so the backward still runs through every layer
            network = None
        latents = torch.randn(batch, 4, height // 8, width // 8, requires_grad=network is None)
        timesteps = torch.randint(0, 1000, (batch,))
        context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM)
        adm = torch.randn(batch, ADM_DIM)
        # one counter per pass: re-entering a FlopCounterMode resets its counts
        forward_counter, backward_counter = FlopCounterMode(display=False), FlopCounterMode(display=False)
        with forward_counter:
            pred = unet(latents, timesteps, context, adm)
        loss = torch.nn.functional.mse_loss(pred, torch.zeros_like(pred))
        with backward_counter:
            loss.backward()
    forward, backward = forward_counter.get_total_flops(), backward_counter.get_total_flops()
    return {"forward": forward, "backward": backward, "step": forward + backward}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--network-dim", type=int, default=128, help="LoRA rank (0: no LoRA)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    flops = unet_step_flops(args.height, args.width, args.batch, args.network_dim or None)
    per_image = {k: v // args.batch for k, v in flops.items()}
    result = {"height": args.height, "width": args.width, "batch": args.batch, "network_dim": args.network_dim,
              "flops_per_image": per_image,
              "tflop_per_image_step": round(per_image["step"] / 1e12, 3),
              "tflop_per_image_3x_forward": round(3 * per_image["forward"] / 1e12, 3)}
    print(f"SDXL U-Net + LoRA dim {args.network_dim}, {args.height}x{args.width} (latents {args.height // 8}x"
          f"{args.width // 8}), per image: forward {per_image['forward'] / 1e12:.3f} TFLOP, backward "
          f"{per_image['backward'] / 1e12:.3f} TFLOP, step {per_image['step'] / 1e12:.3f} TFLOP "
          f"(the 3x-forward convention would say {result['tflop_per_image_3x_forward']:.3f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
