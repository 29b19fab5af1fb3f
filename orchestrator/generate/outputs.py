"""The synthetic/ folder of `medsynth generate`: images named SYN_<n:07d>.png, the seed and prompt sd-scripts
writes into each PNG's text chunks, metadata.csv in ISIC 2020 form, and generation.json (the settings the
images were made with, which a re-run into the same folder must match)."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.generate.command import GenSettings
from orchestrator.generate.prompts import Item
from orchestrator.common.atomic import write_atomic

ISIC2020_COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                    "diagnosis", "benign_malignant", "target")
EXTRA_COLUMNS = ("synthetic", "prompt", "seed", "lora_file", "lora_sha256")


def png_text(path: Path) -> dict[str, str]:
    """The tEXt/iTXt chunks of a PNG (sd-scripts stores prompt, seed, sampler, ... there). Other chunks are
    skipped with a seek, so checking thousands of images on a re-run reads a few hundred bytes each."""
    out: dict[str, str] = {}
    try:
        with path.open("rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return out
            while len(head := fh.read(8)) == 8:
                length, kind = struct.unpack(">I4s", head)
                if kind not in (b"tEXt", b"iTXt"):
                    if kind == b"IEND":
                        break
                    fh.seek(length + 4, os.SEEK_CUR)
                    continue
                body = fh.read(length)
                fh.seek(4, os.SEEK_CUR)
                key, _, rest = body.partition(b"\0")
                if kind == b"tEXt":
                    out[key.decode("latin-1")] = rest.decode("latin-1")
                else:  # compression flag, method, language tag, translated keyword, text
                    text = rest[2:].split(b"\0", 2)[2]
                    out[key.decode("latin-1")] = (zlib.decompress(text) if rest[0] else text).decode("utf-8")
    except (OSError, IndexError, zlib.error, UnicodeDecodeError):
        return out
    return out


def image_matches(path: Path, item: Item) -> bool:
    """The PNG says it was drawn with this item's seed and prompt."""
    text = png_text(path)
    return text.get("seed") == str(item.seed) and text.get("prompt") == item.prompt


def image_name(item: Item) -> str:
    return f"SYN_{item.number:07d}"


def metadata_rows(items: Sequence[Item], s: GenSettings, extra_fields: Sequence[str] = ()) -> list[dict[str, str]]:
    rows = []
    for item in items:
        r = item.row
        malignant = r.get("malignant", "").lower()
        rows.append({
            "image_name": image_name(item), "patient_id": "", "sex": r.get("sex", ""),
            "age_approx": r.get("age", ""), "anatom_site_general_challenge": r.get("site", ""),
            "diagnosis": r.get("diagnosis", ""),
            "benign_malignant": {"true": "malignant", "false": "benign"}.get(malignant, ""),
            "target": "1" if r.get("diagnosis", "").lower() == "melanoma" else "0",
            "synthetic": "1", "prompt": item.prompt, "seed": str(item.seed), "lora_file": s.lora_file,
            "lora_sha256": s.lora_sha256, **{f: r.get(f, "") for f in extra_fields}})
    return rows


def write_metadata(path: Path, rows: Sequence[Mapping[str, str]], extra_fields: Sequence[str] = ()) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*ISIC2020_COLUMNS, *EXTRA_COLUMNS, *extra_fields], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def check_previous(synthetic: Path, s: GenSettings) -> None:
    """A folder already holding images made with other settings is refused (they would mix)."""
    path = synthetic / "generation.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsynthError(f"{path}: unreadable ({exc}): move the folder away or choose another --out") from exc
    new = json.loads(json.dumps(asdict(s)))
    diff = [k for k in new if old.get(k) != new[k]]
    if diff:
        k = diff[0]
        raise MedsynthError(f"{synthetic} holds images made with {k} = {old.get(k)!r}, this run has {new[k]!r}: "
                            f"choose another --out (or the same settings to continue)")
