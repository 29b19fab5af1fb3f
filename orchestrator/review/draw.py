"""The review's pictures: cached thumbnails, the contact sheet (numpy + OpenCV) and the loss / learning-rate
curves (matplotlib's Agg canvas, no pyplot state). Every file is written to a temporary name and renamed."""

from __future__ import annotations

import os
import textwrap
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from orchestrator.review.grid import Grid
from orchestrator.runs.tfevents import Point
from orchestrator.runs.validation import TRAIN_EPOCH_TAG, VAL_EPOCH_TAG, VAL_STEP_TAG, best_epoch

THUMB = 256
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG, _CELL_BG, _INK, _MUTED = (255, 255, 255), (236, 236, 236), (20, 20, 20), (110, 110, 110)
_STATE_TEXT = {"pending": "pending", "missing": "not sampled"}


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_image(path: Path, image: np.ndarray, params: Sequence[int] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    if not cv2.imwrite(str(tmp), image, list(params)):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def thumbnail(src: Path, dst: Path, size: int = THUMB) -> str | None:
    """A JPEG of `src` whose long side is at most `size`, kept while newer than `src`: "made", "kept", or
    None when `src` cannot be read."""
    try:
        if dst.is_file() and dst.stat().st_mtime_ns >= src.stat().st_mtime_ns:
            return "kept"
    except OSError:
        return None
    image = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = size / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    write_image(dst, image, (cv2.IMWRITE_JPEG_QUALITY, 88))
    return "made"


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "replace").decode("ascii")


