"""What to generate: one (metadata, prompt, seed) per synthetic image, drawn from the training manifest.

Every item is a real training row's metadata (sex, site, age, diagnosis, and any other manifest column):
- `match` (default) draws rows uniformly with replacement, so the synthetic set mirrors the joint
  distribution of the training set;
- `balance` on a field (site, sex, age_band, skin_tone, diagnosis: the classes of a --balance-classes build) makes that field uniform over its known values: each
  block of k items (k = number of values) takes every value once in a shuffled order, and the row is drawn
  among the rows having that value, so the other fields keep their distribution given the value. Rows
  where the field is missing are not drawn.
Regularization rows (folder reg/...) are not drawn: they are the prior, not what the LoRA learnt.
The prompt is the caption template rendered from that row (the same wording and its class's trigger, as in
training), without the hair
phrase unless `keep_hair`. One numpy Generator seeded with `seed` makes every choice and the per-image seeds,
item by item, so the same seed gives the same items and a larger count extends a smaller one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.dataset.captions import CaptionSettings, render_captions
from orchestrator.common.errors import MedsynthError
from orchestrator.generate.fields import BALANCE_FIELDS
from orchestrator.dataset.lesions import LESION_COLUMNS, conform
from orchestrator.dataset.age import age_band

MAX_SEED = 0x7FFFFFFF  # sd-scripts draws its own seeds in 0..2**31-1
# sdxl_gen_img.py splits a prompt line on " --" and expands {a|b} variants: neither may be in a prompt
_FORBIDDEN = (" --", "{", "}")


@dataclass(frozen=True)
class Item:
    """One synthetic image to make. `row` is the manifest row (as text) its metadata comes from."""

    number: int                 # 1-based; the image is SYN_<number:07d>.png
    prompt: str
    seed: int
    row: dict[str, str]


def read_manifest(manifest: Path) -> pd.DataFrame:
    """The manifest's usable rows (status ok, with a caption), every cell as text ('' when missing)."""
    try:
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise MedsynthError(f"{manifest}: cannot read the dataset manifest ({exc})") from exc
    missing = {"image_id", "status", "caption", "sex", "site", "age"} - set(table.columns)
    if missing:
        raise MedsynthError(f"{manifest}: manifest lacks column(s) {', '.join(sorted(missing))}")
    training = ~table["folder"].str.startswith("reg/") if "folder" in table else True
    table = table[(table["status"] == "ok") & (table["caption"] != "") & training].reset_index(drop=True)
    if table.empty:
        raise MedsynthError(f"{manifest}: no image with status 'ok' and a caption: nothing to draw prompts from")
    return table


def field_values(table: pd.DataFrame, field: str, manifest: Path) -> pd.Series:
    """The per-row value of a balance field ('' when missing)."""
    if field == "age_band":
        return table["age"].map(lambda a: age_band(a) or "")
    if field not in table.columns:
        raise MedsynthError(f"balance {field}: {manifest} has no '{field}' column"
                            + (" (build the dataset with --skin-tone)" if field == "skin_tone" else ""))
    return table[field]


def draw(table: pd.DataFrame, count: int, *, seed: int, balance: str | None = None,
         manifest: Path = Path("manifest.csv")) -> list[tuple[int, int]]:
    """(row index, image seed) per item; see the module docstring for the two modes."""
    if count < 1:
        raise MedsynthError(f"count {count}: must be at least 1")
    rng = np.random.default_rng(seed)
    if balance is None:
        return [(int(rng.integers(len(table))), int(rng.integers(MAX_SEED))) for _ in range(count)]
    if balance not in BALANCE_FIELDS:
        raise MedsynthError(f"balance {balance!r}: choose one of {', '.join(BALANCE_FIELDS)}")
    values = field_values(table, balance, manifest)
    known = sorted(v for v in values.unique() if v != "")
    if not known:
        raise MedsynthError(f"balance {balance}: no row of {manifest} has a {balance}"
                            + (" (build the dataset with --skin-tone)" if balance == "skin_tone" else ""))
    rows_of = {v: np.flatnonzero((values == v).to_numpy()) for v in known}
    out: list[tuple[int, int]] = []
    order: list[int] = []
    for _ in range(count):
        if not order:
            order = list(rng.permutation(len(known)))
        rows = rows_of[known[order.pop()]]
        out.append((int(rows[rng.integers(len(rows))]), int(rng.integers(MAX_SEED))))
    return out


