"""The step arithmetic of a run: the validation split, steps per epoch, warmup and the effective learning rate
(docs/training.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.train.config import TrainConfig

NUM_VALIDATION_TIMESTEPS = 4  # sd-scripts runs every validation batch at 4 fixed timesteps (train_network.py)


def split_counts(images: int, validation_split: float) -> tuple[int, int]:
    """(training, validation) images of one subset as sd-scripts splits it (train_util.split_train_val): a seeded
    shuffle, the first ceil(n × (1 − split)) train, the last round(n × split) validate. Written as sd-scripts
    writes it so the float rounding agrees; Python's round halves to even, so the two can share an image."""
    if validation_split <= 0:
        return images, 0
    return math.ceil(images * (1 - validation_split)), round(images * validation_split)


@dataclass(frozen=True)
class Schedule:
    """The step arithmetic of a run, as printed by --dry-run and stored in run.json."""

    images: int                    # training images, all classes (after the validation split)
    repeats: int                   # their repeats when all classes share one, else 0 (see samples)
    batch_size: int
    num_processes: int
    gradient_accumulation_steps: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    learning_rate: float
    lr_note: str
    validation_images: int = 0     # held out; repeats do not apply to them
    validation_overlap: int = 0    # images both trained on and held out (sd-scripts' rounding)
    validation_batches: int = 0    # per validation run, after max_validation_steps
    validation_every: str = ""     # when sd-scripts validates
    validation_by: str = "image"   # what is held out whole: image (sd-scripts' split), patient, lesion
    samples: int = 0               # training images × repeats, summed over the classes: an epoch's images
    reg_samples: int = 0           # the reg images sd-scripts adds to an epoch (as many as samples, or none)
    breakdown: str = ""            # how samples add up, when there are several folders

    def describe(self) -> str:
        per = f"{self.batch_size}" + (f" × {self.num_processes} processes" if self.num_processes > 1 else "") \
            + (f" × {self.gradient_accumulation_steps} accumulation" if self.gradient_accumulation_steps > 1 else "")
        images = self.warmup_steps * self.batch_size * self.gradient_accumulation_steps
        unit = "steps" if self.num_processes == 1 else \
            f"scheduler steps (sd-scripts steps the scheduler {self.num_processes}× per optimizer step)"
        seen = (f"{self.images} images × {self.repeats} repeats" if not self.breakdown
                else f"({self.breakdown})") + (f" + {self.reg_samples} reg images" if self.reg_samples else "")
        lines = [
            f"steps: {seen} ÷ batch {per} = {self.steps_per_epoch} steps/epoch"
            f" × {self.epochs} epochs = {self.total_steps} steps"
            " (bucketing can add up to one partial batch per bucket and epoch)",
            f"warmup: {self.warmup_steps} {unit} ({images} images)"
            + ("  WARNING: warmup is not shorter than the run"
               if self.warmup_steps >= self.total_steps * self.num_processes else ""),
            f"learning rate: {self.learning_rate:.3g} ({self.lr_note})",
        ]
        if self.validation_images:
            before = self.images + self.validation_images - self.validation_overlap
            lines.append(f"validation: {self.validation_images} of {before} images held out by {self.validation_by}, "
                         f"{self.validation_batches} batches × {NUM_VALIDATION_TIMESTEPS} timesteps "
                         f"{self.validation_every}"
                         + (f"  WARNING: {self.validation_overlap} image(s) also trained on (sd-scripts rounds "
                            f"the two shares separately)" if self.validation_overlap else ""))
        return "\n".join(lines)


def _validation_every(cfg: TrainConfig, total_steps: int) -> str:
    epochs = cfg.validate_every_n_epochs or 1
    text = "every epoch" if epochs == 1 else f"every {epochs} epochs"
    if epochs > cfg.max_train_epochs:
        text = f"never at epoch end (validate_every_n_epochs {epochs} > {cfg.max_train_epochs} epochs)"
    if cfg.validate_every_n_steps:
        text += f", and every {cfg.validate_every_n_steps} steps ({total_steps // cfg.validate_every_n_steps} times)"
    return text


def schedule(cfg: TrainConfig, *, subsets: Sequence[tuple[int, int, bool]], num_processes: int = 1,
             held_out: Sequence[int] | None = None, by: str = "image") -> Schedule:
    """Steps, warmup and the effective learning rate for a resolved (numeric batch) config; `subsets` are the
    dataset's folders as (images, repeats, is_reg), counted before the validation split. `held_out`: the images
    of each folder held out by whole `by` (orchestrator.train.holdout) instead of sd-scripts' split by image.

    sd-scripts splits each training subset by validation_split before its repeats apply (split_counts) and never
    splits a reg subset (train_util.py:2045-2057: its validation share is empty). An epoch shows every training
    image `repeats` times; with reg images sd-scripts adds reg images, repeated round-robin, until they match
    that count (library/train_util.py:2163-2182: `while n < num_train_images`), so a reg subset doubles the
    steps. More reg images than that are left unused (sd-scripts warns).

    Rules (docs/training.md): epochs count images seen, so they do not change with the batch; warmup is
    counted in images (lr_warmup_images) unless lr_warmup_steps is set; the learning rate is given at
    reference_batch_size and scaled to the effective batch by lr_scaling (sqrt or linear) or not at all.
    sd-scripts counts lr_warmup_steps in scheduler steps, and steps the scheduler once per process per
    optimizer step (num_training_steps = max_train_steps × num_processes), so the processes cancel out.
    """
    batch = int(cfg.train_batch_size)
    effective = batch * num_processes * cfg.gradient_accumulation_steps
    training = [(n, *(split_counts(n, cfg.validation_split) if held_out is None else (n - h, h)), r)
                for (n, r, is_reg), h in zip(subsets, held_out or [0] * len(subsets)) if not is_reg]
    samples = sum(kept * r for _, kept, _, r in training)
    reg = samples if any(is_reg and n for n, _, is_reg in subsets) else 0
    per_epoch = max(1, math.ceil((samples + reg) / effective))
    total = per_epoch * cfg.max_train_epochs
    if cfg.lr_warmup_steps is not None:
        warmup = cfg.lr_warmup_steps
    elif cfg.lr_scheduler == "constant":
        warmup = 0  # sd-scripts refuses warmup with the constant scheduler
    else:
        warmup = math.ceil(cfg.lr_warmup_images / (batch * cfg.gradient_accumulation_steps))
    ratio = effective / cfg.reference_batch_size
    factor = {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[cfg.lr_scaling]
    lr = cfg.learning_rate * factor
    note = (f"{cfg.learning_rate:.3g} at batch {cfg.reference_batch_size}, {cfg.lr_scaling} scaling to {effective}"
            if cfg.lr_scaling != "none" else "not scaled with the batch")
    # the validation set is batched like the training set (one repeat); accelerate shares its batches out
    kept, held = sum(t[1] for t in training), sum(t[2] for t in training)
    val_batches = math.ceil(math.ceil(held / batch) / num_processes)
    if cfg.max_validation_steps is not None:
        val_batches = min(val_batches, cfg.max_validation_steps)
    repeats = {r for *_, r in training}
    breakdown = " + ".join(f"{k} × {r}" for _, k, _, r in training) if len(training) > 1 else ""
    return Schedule(kept, repeats.pop() if len(repeats) == 1 else 0, batch, num_processes,
                    cfg.gradient_accumulation_steps, cfg.max_train_epochs, per_epoch, total, warmup, lr, note,
                    held, sum(max(0, k + h - n) for n, k, h, _ in training), val_batches,
                    _validation_every(cfg, total) if held else "", by, samples, reg, breakdown)
