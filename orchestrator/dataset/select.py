"""Choosing the training rows: a class by diagnosis (or benign as a class), minus known duplicate images."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest.csvfile import read_csv_file
from orchestrator.dataset.ingest.normalise import DOWNSAMPLED


def read_duplicates(path: Path) -> set[str]:
    """The second image of each pair in an ISIC 2020 duplicates file (image_name_1,image_name_2): those to drop."""
    try:
        os.stat(path)  # not Path.exists(): that says False for a link loop, which is no "not found"
        raw = read_csv_file(Path(path))
    except FileNotFoundError:  # also a link to nowhere
        raise MedsynthError(f"{path}: duplicates file not found") from None
    except OSError as exc:  # a link loop, no permission, an I/O error: one line naming the file
        raise MedsynthError(f"{path}: cannot read the duplicates file: {exc.strerror or exc}") from exc
    lacking = [c for c in ("image_name_1", "image_name_2") if c not in raw.cells]
    if lacking:
        raise MedsynthError(f"{path}, line 1: not a duplicates file (no column {', '.join(lacking)})")
    names = raw.cells["image_name_2"].str.strip()
    if (names == "").any():
        raise raw.fail(int((names == "").to_numpy().argmax()), "image_name_2 is empty")
    return set(names)


def _describe(table: pd.DataFrame) -> str:
    if table.empty:
        return "the table has no rows"
    counts = table["diagnosis"].fillna("<no diagnosis>").value_counts()
    held = ", ".join(f"{name} {n}" for name, n in counts.items())
    benign = int((table["malignant"] == False).sum())  # noqa: E712 - elementwise on a nullable column
    hint = " (no row has a diagnosis: was a ground-truth file left out?)" if table["diagnosis"].isna().all() else ""
    return f"the {len(table)} rows hold {held} ({benign} marked benign){hint}"


def select_lesions(table: pd.DataFrame, *, diagnoses: Sequence[str] | None = ("melanoma",),
                   benign: bool = False, drop_ids: Collection[str] = ()) -> pd.DataFrame:
    """The rows to train on.

    diagnoses: keep rows whose diagnosis is one of these (case-insensitive); None keeps every diagnosis.
    benign: keep the rows marked not malignant instead of filtering by diagnosis (benign as its own class).
    drop_ids: image ids (or ISIC 2019 `_downsampled` names) to leave out, e.g. read_duplicates(...).
    """
    return select_counting_duplicates(table, diagnoses=diagnoses, benign=benign, drop_ids=drop_ids)[0]


def select_counting_duplicates(table: pd.DataFrame, *, diagnoses: Sequence[str] | None = ("melanoma",),
                               benign: bool = False, drop_ids: Collection[str] = ()) -> tuple[pd.DataFrame, int]:
    """select_lesions, and how many rows the selection would have held but drop_ids left out (the duplicates
    of the selected class; duplicates of other rows are not counted)."""
    drop = {i.removesuffix(DOWNSAMPLED) for i in drop_ids}   # ids, as the lesion table keys images
    duplicate = table["image_id"].isin(drop)
    kept = table[~duplicate]
    if benign:
        matches = (table["malignant"] == False).fillna(False)  # noqa: E712
        asked = "benign rows (malignant = false)"
    elif diagnoses is not None:
        wanted = {d.strip().lower() for d in diagnoses}
        matches = table["diagnosis"].str.lower().isin(wanted).fillna(False)
        asked = f"diagnosis {' or '.join(sorted(wanted))}"
    else:
        matches, asked = pd.Series(True, index=table.index), "any row"
    matches = matches.astype(bool)
    chosen = table[matches & ~duplicate]
    if chosen.empty:
        dropped = f" after dropping {len(table) - len(kept)} duplicate(s)" if len(kept) < len(table) else ""
        raise MedsynthError(f"no rows selected: asked for {asked}{dropped}, but {_describe(kept)}")
    return chosen.reset_index(drop=True), int((matches & duplicate).sum())
