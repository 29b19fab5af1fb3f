"""One row per image id: repeated rows inside a file, and the same image from several files."""

from __future__ import annotations

import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest.csvfile import where

# fields two sources must agree on; sites use different vocabularies per format and diagnoses differ in
# granularity, so those are filled, not compared
AGREE = ("sex", "age", "malignant")


def _at(row: pd.Series) -> str:
    return where(row["source_file"], int(row["source_line"]))


def drop_repeated_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Keep one of each set of identical rows of one file; rows for one image that differ are an error."""
    repeated = table.duplicated("image_id", keep=False)
    if not repeated.any():
        return table
    same = [c for c in table.columns if c != "source_line"]
    distinct = table[repeated].drop_duplicates(same)
    clash = distinct.duplicated("image_id", keep=False)
    if clash.any():
        clashing = distinct[clash]
        first, second = (row for _, row in clashing[clashing["image_id"] == clashing["image_id"].iat[0]]
                         .head(2).iterrows())
        fields = ", ".join(c for c in same if not _equal(first[c], second[c]))
        raise MedsynthError(f"{_at(second)}: image {second['image_id']} repeats line {int(first['source_line'])} "
                            f"with different {fields}")
    return table.drop_duplicates("image_id").reset_index(drop=True)


def _equal(a: object, b: object) -> bool:
    return (pd.isna(a) and pd.isna(b)) or (not pd.isna(a) and not pd.isna(b) and a == b)


def merge_sources(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Each image once: the first source's row, its missing fields filled from later sources, in first-seen order.

    Tables must already hold one row per image_id and share the lesion table's columns and dtypes.
    """
    if len(tables) == 1:
        return tables[0]
    rows = pd.concat(tables, ignore_index=True)
    if not rows["image_id"].duplicated().any():
        return rows
    # groupby(...).first() takes each column's first non-missing value: first source wins, later ones fill gaps
    merged = rows.groupby("image_id", sort=False, dropna=False).first().reset_index()
    merged = merged[rows.columns]
    _check_agreement(rows, merged)
    return merged


def _check_agreement(rows: pd.DataFrame, merged: pd.DataFrame) -> None:
    chosen = rows[["image_id"]].merge(merged[["image_id", *AGREE]], on="image_id", how="left")
    for column in AGREE:
        mine, kept = rows[column], chosen[column]
        differs = (mine.notna() & kept.notna() & (mine != kept)).fillna(False).to_numpy()
        if differs.any():
            later = rows.iloc[differs.argmax()]
            ids = rows["image_id"]
            first = rows[(ids == later["image_id"]) & rows[column].notna()].iloc[0]
            raise MedsynthError(f"image {later['image_id']}: {column} {first[column]} at {_at(first)} "
                                f"conflicts with {later[column]} at {_at(later)}")
