"""The skin-tone stratum of each test image: measured from the image at the lesion analysis size
(orchestrator.vision.skin_tone), None where there is no estimate. Cached in <out>/cache/tones.json by file, size and
mtime and the method's version, so a re-run does not measure again."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from orchestrator.common.atomic import write_atomic
from orchestrator.common.workers import STALL_TIMEOUT, run_parallel
from orchestrator.dataset.images import decode_reduced
from orchestrator.vision.lesion import ANALYSIS_SIZE
from orchestrator.vision.skin_tone import ITA_ALGORITHM, skin_ita, tone_band


def _band(path: Path) -> str | None:
    try:
        bgr = decode_reduced(path.read_bytes(), ANALYSIS_SIZE)
    except OSError:
        return None
    if bgr is None:
        return None
    ita = skin_ita(bgr)
    return None if ita is None else tone_band(ita)


def _entry(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def test_tones(test: pd.DataFrame, cache_dir: Path, *, workers: int, progress: bool) -> list[str | None]:
    paths = [Path(p) for p in test["path"]]
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
    return [known[e] for e in entries]
