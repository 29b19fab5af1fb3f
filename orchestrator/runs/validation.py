"""Validation loss as sd-scripts (48d368fa, train_network.py) logs it when a dataset holds images out
(validation_split): `loss/validation/epoch_average` after each validated epoch, with step = the epoch number
(as `loss/epoch_average`); `loss/validation/step_average` every validate_every_n_steps, with step = the global
step; and `*_divergence` (validation minus training moving average). Here: the epoch with the lowest validation
loss, and whether validation loss rose while training loss fell (overfitting)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from orchestrator.runs.tfevents import Point

VAL_EPOCH_TAG = "loss/validation/epoch_average"
VAL_STEP_TAG = "loss/validation/step_average"
TRAIN_EPOCH_TAG = "loss/epoch_average"


def best_epoch(scalars: Mapping[str, Sequence[Point]], among: Collection[int] | None = None) -> Point | None:
    """The epoch-end validation point with the lowest loss (the earlier epoch on a tie), among the epochs
    `among` when given; None when none was logged."""
    points = [p for p in scalars.get(VAL_EPOCH_TAG, ()) if among is None or p.step in among]
    return min(points, key=lambda p: (p.value, p.step)) if points else None


def overfitting(scalars: Mapping[str, Sequence[Point]]) -> str | None:
    """A sentence when, from the best validation epoch to the last validated one, validation loss rose while
    training loss (loss/epoch_average) fell; None otherwise."""
    best = best_epoch(scalars)
    train = {p.step: p.value for p in scalars.get(TRAIN_EPOCH_TAG, ())}
    if best is None or best.step not in train:
        return None
    later = [p for p in scalars.get(VAL_EPOCH_TAG, ()) if p.step > best.step and p.step in train]
    if not later:
        return None
    last = max(later, key=lambda p: p.step)
    if last.value <= best.value or train[last.step] >= train[best.step]:
        return None
    return (f"overfitting: validation loss rose from {best.value:.4g} at epoch {best.step} to {last.value:.4g} at "
            f"epoch {last.step} while training loss fell from {train[best.step]:.4g} to {train[last.step]:.4g}; "
            f"epoch {best.step}'s LoRA generalises best (medsynth generate --epoch best)")
