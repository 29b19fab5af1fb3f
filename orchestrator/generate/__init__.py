"""Synthetic images from a run's LoRA with sd-scripts' sdxl_gen_img.py, and the synthetic/ folder."""
