"""Evidence for where the skin-tone ITA estimates its illuminant (orchestrator/vision/skin_tone.py).

For each image folder (the 40 CC0 demo images; the same 40 at original resolution in the shared data,
../shared/data/isic/uda1_cc0, when present) and each illuminant reference of skin_tone.REFERENCES:
  none    no colour constancy (the method before ITA_ALGORITHM v2)
  view    Shades of Gray (p = 6) over the whole field of view (Barata et al. 2015)
  skin    Shades of Gray over the skin ring itself
  bright  Shades of Gray over the brightest 5 % of the view outside the lesion (the chosen one)
printed: quartiles of the ITA (degrees, clipped to [-90, 90]), how many images are reliable, the reliable
images per Chardon band, and the unreliable ones per reason. With --per-image, one line per image.

Run: .venv/bin/python bench/skin_tone_calibration.py [--per-image]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.common.paths import DEMO_DIR  # noqa: E402
from orchestrator.vision.lesion import analysis_image, field_of_view, lesion_mask  # noqa: E402
from orchestrator.vision.skin_tone import BAND_NAMES, REFERENCES, estimate_tone  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the shared data sits beside the checkout, or beside the folder of worktrees
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT / "shared")
FOLDERS = {"demo": DEMO_DIR / "images", "shared uda1_cc0": SHARED / "data" / "isic" / "uda1_cc0"}


def measure(folder: Path, per_image: bool) -> None:
    results: dict[str, list] = {r: [] for r in REFERENCES}
    for path in sorted(folder.glob("*.jpg")):
        bgr = analysis_image(cv2.imread(str(path), cv2.IMREAD_COLOR))
        fov = field_of_view(bgr)
        mask = lesion_mask(bgr, fov)
        line = [path.stem]
        for reference in REFERENCES:
            tone = estimate_tone(bgr, mask, fov, reference=reference)
            results[reference].append(tone)
            line.append(f"{reference} {tone.ita} {tone.band or 'unreliable'}")
        if per_image:
            print("  " + " | ".join(line))
    for reference, tones in results.items():
        itas = [t.ita for t in tones if t.ita is not None]
        quartiles = np.percentile(itas, [0, 25, 50, 75, 100]).round(1).tolist() if itas else []
        bands = Counter(t.band for t in tones if t.reliable)
        reasons = Counter(" ".join((t.reason or "").split()[:2]) for t in tones if not t.reliable)
        print(f"  {reference:<7} ITA min/q1/median/q3/max {quartiles}  reliable {sum(t.reliable for t in tones)}"
              f"/{len(tones)}  bands { {b: bands[b] for b in BAND_NAMES if bands[b]} }"
              f"  unreliable {dict(reasons)}")


def main() -> None:
    per_image = "--per-image" in sys.argv[1:]
    for name, folder in FOLDERS.items():
        if folder.is_dir():
            print(f"{name} ({folder}):")
            measure(folder, per_image)


if __name__ == "__main__":
    main()
