"""Rendered-like kohya files shared by the validation tests and the sd-scripts cross-checks."""

from __future__ import annotations

import copy
from typing import Any

import toml

TRAIN_TOML = """
[model]
pretrained_model_name_or_path = 'models/sdxl.safetensors'
[network]
network_module = "networks.lora"
network_dim = 128
network_alpha = 128
network_train_unet_only = true
[optimizer]
optimizer_type = "AdamW8bit"
learning_rate = 4e-7
lr_scheduler = "constant_with_warmup"
lr_warmup_steps = 100
[training]
resolution = "1024,1024"
max_train_epochs = 10
mixed_precision = "fp16"
cache_latents = true
cache_text_encoder_outputs = true
gradient_checkpointing = true
save_model_as = "safetensors"
save_every_n_epochs = 2
output_dir = 'runs/demo'
output_name = "melanoma"
logging_dir = 'runs/demo/logs'
[sample]
sample_prompts = 'runs/demo/prompts.txt'
sample_sampler = "euler_a"
sample_every_n_epochs = 2
"""

DATASET_TOML = """
[general]
caption_extension = ".caption"
shuffle_caption = false
[[datasets]]
resolution = 1024
batch_size = 1
enable_bucket = true
bucket_reso_steps = 64
  [[datasets.subsets]]
  image_dir = 'datasets/demo/kohya/1_melanoma'
  num_repeats = 1
"""

PROMPTS = ("# epoch samples\n"
           "photo of female skin, me1anoma on lower extremity, at age 50 --n blurry, text --w 1024 --h 1024 "
           "--d 42 --l 7.5 --s 28 --ss euler_a\n"
           "\n"
           "photo of male skin, me1anoma on torso --W 1024 --H 1024 --d 7 --l 9 --s 28\n")


def train() -> dict[str, Any]:
    return toml.loads(TRAIN_TOML)


def dataset() -> dict[str, Any]:
    return toml.loads(DATASET_TOML)


def edited(base: dict, path: str, value: Any) -> dict:
    """A copy of base with base[a][b]... set to value (None deletes it)."""
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data
