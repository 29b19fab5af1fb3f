"""Sample prompts for training-time samples, made from the dataset's own metadata.

The dataset's most frequent (sex, site, age band) combinations each give one prompt: the most frequent
caption among that combination's images (non-hairy ones preferred), so the prompt has exactly the caption
template's wording and trigger, e.g. "photo of female skin, me1anoma on lower extremity, at age 50".
A dataset of several classes (one folder each, the manifest's `folder` column) gives each class its share of the
prompts, at least one, in its own trigger; regularization images (folder reg/...) give none.
Prompt i gets seed sample_seed + i, so the same prompt is drawn from the same noise every epoch.
`sample_prompts` (a list) or `sample_prompts_file` (one prompt text per line) replace the generated texts.
The manifest is read with the csv module: pandas would cost the dry-run most of its time budget.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.age import age_band


@dataclass(frozen=True)
class SamplePrompt:
    text: str
    seed: int
    source: str          # "manifest: 12 images female/lower extremity/50s", "sample_prompts", a file:line


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def is_training_row(row: dict[str, str]) -> bool:
    """A manifest row of a training folder (builds before the `folder` column had no other)."""
    return not (row.get("folder") or "").startswith("reg/")


def prompts_from_manifest(manifest: Path, count: int) -> list[tuple[str, str]]:
    """(prompt text, provenance) for the `count` most frequent (sex, site, age band) combinations, per class."""
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"status", "caption", "sex", "site", "age"} - set(reader.fieldnames or ())
            if missing:
                raise MedsynthError(f"{manifest}: manifest lacks column(s) {', '.join(sorted(missing))}")
            rows = [r for r in reader if r["status"] == "ok" and r["caption"] and is_training_row(r)]
    except OSError as exc:
        raise MedsynthError(f"{manifest}: cannot read the dataset manifest ({exc.strerror})") from exc
    if not rows:
        raise MedsynthError(f"{manifest}: no image with status 'ok' and a caption: nothing to make sample prompts from")
    classes: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        classes[row.get("folder") or ""].append(row)
    if len(classes) == 1:
        return _most_frequent(rows, count, "")
    share = max(1, round(count / len(classes)))   # the manifest lists the folders in the build's order
    return [prompt for folder, members in classes.items() for prompt in _most_frequent(members, share, folder)]


def _most_frequent(rows: list[dict[str, str]], count: int, folder: str) -> list[tuple[str, str]]:
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["sex"] or "", row["site"] or "", age_band(row["age"]) or "")].append(row)
    ranked = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))[:count]
    out = []
    for key, members in ranked:
        plain = [r for r in members if not _truthy(r.get("hair"))] or members
        captions = Counter(r["caption"] for r in plain)
        caption = min(captions, key=lambda c: (-captions[c], len(c), c))
        label = "/".join(part or "?" for part in key)
        out.append((caption, f"manifest: {len(members)} images {label}" + (f" in {folder}" if folder else "")))
    return out


def prompts_from_file(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MedsynthError(f"{path}: cannot read the sample prompts file: {exc}") from exc
    out = [(line.strip(), f"{path}:{n}") for n, line in enumerate(lines, 1)
           if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise MedsynthError(f"{path}: the sample prompts file has no prompt lines")
    return out


def sample_prompts(manifest: Path, *, count: int, base_seed: int, texts: Sequence[str] = (),
                   texts_file: Path | None = None) -> list[SamplePrompt]:
    """The prompts of a run: config texts, else a file, else the manifest's most frequent combinations."""
    if texts:
        items = [(t, "sample_prompts") for t in texts]
    elif texts_file is not None:
        items = prompts_from_file(texts_file)
    else:
        items = prompts_from_manifest(manifest, count)
    for text, origin in items:
        if not text.strip():
            raise MedsynthError(f"{origin}: empty sample prompt")
    return [SamplePrompt(text, base_seed + i, origin) for i, (text, origin) in enumerate(items)]
