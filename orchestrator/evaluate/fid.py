"""FID and KID between two image sets, from Inception-v3 pool features, with weights the user supplies.

Nothing is ever downloaded: the network is torchvision's `inception_v3` architecture built with random
weights, then the user's file is loaded into it (a state_dict saved by torch.save, e.g. torchvision's
IMAGENET1K_V1 checkpoint `inception_v3_google-0cc3c7bd.pth`, loaded with weights_only=True). Note that
published FIDs use the TensorFlow Inception graph; numbers from other weights are comparable with each
other, not with papers.

Features: the 2048-d average pool before the classifier (fc replaced by the identity), of every image
resized to 299x299 (bilinear, antialiased) and normalised with the ImageNet mean and std.
  FID = |mu_r - mu_s|^2 + Tr(S_r + S_s - 2 (S_r S_s)^(1/2)), with Tr((S_r S_s)^(1/2)) computed as the sum of
        the square roots of the eigenvalues of S_r^(1/2) S_s S_r^(1/2) (symmetric, so exact with numpy's
        eigh and no scipy), or, with fewer images than 2048, as the sum of the singular values of the
        centred R S^T / sqrt((n_r - 1)(n_s - 1)) (the same number, from a small matrix);
  KID = the unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski
        et al. 2018), averaged over random subsets; it has no bias at small sample sizes, unlike FID.
torch and torchvision are optional dependencies: they are imported only here, and their absence is a
one-line MedsynthError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.common.errors import MedsynthError

INPUT_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def require_torch() -> tuple[Any, Any]:
    try:
        import torch
        import torchvision
    except ImportError as exc:
        raise MedsynthError(f"FID/KID need torch and torchvision, which are not importable here ({exc}); "
                            f"install them or leave out inception_weights") from exc
    return torch, torchvision


def load_inception(weights: Path) -> Any:
    """torchvision's inception_v3 with `weights` loaded, fc replaced by the identity, in eval mode."""
    if not weights.is_file():
        raise MedsynthError(f"{weights}: Inception weights file not found (give a torchvision inception_v3 "
                            f"state_dict; nothing is downloaded)")
    torch, torchvision = require_torch()
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a usable checkpoint
        raise MedsynthError(f"{weights}: not a loadable torch state_dict ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MedsynthError(f"{weights}: expected a state_dict (a mapping of tensor names), got {type(state).__name__}")
    aux = any(str(k).startswith("AuxLogits.") for k in state)
    model = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=False,
                                            transform_input=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MedsynthError(f"{weights}: does not fit torchvision's inception_v3 "
                            f"({str(exc).splitlines()[0]})") from exc
    model.fc = torch.nn.Identity()
    return model.eval()


def inception_features(model: Any, images: Iterable[np.ndarray], *, batch_size: int = 16,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(n, 2048) float64 pool features of BGR uint8 images (any sizes). `progress(k)` is told of each batch."""
    torch, _ = require_torch()
    import torch.nn.functional as F

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out: list[np.ndarray] = []
    batch: list[Any] = []

    def flush() -> None:
        x = torch.cat(batch)
        with torch.inference_mode():
            out.append(model((x - mean) / std).double().numpy())
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for bgr in images:
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float().div(255)
        batch.append(F.interpolate(rgb[None], size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                   align_corners=False, antialias=True))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out) if out else np.zeros((0, 2048))


def dihedral_features(model: Any, images: Iterable[np.ndarray | None], *,
                      progress: Callable[[int], None] | None = None) -> list[np.ndarray | None]:
    """Per image, the unit-norm pool features of its 8 flips and rotations, (8, 2048): the memorization screen's
    network space (vision/memorization.feature_similarity); None for an image that did not decode."""
    out: list[np.ndarray | None] = []
    for bgr in images:
        if bgr is None:
            out.append(None)
        else:
            turns = [np.rot90(bgr, k) for k in range(4)]
            features = inception_features(model, turns + [t[:, ::-1] for t in turns], batch_size=8)
            out.append(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12))
        if progress is not None:
            progress(1)
    return out


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
    """Tr((S_a S_b)^(1/2)) of the covariances S = X^T X / (n - 1) of the centred feature sets a and b."""
    scale = (len(a) - 1) * (len(b) - 1)
    if max(len(a), len(b)) < a.shape[1]:
        # fewer images than dimensions: the non-zero eigenvalues of S_a S_b are the squared singular
        # values of a b^T / sqrt(scale), an (n_a x n_b) matrix instead of two (d x d) eigenproblems
        return float(np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(scale))
    root = _sqrt_psd(a.T @ a / (len(a) - 1))
    cross = np.linalg.eigvalsh(root @ (b.T @ b / (len(b) - 1)) @ root)
    return float(np.sqrt(np.clip(cross, 0, None)).sum())


def frechet_distance(real: np.ndarray, synth: np.ndarray) -> float:
    """FID between two (n, d) feature sets (each needs n >= 2)."""
    if len(real) < 2 or len(synth) < 2:
        raise MedsynthError(f"FID needs at least 2 images per set, got {len(real)} and {len(synth)}")
    mu_r, mu_s = real.mean(axis=0), synth.mean(axis=0)
    a, b = real - mu_r, synth - mu_s
    traces = (a ** 2).sum() / (len(a) - 1) + (b ** 2).sum() / (len(b) - 1)
    value = float(((mu_r - mu_s) ** 2).sum() + traces - 2 * _trace_sqrt_product(a, b))
    return max(value, 0.0)  # rounding can leave a tiny negative for identical sets


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 estimate between two samples with the cubic polynomial kernel (can be < 0)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(real: np.ndarray, synth: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` random subsets of min(subset_size, n_r, n_s) each
    (without replacement within a subset); one subset when that size takes every image of both sets."""
    size = min(subset_size, len(real), len(synth))
    if size < 2:
        raise MedsynthError(f"KID needs at least 2 images per set, got {len(real)} and {len(synth)}")
    if size == len(real) == len(synth):
        return mmd2_unbiased(real, synth), 0.0
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(real[rng.choice(len(real), size, replace=False)],
                            synth[rng.choice(len(synth), size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
