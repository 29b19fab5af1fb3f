"""One arm and seed: train a torchvision image classifier on the arm's images and score the test images.

The model is torchvision's (`torchvision.models.get_model`), from random initialisation or from a state_dict file
the user gives (e.g. ImageNet weights downloaded once, elsewhere): nothing is fetched at run time. Its last linear
layer becomes a single logit for "malignant"; the loss is binary cross-entropy; AdamW at a fixed learning rate.

Every arm gets the same augmentation, the dihedral group (flips and quarter turns: dermoscopy has no "up"), so
arms differ only in their images. The oversample arm draws each class equally often (sampling with
replacement) and its malignant images also get a random crop (70-100 % of the side, resized back) and brightness
and contrast jitter (+-20 %): classic oversampling with augmentation of the rare class.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean

# ImageNet statistics: what pretrained torchvision weights expect; harmless from random initialisation
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHT_DECAY = 1e-4


def device_name() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_names() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_model(name: str) -> None:
    names = model_names()
    if name not in names:
        raise MedsynthError(f"--model {name!r} is not a torchvision classification model"
                            f"{did_you_mean(name, names)} (torchvision.models.list_models())")


def build_model(name: str, weights: Path | None):
    """The named torchvision classifier with a one-logit head, its other weights from `weights` when given."""
    import torch
    import torchvision
    from torch import nn

    check_model(name)
    if weights is None:
        return torchvision.models.get_model(name, weights=None, num_classes=1)
    model = torchvision.models.get_model(name, weights=None)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    # a file that is no torch.save (text, another format) fails to unpickle
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise MedsynthError(f"{weights}: not a state_dict of torchvision's {name}: {first}") from None
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attribute = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Linear(getattr(parent, attribute).in_features, 1))
    return model


def _dihedral(batch, generator):
    """Each image flipped and turned by one of the 8 symmetries of the square, drawn independently."""
    import torch
    kinds = torch.randint(0, 8, (batch.shape[0],), generator=generator)
    out = batch.clone()
    for kind in range(1, 8):
        chosen = kinds == kind
        if chosen.any():
            turned = torch.rot90(batch[chosen], kind % 4, dims=(2, 3))
            out[chosen] = torch.flip(turned, dims=(3,)) if kind >= 4 else turned
    return out


def _strong(batch, generator):
    """Random crop of 70-100 % of the side, resized back, then brightness and contrast jitter of +-20 %."""
    import torch
    import torch.nn.functional as F
    size = batch.shape[-1]
    out = []
    for image in batch:
        side = int(size * (0.7 + 0.3 * torch.rand((), generator=generator)))
        top, left = (int(torch.randint(0, size - side + 1, (), generator=generator)) for _ in range(2))
        crop = image[:, top:top + side, left:left + side].unsqueeze(0)
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
    out = torch.stack(out)
    brightness = 0.8 + 0.4 * torch.rand((len(out), 1, 1, 1), generator=generator)
    contrast = 0.8 + 0.4 * torch.rand((len(out), 1, 1, 1), generator=generator)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean * brightness).clamp(0, 1)


def _tensor(pixels: np.ndarray, device: str):
    """uint8 NHWC -> float NCHW in [0, 1] on the device."""
    import torch
    x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float() / 255
    return x


def _normalise(x):
    import torch
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def train_and_score(train_pixels: np.ndarray, labels: Sequence[int], test_pixels: np.ndarray, *, model: str,
                    weights: Path | None, epochs: int, batch_size: int, learning_rate: float, seed: int,
                    oversample: bool, device: str, desc: str, progress: bool) -> tuple[np.ndarray, list[float], float]:
    """(the test images' probabilities of malignant, the mean training loss per epoch, seconds taken)."""
    import torch

    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    y = torch.tensor(list(labels), dtype=torch.float32)
    net = build_model(model, weights).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=WEIGHT_DECAY)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n = len(y)
    per_class = torch.bincount(y.long(), minlength=2).float()
    draw_weight = (1 / per_class)[y.long()]   # each class drawn equally often (oversample arm)
    steps = math.ceil(n / batch_size)
    losses = []
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    for _ in range(epochs):
        net.train()
        order = (torch.multinomial(draw_weight, n, replacement=True, generator=generator) if oversample
                 else torch.randperm(n, generator=generator))
        total = 0.0
        for step in range(steps):
            index = order[step * batch_size:(step + 1) * batch_size]
            bar.update()
            if len(index) < 2:   # batch norm cannot train on one image
                continue
            x = _dihedral(_tensor(train_pixels[index.numpy()], "cpu"), generator)
            if oversample:
                rare = y[index] == 1
                if rare.any():
                    x[rare] = _strong(x[rare], generator)
            logits = net(_normalise(x.to(device)))
            if not isinstance(logits, torch.Tensor):
                raise MedsynthError(f"--model {model}: its forward returns {type(logits).__name__}, not one tensor "
                                    f"of logits (models with auxiliary outputs are not supported)")
            loss = loss_fn(logits.reshape(-1), y[index].to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        losses.append(total / n)
    bar.close()
    return score(net, test_pixels, batch_size, device), losses, time.perf_counter() - started


def score(net, pixels: np.ndarray, batch_size: int, device: str) -> np.ndarray:
    import torch
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            x = _normalise(_tensor(pixels[start:start + batch_size], device))
            out.append(torch.sigmoid(net(x).reshape(-1).float()).cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)
