"""sdxl_gen_img.py's side of `medsynth generate`: the settings that decide an image besides its prompt and seed,
one line of its --from_file, and the `accelerate launch` command (options checked against its setup_parser() and
main()'s prompt parsing by tests/gen_parser_probe.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.generate.prompts import Item

GEN_SCRIPT = "sdxl_gen_img.py"


@dataclass(frozen=True)
class GenSettings:
    """Everything that decides the pixels of an image besides its prompt and seed (and the code)."""

    model: str
    vae: str | None
    tokenizer_cache_dir: str | None
    network_module: str
    network_args: tuple[str, ...]
    lora_file: str
    lora_sha256: str
    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    negative_prompt: str
    precision: str               # no | fp16 | bf16
    sdpa: bool
    no_half_vae: bool
    seed: int
    balance: str | None
    keep_hair: bool
    epoch: int | None
    manifest_sha256: str


def decimal(value: float) -> str:
    """A float as plain decimals (6.5, 8): sd-scripts' line option regex `l ([\\d\\.]+)` reads no exponent."""
    return format(value, "f").rstrip("0").rstrip(".") or "0"


def prompt_line(item: Item, s: GenSettings) -> str:
    """One line of sdxl_gen_img.py's --from_file (options parsed at sdxl_gen_img.py:2477-2700)."""
    negative = f" --n {s.negative_prompt}" if s.negative_prompt.strip() else ""
    return (f"{item.prompt}{negative} --w {s.width} --h {s.height} --s {s.steps} --l {decimal(s.cfg_scale)} "
            f"--d {item.seed}")


def gen_command(python: str, sd_scripts: Path, s: GenSettings, *, lora: Path, prompts: Path, outdir: Path,
                batch_size: int = 1, cpu: bool = False) -> list[str]:
    """`python -m accelerate.commands.launch ... sdxl_gen_img.py ...` for one process and one prompt file; with
    --sequential_file_name the k-th line's image is <outdir>/im_<k:06d>.png."""
    argv = [python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no"]
    if cpu:
        argv.append("--cpu")
    argv += [str(sd_scripts / GEN_SCRIPT), "--ckpt", s.model]
    if s.vae:
        argv += ["--vae", s.vae]
    if s.tokenizer_cache_dir:
        argv += ["--tokenizer_cache_dir", s.tokenizer_cache_dir]
    argv += ["--network_module", s.network_module, "--network_weights", str(lora), "--network_mul", "1.0"]
    if s.network_args:
        argv += ["--network_args", *s.network_args]
    argv += ["--from_file", str(prompts), "--outdir", str(outdir), "--sequential_file_name",
             "--images_per_prompt", "1", "--n_iter", "1", "--batch_size", str(batch_size),
             "--sampler", s.sampler, "--steps", str(s.steps), "--scale", decimal(s.cfg_scale),
             "--W", str(s.width), "--H", str(s.height)]
    if s.precision in ("fp16", "bf16"):
        argv.append(f"--{s.precision}")
    if s.sdpa:
        argv.append("--sdpa")
    if s.no_half_vae:
        argv.append("--no_half_vae")
    return argv
