"""The synthetic/ folder of `medsynth generate` and the one owner of its files: images named SYN_<n:07d>.png, the
seed and prompt sd-scripts writes into each PNG's text chunks, metadata.csv in ISIC 2020 form plus provenance
columns (write_metadata, read_synthetic_metadata) and generation.json, the settings the images were made with,
which a re-run into the same folder must match (write_generation, read_generation; it carries a schema_version,
and a file without one was written before it had one: version 1)."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.common.errors import MedsynthError
from orchestrator.common.jsonrecord import Wording, field_error, load_versioned, of_types, write_versioned
from orchestrator.generate.command import GenSettings
from orchestrator.generate.prompts import Item
from orchestrator.common.atomic import write_atomic

ISIC2020_COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                    "diagnosis", "benign_malignant", "target")
# image_manipulation is the isic-metadata field (values: instrument only, altered, synthetic) that marks a generated
# image to ISIC tools; the package has no provenance fields, so the run, epoch and medsynth version are
# medsynth_-prefixed columns, which its validation keeps as unstructured values
EXTRA_COLUMNS = ("synthetic", "image_manipulation", "prompt", "seed", "lora_file", "lora_sha256", "medsynth_version",
                 "medsynth_run", "medsynth_epoch")
GENERATION_NAME = "generation.json"
GENERATION_SCHEMA_VERSION = 1
RUN_DIR_KEY = "run_dir"   # optional: files written before it lack it and still read
_FIX = "move the folder away or choose another output folder"


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


def metadata_rows(items: Sequence[Item], s: GenSettings, run_name: str,
                  extra_fields: Sequence[str] = ()) -> list[dict[str, str]]:
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
            "synthetic": "1", "image_manipulation": "synthetic", "prompt": item.prompt, "seed": str(item.seed),
            "lora_file": s.lora_file, "lora_sha256": s.lora_sha256, "medsynth_version": __version__,
            "medsynth_run": run_name, "medsynth_epoch": "" if s.epoch is None else str(s.epoch),
            **{f: r.get(f, "") for f in extra_fields}})
    return rows


def write_metadata(path: Path, rows: Sequence[Mapping[str, str]], extra_fields: Sequence[str] = ()) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*ISIC2020_COLUMNS, *EXTRA_COLUMNS, *extra_fields], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())


def read_synthetic_metadata(path: Path) -> list[dict[str, str]]:
    """The rows of a synthetic/metadata.csv, one dict per image in the file's column order; a MedsynthError
    naming the file (and column) when it cannot be read or lacks a column write_metadata writes."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in (*ISIC2020_COLUMNS, *EXTRA_COLUMNS) if c not in (reader.fieldnames or ())]
            if missing:
                raise MedsynthError(f"{path}: not a medsynth generate metadata file: no column '{missing[0]}'")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MedsynthError(f"{path}: cannot read the synthetic metadata: {getattr(exc, 'strerror', None) or exc}") \
            from exc


def _json_values(s: GenSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(s)))  # tuples as lists, as the file holds them


def write_generation(synthetic: Path, s: GenSettings, run_dir: Path | None = None) -> None:
    """generation.json: the settings, and the run folder the LoRA came from (which the benchmark's leak check
    follows to the training set; no setting, since moving the run does not change the pixels)."""
    extra = {} if run_dir is None else {RUN_DIR_KEY: str(Path(run_dir).resolve())}
    write_versioned(synthetic / GENERATION_NAME, {**_json_values(s), **extra}, version=GENERATION_SCHEMA_VERSION)


def _typed(value: Any, hint: Any) -> tuple[bool, Any]:
    """(whether the JSON value fits the GenSettings type hint, the value as that type)."""
    if isinstance(hint, types.UnionType):  # X | None
        return next(((True, v) for ok, v in (_typed(value, h) for h in typing.get_args(hint)) if ok), (False, value))
    if hint is type(None):
        return value is None, value
    if typing.get_origin(hint) is tuple:  # tuple[str, ...]: a JSON list
        return isinstance(value, list) and all(isinstance(v, str) for v in value), tuple(value or ())
    if hint is float:  # JSON writes 7.0 as 7.0, a hand-written 7 is as good
        ok = of_types(value, (int, float))
        return ok, float(value) if ok else value
    return of_types(value, (hint,)), value


def _load_generation(synthetic: Path) -> dict[str, Any] | None:
    path = synthetic / GENERATION_NAME
    if not path.is_file():
        return None
    return load_versioned(path, version=GENERATION_SCHEMA_VERSION, wording=Wording("generation record", _FIX))


def read_generation(synthetic: Path) -> GenSettings | None:
    """The settings synthetic/generation.json records (None when there is none); a MedsynthError naming the
    file (and key) when it is not JSON, hand-edited wrongly or of another schema version."""
    path, data = synthetic / GENERATION_NAME, _load_generation(synthetic)
    if data is None:
        return None
    hints = typing.get_type_hints(GenSettings)
    values = {}
    for f in fields(GenSettings):
        if f.name not in data:
            raise field_error(path, f.name, "is missing", _FIX)
        ok, values[f.name] = _typed(data[f.name], hints[f.name])
        if not ok:
            raise field_error(path, f.name, f"is {data[f.name]!r}, not of type {hints[f.name]}", _FIX)
    return GenSettings(**values)


def read_generation_run(synthetic: Path) -> Path | None:
    """The run folder generation.json records; None when there is no file or it has none (written by a
    medsynth from before the key)."""
    data = _load_generation(synthetic)
    if data is None or data.get(RUN_DIR_KEY) is None:
        return None
    if not isinstance(data[RUN_DIR_KEY], str):
        raise field_error(synthetic / GENERATION_NAME, RUN_DIR_KEY, f"is {data[RUN_DIR_KEY]!r}, not a path", _FIX)
    return Path(data[RUN_DIR_KEY])


def check_previous(synthetic: Path, s: GenSettings) -> None:
    """A folder already holding images made with other settings is refused (they would mix)."""
    previous = read_generation(synthetic)
    if previous is None:
        return
    old, new = _json_values(previous), _json_values(s)
    diff = [k for k in new if old[k] != new[k]]
    if diff:
        k = diff[0]
        raise MedsynthError(f"{synthetic} holds images made with {k} = {old[k]!r}, this run has {new[k]!r}: "
                            f"choose another output folder (or the same settings to continue)")
