"""The benchmark's settings (one typed record of the command's options) and its unit of work, one arm and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.benchmark.data import Arm


@dataclass(frozen=True)
class BenchSettings:
    csv: tuple[Path, ...]
    images: tuple[Path, ...]
    out: Path
    synthetic: Path | None = None
    fmt: str | None = None
    split_file: Path | None = None
    folds: int = 5
    test_fold: int = 0
    split_seed: int = 0
    ratios: tuple[float, ...] = (0, 0.5, 1, 2, 5, 10)
    seeds: int = 3
    image_size: int = 64
    epochs: int = 10
    model: str = "resnet18"
    weights: Path | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    rare_share: float = 0.5
    n_boot: int = 2000
    workers: int = 2


@dataclass(frozen=True)
class Task:
    arm: Arm
    seed: int
    key: str
    path: Path
