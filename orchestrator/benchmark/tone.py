"""The skin-tone stratum of each test image: the metadata's Fitzpatrick type where the format has one, else the
ITA band measured from the image at the lesion analysis size (orchestrator.vision.skin_tone.resolve_tone);
"unreliable" where the estimate is, None where there is neither. Measurements are cached in <out>/cache/tones.json
by file, size, mtime and the method's version, so a re-run does not measure again."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from orchestrator.common.atomic import write_atomic
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel
from orchestrator.dataset.images import decode_reduced
from orchestrator.vision.lesion import ANALYSIS_SIZE
from orchestrator.vision.skin_tone import FITZPATRICK_BAND, ITA_ALGORITHM, estimate_tone, resolve_tone

UNRELIABLE = "unreliable"


def _band(path: Path) -> str | None:
    try:
        bgr = decode_reduced(path.read_bytes(), ANALYSIS_SIZE)
    except OSError:
        return None
    if bgr is None:
        return None
    band, _, reason = resolve_tone(None, estimate_tone(bgr))
    return band or (UNRELIABLE if reason else None)


def _entry(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def test_tones(test: pd.DataFrame, cache_dir: Path, *, workers: int, progress: bool) -> list[str | None]:
    fitzpatrick = [None if pd.isna(v) else str(v) for v in test.get("fitzpatrick", pd.Series([None] * len(test)))]
    # a clinician's Fitzpatrick type wins over the lighting-dependent ITA: those images are not measured
    paths = [Path(p) for p, f in zip(test["path"], fitzpatrick) if f not in FITZPATRICK_BAND]
    cache_path = cache_dir / "tones.json"
    try:
        cached = json.loads(cache_path.read_text(encoding="utf-8"))
        known = cached["bands"] if cached.get("algorithm") == ITA_ALGORITHM else {}
    except (OSError, ValueError, KeyError, AttributeError):
        known = {}
    entries = [_entry(p) for p in paths]
    todo = [p for p, e in zip(paths, entries) if e not in known]
    if todo:
        bar = tqdm(total=len(todo), desc="skin tone of the test images", unit="img", disable=not progress)
        bands = run_parallel(_band, todo, workers=workers, stall_timeout=STALL_TIMEOUT, describe=str,
                             on_result=lambda _: bar.update())
        bar.close()
        known.update({_entry(p): b for p, b in zip(todo, bands)})
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_path, json.dumps({"algorithm": ITA_ALGORITHM, "bands": known}))
    measured = iter(known[e] for e in entries)
    return [FITZPATRICK_BAND[f] if f in FITZPATRICK_BAND else next(measured) for f in fitzpatrick]