def _lines(text: str, width_px: int, scale: float) -> list[str]:
    char_w = cv2.getTextSize("n", _FONT, scale, 1)[0][0]
    return textwrap.wrap(_ascii(text), max(8, width_px // max(char_w, 1))) or [""]


def _put(canvas: np.ndarray, lines: Sequence[str], x: int, y: int, scale: float, color: tuple[int, int, int],
         max_lines: int) -> int:
    height = cv2.getTextSize("Ag", _FONT, scale, 1)[0][1] + 8
    shown = list(lines[:max_lines])
    if len(lines) > max_lines:
        shown[-1] = shown[-1][: max(0, len(shown[-1]) - 3)] + "..."
    for line in shown:
        y += height
        cv2.putText(canvas, line, (x, y), _FONT, scale, color, 1, cv2.LINE_AA)
    return y


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    scale = min(size / image.shape[0], size / image.shape[1])
    resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cell = np.full((size, size, 3), _CELL_BG, np.uint8)
    y, x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
    cell[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return cell


def _empty_cell(size: int, text: str) -> np.ndarray:
    cell = np.full((size, size, 3), _CELL_BG, np.uint8)
    (w, h), _ = cv2.getTextSize(text, _FONT, 0.6, 1)
    cv2.putText(cell, text, ((size - w) // 2, (size + h) // 2), _FONT, 0.6, _MUTED, 1, cv2.LINE_AA)
    return cell


def mask_strip(images: Sequence[Path], out: Path, *, cell: int = 192) -> int:
    """One row of training images with their loss mask (the alpha channel) drawn over them: outside the mask
    dimmed, its outline in green. Returns how many images were drawn; with none, no file is written."""
    tiles = []
    for path in images:
        rgba = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if rgba is None or rgba.ndim != 3 or rgba.shape[2] != 4:
            continue
        inside = rgba[..., 3] > 127
        shown = rgba[..., :3].copy()
        shown[~inside] = (shown[~inside] * 0.35).astype(np.uint8)
        contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(shown, contours, -1, (60, 220, 60), max(1, round(max(shown.shape[:2]) / cell)), cv2.LINE_AA)
        tiles.append(_fit(shown, cell))
    if tiles:
        gap = np.full((cell, 4, 3), _BG, np.uint8)
        write_image(out, np.hstack([part for tile in tiles for part in (tile, gap)][:-1]),
                    (cv2.IMWRITE_JPEG_QUALITY, 88))
    return len(tiles)


@dataclass(frozen=True)
class Sheet:
    width: int
    height: int
    boxes: dict[tuple[int, int], tuple[int, int, int]]   # (row, grid column) -> (x, y, size) of the sample cell


def contact_sheet(grid: Grid, image_of: Callable[[Path], Path | None], out: Path, *, cell: int = 224,
                  references: int = 2, title: str = "") -> Sheet:
    """Rows = the grid's prompts: the prompt text, up to `references` training images, then one cell per
    column. `image_of` maps a sample or training image to the (thumbnail) file to draw."""
    pad, label_w, head_h = 8, 340, 72
    title_h = 36 if title else 0
    ref_cols = references if any(r.references.images for r in grid.rows) else 0
    n_cols = ref_cols + len(grid.headers)
    width = label_w + n_cols * (cell + pad) + pad
    height = title_h + head_h + max(1, len(grid.rows)) * (cell + pad) + pad
    sheet = np.full((height, width, 3), _BG, np.uint8)
    boxes: dict[tuple[int, int], tuple[int, int, int]] = {}
    if title:
        _put(sheet, [_ascii(title)], pad, 0, 0.7, _INK, 1)
    heads = [("training image", "same sex/site/age")] * ref_cols + [(h.title, h.subtitle) for h in grid.headers]
    for i, (head, sub) in enumerate(heads):
        x = label_w + i * (cell + pad)
        y = _put(sheet, _lines(head, cell, 0.55), x, title_h, 0.55, _INK, 2)
        if sub:
            _put(sheet, _lines(sub, cell, 0.5), x, y, 0.5, _MUTED, 1)
    if not grid.rows:
        _put(sheet, ["no sample prompts"], pad, title_h + head_h, 0.6, _MUTED, 1)
    for r, row in enumerate(grid.rows):
        y0 = title_h + head_h + r * (cell + pad)
        y = _put(sheet, _lines(row.text, label_w - 2 * pad, 0.55), pad, y0, 0.55, _INK, 7)
        extra = [row.detail] + ([row.references.group] if row.references.group else [])
        _put(sheet, _lines(", ".join(e for e in extra if e), label_w - 2 * pad, 0.45), pad, y + 4, 0.45, _MUTED, 3)
        tiles: list[np.ndarray] = []
        for k in range(ref_cols):
            images = row.references.images
            tiles.append(_tile(image_of(images[k].path) if k < len(images) else None, cell, "-"))
        for c in row.cells:
            source = image_of(c.sample.path) if c.sample is not None else None
            tiles.append(_tile(source, cell, _STATE_TEXT.get(c.state, "unreadable")))
        for i, tile in enumerate(tiles):
            x = label_w + i * (cell + pad)
            sheet[y0:y0 + cell, x:x + cell] = tile
            if i >= ref_cols:
                boxes[(r, i - ref_cols)] = (x, y0, cell)
    write_image(out, sheet)
    return Sheet(width, height, boxes)


def _tile(path: Path | None, size: int, empty_text: str) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
    return _fit(image, size) if image is not None else _empty_cell(size, empty_text if path is None else "unreadable")


# ----------------------------------------------------------------------------------------------- curves

def _save_figure(fig, out: Path) -> None:  # noqa: ANN001  (matplotlib Figure)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(out)
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, out)


Curves = dict[str, tuple[list[int], list[float]]]


def _curves(runs: Mapping[str, Mapping[str, list[Point]]],
            tags: Sequence[str]) -> Iterator[tuple[str, str, list[int], list[float]]]:
    """(label, tag, steps, values) of each run's logged `tags`, in order; the label names the run when there are
    several."""
    for run, scalars in runs.items():
        prefix = f"{run}: " if len(runs) > 1 else ""
        for tag in tags:
            points = scalars.get(tag) or []
            if points:
                yield prefix + tag, tag, [p.step for p in points], [p.value for p in points]


def plot_loss(runs: Mapping[str, Mapping[str, list[Point]]], out: Path, *, show_current: bool) -> Curves | None:
    """loss/current and loss/average against the step, loss/epoch_average against the epoch (sd-scripts logs
    it with step = epoch number), validation loss beside each (dashed) with the epoch of the lowest validation
    loss marked. One line per run and tag; returns what was drawn, None if nothing."""
    from matplotlib.figure import Figure

    drawn: Curves = {}
    fig = Figure(figsize=(10, 3.6))
    by_step, by_epoch = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    tags = ("loss/current", "loss/average") if show_current else ("loss/average",)
    for label, tag, xs, ys in _curves(runs, (*tags, VAL_STEP_TAG, TRAIN_EPOCH_TAG, VAL_EPOCH_TAG)):
        validation = tag in (VAL_STEP_TAG, VAL_EPOCH_TAG)
        if tag in (TRAIN_EPOCH_TAG, VAL_EPOCH_TAG):
            by_epoch.plot(xs, ys, marker="o", ls="--" if validation else "-", label=label)
        else:
            faint = tag == "loss/current"
            by_step.plot(xs, ys, lw=0.8 if faint else 1.8, alpha=0.4 if faint else 1.0, ls="--" if validation else "-",
                         label=label)
        drawn[label] = (xs, ys)
    if not drawn:
        return None
    for run, scalars in runs.items():
        best = best_epoch(scalars)
        if best is not None:
            label = f"{run}: lowest validation loss" if len(runs) > 1 else "lowest validation loss"
            by_epoch.plot([best.step], [best.value], marker="*", ms=14, ls="none", color="black",
                          label=f"{label} (epoch {best.step})")
            drawn[label] = ([best.step], [best.value])
    by_step.set(xlabel="step", ylabel="loss", title="loss per step")
    by_epoch.set(xlabel="epoch", ylabel="loss", title="loss per epoch (training, validation)")
    for axis in (by_step.xaxis, by_epoch.xaxis):
        axis.get_major_locator().set_params(integer=True)
    for ax in (by_step, by_epoch):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out)
    return drawn


def plot_lr(runs: Mapping[str, Mapping[str, list[Point]]], out: Path,
            tags: Sequence[str] = ("lr/unet", "lr/textencoder")) -> Curves | None:
    from matplotlib.figure import Figure

    drawn: Curves = {}
    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for label, _, xs, ys in _curves(runs, tags):
        ax.plot(xs, ys, lw=1.5, label=label)
        drawn[label] = (xs, ys)
    if not drawn:
        return None
    ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, out)
    return drawn