def lesion_table(table: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows as the caption template sees training rows: lesion-table types, extra columns as text."""
    typed = pd.DataFrame(index=table.index)
    for column in table.columns:
        dtype = LESION_COLUMNS.get(column)
        if dtype == "Int64":
            typed[column] = pd.to_numeric(table[column], errors="coerce").round()
        elif dtype == "boolean":
            typed[column] = table[column].str.lower().map({"true": True, "false": False})
        elif dtype == "string":
            typed[column] = table[column].replace("", None)
    lesions = conform(typed)
    extra = [c for c in table.columns if c not in LESION_COLUMNS]
    return pd.concat([lesions, table[extra].replace("", None).reset_index(drop=True)], axis=1)


def _render(table: pd.DataFrame, hair: list[bool | None], settings: CaptionSettings) -> list[str]:
    """Captions of manifest rows; a build with --skin-tone gave the template each row's band as `skin_tone`."""
    if "skin_tone" not in table:
        return render_captions(lesion_table(table), hair, settings)
    tones = [t or None for t in table["skin_tone"]]
    return render_captions(lesion_table(table.drop(columns="skin_tone")), hair, settings, skin_tones=tones)


def _hair(table: pd.DataFrame) -> list[bool | None]:
    if "hair" not in table:
        return [None] * len(table)
    return [{"true": True, "false": False}.get(h.strip().lower()) for h in table["hair"]]


def check_template(table: pd.DataFrame, settings: CaptionSettings, manifest: Path) -> None:
    """The template must reproduce the training captions, or the prompts would not be in training's wording."""
    rendered = _render(table, _hair(table), settings)
    for image_id, caption, ours in zip(table["image_id"], table["caption"], rendered):
        if caption != ours:
            raise MedsynthError(f"{manifest}: {image_id}'s caption {caption!r} is not what {settings.template} "
                                f"renders from its metadata ({ours!r}): give the template and trigger the dataset "
                                f"was built with (caption_template)")


def make_items(table: pd.DataFrame, draws: Sequence[tuple[int, int]], settings: CaptionSettings, *,
               keep_hair: bool = False) -> list[Item]:
    """Render each drawn row's prompt (hair phrase only with keep_hair)."""
    picked = table.iloc[[row for row, _ in draws]].reset_index(drop=True)
    hair = _hair(picked) if keep_hair else [False] * len(picked)
    prompts = _render(picked, hair, settings)
    items = []
    for number, (prompt, (_, seed), row) in enumerate(zip(prompts, draws, picked.to_dict("records")), start=1):
        bad = next((f for f in _FORBIDDEN if f in prompt), None)
        if bad is not None:
            raise MedsynthError(f"prompt {prompt!r} (from {row['image_id']}) contains {bad.strip()!r}, which "
                                f"sdxl_gen_img.py reads as an option or a variant list: change the caption template")
        items.append(Item(number, prompt, seed, {k: str(v) for k, v in row.items()}))
    return items


def plan_items(manifest: Path, count: int, *, seed: int, balance: str | None, settings: CaptionSettings,
               keep_hair: bool = False) -> list[Item]:
    table = read_manifest(manifest)
    check_template(table, settings, manifest)
    return make_items(table, draw(table, count, seed=seed, balance=balance, manifest=manifest), settings,
                      keep_hair=keep_hair)


def distribution(rows: Sequence[dict[str, str]] | pd.DataFrame, fields: Sequence[str]) -> dict[tuple[str, ...], float]:
    """Share of each combination of `fields` (age_band computed from age)."""
    frame = pd.DataFrame(rows).astype(str) if not isinstance(rows, pd.DataFrame) else rows
    cols = [field_values(frame, f, Path("rows")) if f == "age_band" else frame[f] for f in fields]
    keys = list(zip(*cols))
    counts: dict[tuple[str, ...], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return {k: v / len(keys) for k, v in sorted(counts.items())}

