"""medsynth: ISIC dermoscopy archives -> kohya-ss sd-scripts SDXL LoRA runs."""

__version__ = "0.1.0"
