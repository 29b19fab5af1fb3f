"""Writes a review: review.html (templates/review.html.j2), contact_sheet.png and review_files/ (thumbnails,
loss.png, lr.png) into the output folder. Links are relative, so the page works offline and the run folder can
be moved with it; full-size samples are linked where sd-scripts wrote them."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from orchestrator.common.htmlpage import write_page
from orchestrator.review.grid import Grid, RunReview, SweepReview
from orchestrator.review.draw import Sheet, contact_sheet, mask_strip, plot_loss, plot_lr, thumbnail
from orchestrator.runs.outputs import Column

ASSETS = "review_files"
HTML, SHEET, MASKS = "review.html", "contact_sheet.png", "masks.jpg"


@dataclass(frozen=True)
class Written:
    html: Path
    contact_sheet: Path
    sheet: Sheet
    curves: tuple[Path, ...]
    thumbnails_made: int
    grid: Grid


class _Thumbs:
    """Thumbnails under <out>/review_files/thumbs/, named by a hash of the source path (sources from different
    runs or datasets never collide); the ones no longer shown are removed at the end."""

    def __init__(self, out: Path):
        self.out, self.dir = out, out / ASSETS / "thumbs"
        self.made = 0
        self.by_source: dict[Path, Path | None] = {}

    def make(self, sources: Iterable[Path], progress: bool) -> None:
        todo = [s for s in dict.fromkeys(sources) if s not in self.by_source]
        targets = [self.dir / f"{s.stem}-{hashlib.sha1(str(s.resolve()).encode()).hexdigest()[:10]}.jpg" for s in todo]
        # OpenCV decodes and encodes outside the GIL: threads use every core on a first review of a long run
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = pool.map(thumbnail, todo, targets)
            for src, dst, result in tqdm(zip(todo, targets, results), total=len(todo), desc="thumbnails",
                                         unit="img", disable=not progress or not todo, leave=False):
                self.made += result == "made"
                self.by_source[src] = dst if result else None

    def of(self, src: Path) -> Path | None:
        return self.by_source.get(src)

    def prune(self) -> None:
        keep = {p for p in self.by_source.values() if p is not None}
        if self.dir.is_dir():
            for path in self.dir.iterdir():
                if path.is_file() and path not in keep:
                    path.unlink(missing_ok=True)


def _url(target: Path, out: Path) -> str:
    return urllib.parse.quote(Path(os.path.relpath(target.resolve(), out.resolve())).as_posix())


def _grid_sources(grid: Grid) -> list[Path]:
    paths = []
    for row in grid.rows:
        paths += [r.path for r in row.references.images]
        paths += [c.sample.path for c in row.cells if c.sample is not None]
    return paths


def _grid_view(grid: Grid, thumbs: _Thumbs, out: Path) -> dict[str, Any]:
    def image(src: Path) -> dict[str, str | None]:
        thumb = thumbs.of(src)
        return {"thumb": _url(thumb, out) if thumb else None, "full": _url(src, out), "name": src.name}

    rows = []
    for row in grid.rows:
        refs = [dict(image(r.path), id=r.image_id, caption=r.caption) for r in row.references.images]
        cells = [dict(image(c.sample.path), state=c.state) if c.sample is not None
                 else {"state": c.state, "thumb": None, "full": None, "name": None} for c in row.cells]
        rows.append({"text": row.text, "detail": row.detail, "group": row.references.group,
                     "refs": refs, "refs_total": row.references.total, "cells": cells})
    return {"headers": grid.headers, "rows": rows}


def _curves(runs: Mapping[str, Mapping[str, Any]], out: Path, *, show_current: bool) -> list[dict[str, str]]:
    shown = []
    for name, drawn in (("loss.png", plot_loss(runs, out / ASSETS / "loss.png", show_current=show_current)),
                        ("lr.png", plot_lr(runs, out / ASSETS / "lr.png"))):
        if drawn is not None:
            shown.append({"src": f"{ASSETS}/{name}", "alt": ", ".join(drawn)})
        else:
            (out / ASSETS / name).unlink(missing_ok=True)
    return shown


def _masks(images: Sequence[Path], out: Path) -> dict[str, Any] | None:
    """The strip of training images with their loss masks (a masked_loss run), or None."""
    drawn = mask_strip(images, out / ASSETS / MASKS) if images else 0
    if not drawn:
        (out / ASSETS / MASKS).unlink(missing_ok=True)
        return None
    return {"src": f"{ASSETS}/{MASKS}", "count": drawn}


def _finish(out: Path, grid: Grid, thumbs: _Thumbs, context: dict[str, Any], title: str) -> Written:
    sheet = contact_sheet(grid, thumbs.of, out / SHEET, title=title)
    write_page(out / HTML, "review.html.j2", context)
    thumbs.prune()
    curves = tuple(out / ASSETS / c["src"].split("/", 1)[1] for c in context["curves"])
    return Written(out / HTML, out / SHEET, sheet, curves, thumbs.made, grid)


def write_run_review(review: RunReview, out: Path, *, columns: Sequence[Column], progress: bool = False) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    grid = review.grid(columns)
    thumbs = _Thumbs(out)
    thumbs.make(_grid_sources(grid), progress)
    facts = review.facts
    context = {
        "kind": "run", "title": f"{facts.name}: review", "name": facts.name, "status": facts.status,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": list(review.notes),
        "grid": _grid_view(grid, thumbs, out), "settings": review.settings, "runs": [], "param_keys": [],
        "curves": _curves({facts.name: review.scalars}, out, show_current=True),
        "sheet": SHEET, "counts": _counts(grid), "masks": _masks(review.masked, out),
    }
    return _finish(out, grid, thumbs, context, f"{facts.name} ({facts.status})")


def write_sweep_review(review: SweepReview, out: Path, *, progress: bool = False) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    thumbs = _Thumbs(out)
    thumbs.make(_grid_sources(review.grid), progress)
    runs = []
    for entry in review.entries:
        own = entry.path / HTML
        settings = dict(entry.review.settings) if entry.review else {}
        runs.append({"name": entry.name, "status": entry.status,
                     "params": {k: _short(v) for k, v in entry.params.items()},
                     "final_loss": settings.get("final loss (average)", "-"),
                     "best_validation": settings.get("lowest validation loss", "-"),
                     "lr": settings.get("learning rate", "-"), "optimizer": settings.get("optimizer", "-"),
                     "scheduler": settings.get("scheduler", "-"),
                     "review": _url(own, out) if own.is_file() else None, "path": _url(entry.path, out)})
    scalars = {e.name: e.review.scalars for e in review.entries if e.review is not None}
    compared = ", ".join(c.label for c in review.compared) or "-"
    context = {
        "kind": "sweep", "title": f"{review.name}: sweep review", "name": review.name, "status": "",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "notes": list(review.notes) + [f"compared at {compared}"],
        "grid": _grid_view(review.grid, thumbs, out), "settings": (), "runs": runs,
        "param_keys": list(dict.fromkeys(k for run in runs for k in run["params"])),
        "curves": _curves(scalars, out, show_current=False), "sheet": SHEET, "counts": _counts(review.grid),
        "masks": None,
    }
    return _finish(out, review.grid, thumbs, context, f"sweep {review.name} at {compared}")


def _short(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _counts(grid: Grid) -> dict[str, int]:
    return {state: grid.count(state) for state in ("ok", "pending", "missing")}
