"""`medsynth reader-study`: one self-contained HTML page in which a reader tells real from synthetic images.

The page (templates/reader_study.html.j2) shows a seeded, shuffled mix of n images (half real, half synthetic)
one at a time; answers go to localStorage under the study's id, so a reload continues and two studies never
mix, and can be downloaded as CSV. When every image is answered it shows accuracy, sensitivity for synthetic
(synthetic called synthetic / all synthetic), specificity (real called real / all real) and a two-sided exact
binomial test of the number correct against 50 %.

What the reader must not see: no file names, and every image is re-encoded the same way (centre-cropped to a
square, since ISIC photos are 4:3 and SDXL draws squares; resized to `size` px; JPEG), which drops PNG text
chunks, where sd-scripts writes the prompt. The truth is stored obfuscated: item i's token is a random
32-bit number whose lowest bit is truth XOR the lowest bit of FNV-1a("<study id>:<i>"); the page decodes it
only to score. This keeps labels out of view of a reader, not of a programmer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import jinja2
import markupsafe
import numpy as np

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.record import has_record, read_record

# what medsynth's own folders hold (dataset build: JPEG or PNG, generate: PNG) and ISIC publishes; every image
# is re-encoded to JPEG for the page
STUDY_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
REAL, SYNTHETIC = 0, 1


@dataclass(frozen=True)
class StudyItem:
    path: Path
    truth: int           # REAL or SYNTHETIC


def image_files(folder: Path) -> list[Path]:
    """The images of a dataset folder (its kohya image folder), a synthetic/ folder (its images/), a folder
    holding synthetic/ (a run folder after `medsynth generate`, as `evaluate` takes it), or a folder."""
    if not folder.is_dir():
        raise MedsynthError(f"{folder}: not a folder")
    if has_record(folder):
        folder = folder / read_record(folder).image_dir
    elif (folder / "images").is_dir():
        folder = folder / "images"
    elif (folder / "synthetic" / "images").is_dir():  # not the run folder's own PNGs (contact sheet, ...)
        folder = folder / "synthetic" / "images"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in STUDY_IMAGE_SUFFIXES)
    if not files:
        raise MedsynthError(f"{folder}: no .jpg/.jpeg/.png images")
    return files


def pick(real: Sequence[Path], synthetic: Sequence[Path], n: int, seed: int) -> list[StudyItem]:
    """n // 2 real and n - n // 2 synthetic images, drawn without replacement and shuffled, from one seed."""
    if n < 2:
        raise MedsynthError(f"n {n}: a study needs at least 2 images (one of each kind)")
    shared = sorted({p.resolve() for p in real} & {p.resolve() for p in synthetic})
    if shared:  # the same picture would be both answers
        raise MedsynthError(f"{shared[0]}: in both the real and the synthetic images ({len(shared)} files are): "
                            f"give two different folders")
    want = {REAL: n // 2, SYNTHETIC: n - n // 2}
    pools = {REAL: list(real), SYNTHETIC: list(synthetic)}
    for kind, name in ((REAL, "real"), (SYNTHETIC, "synthetic")):
        if len(pools[kind]) < want[kind]:
            raise MedsynthError(f"n {n} needs {want[kind]} {name} images, the {name} folder has "
                                f"{len(pools[kind])}")
    rng = np.random.default_rng(seed)
    items = [StudyItem(pools[kind][i], kind) for kind in (REAL, SYNTHETIC)
             for i in sorted(rng.choice(len(pools[kind]), size=want[kind], replace=False))]
    return [items[i] for i in rng.permutation(len(items))]


def encode(path: Path, size: int, quality: int) -> str:
    """The image centre-cropped to a square, resized to size x size, as a JPEG data: URI."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise MedsynthError(f"{path}: not a readable image")
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top:top + side, left:left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    resized = cv2.resize(square, (size, size), interpolation=interpolation)
    ok, data = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise MedsynthError(f"{path}: JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def fnv1a32(text: str) -> int:
    """FNV-1a, 32 bit, over UTF-8 bytes (the page has the same function)."""
    value = 0x811C9DC5
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def study_id(items: Sequence[StudyItem], seed: int) -> str:
    digest = hashlib.sha256(f"{seed}".encode())
    for item in items:
        digest.update(hashlib.sha256(item.path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def tokens(items: Sequence[StudyItem], sid: str, seed: int) -> list[int]:
    """Per item a random 32-bit number whose lowest bit is truth XOR fnv1a32('<sid>:<i>') & 1."""
    rng = np.random.default_rng([seed, 0x5EED])
    out = []
    for i, item in enumerate(items):
        bit = item.truth ^ (fnv1a32(f"{sid}:{i}") & 1)
        out.append((int(rng.integers(0, 2**31)) & ~1) | bit)
    return out


def decode(token: int, sid: str, index: int) -> int:
    return (token ^ fnv1a32(f"{sid}:{index}")) & 1


def binomial_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: the probability of outcomes no more likely than k (as R's binom.test
    and scipy's binomtest, with the same 1e-7 relative tolerance)."""
    if n == 0:
        return 1.0
    log_pmf = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
               + (n - i) * math.log1p(-p) for i in range(n + 1)]
    observed = log_pmf[k]
    total = sum(math.exp(v) for v in log_pmf if v <= observed + math.log1p(1e-7))
    return min(1.0, total)


@dataclass(frozen=True)
class Study:
    id: str
    items: list[StudyItem]
    html: str


def build_study(real: Path, synthetic: Path, *, n: int = 40, seed: int = 0, size: int = 512,
                quality: int = 85, title: str = "Real or synthetic?") -> Study:
    items = pick(image_files(real), image_files(synthetic), n, seed)
    sid = study_id(items, seed)
    data = {"id": sid, "tokens": tokens(items, sid, seed),
            "images": [encode(item.path, size, quality) for item in items]}
    return Study(sid, items, render_page(data, title))


def render_page(data: dict, title: str) -> str:
    """templates/reader_study.html.j2 with the study as JSON in a <script> element (HTML-escaped elsewhere)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths.template_dirs()), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    # no '<', '>' or '&' inside the JSON, so nothing in it can end the <script> element
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    return env.get_template("reader_study.html.j2").render(title=title, study_id=data["id"],
                                                           data_json=markupsafe.Markup(payload))


def write_study(study: Study, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(study.html, encoding="utf-8")
    os.replace(tmp, out)

