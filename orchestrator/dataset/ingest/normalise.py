"""Vectorised conversions from raw CSV text to the lesion table's values.

Each function takes the raw file (so a bad cell can be reported with its line) and returns a Series aligned
with its rows. Missing values come back as pd.NA, never as "", "nan" or "unknown".
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest.csvfile import RawCsv

DOWNSAMPLED = "_downsampled"
# a plain file name: no folder part, no leading dot, nothing a shell or a path join could misread
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _first_bad(raw: RawCsv, bad: pd.Series | np.ndarray, column: str, what: str) -> MedsynthError:
    row = int(np.flatnonzero(np.asarray(bad, dtype=bool))[0])
    return raw.fail(row, f"{column} {raw.cells[column].iat[row]!r} {what}")


def _per_value(column: pd.Series, convert: Callable[[str], str | None]) -> pd.Series:
    """convert() applied once per distinct value: metadata columns repeat a few values over thousands of rows."""
    codes, uniques = pd.factorize(column)
    converted = np.asarray([convert(u) for u in uniques], dtype=object)
    return pd.Series(converted[codes], index=column.index, dtype="string")   # cells are never NaN: no code -1


def text(raw: RawCsv, column: str, missing: tuple[str, ...] = ("",), lower: bool = False) -> pd.Series:
    """The column, stripped, as text; values in `missing` (compared case-insensitively) become NA."""
    if column not in raw.cells:
        return pd.Series(pd.NA, index=raw.cells.index, dtype="string")
    absent = {m.lower() for m in missing}

    def convert(value: str) -> str | None:
        value = value.strip()
        return None if value.lower() in absent else value.lower() if lower else value

    return _per_value(raw.cells[column], convert)


def sex(raw: RawCsv, column: str) -> pd.Series:
    values = text(raw, column, missing=("", "unknown"), lower=True)
    bad = values.notna() & ~values.isin(["male", "female"])
    if bad.any():
        raise _first_bad(raw, bad.fillna(False), column, "is not male, female, unknown or empty")
    return values


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return np.nan


def _numbers(column: pd.Series) -> np.ndarray:
    """float() of each cell, NaN where it is not a number; computed once per distinct value."""
    codes, uniques = pd.factorize(column)
    return np.asarray([_number(u) for u in uniques], dtype=float)[codes]


def age(raw: RawCsv, column: str) -> pd.Series:
    """Whole years; ISIC writes "45" or "45.0", hence int(float(x))."""
    values = text(raw, column)
    if values.isna().all():
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
    numbers = _numbers(values.fillna(""))
    bad = values.notna().to_numpy() & ~(np.isfinite(numbers) & (numbers >= 0) & (numbers < 150))
    if bad.any():
        raise _first_bad(raw, bad, column, "is not an age in years")
    return pd.Series(np.trunc(numbers), index=values.index).astype("Int64")   # NaN (empty cell) -> NA


_FITZPATRICK = {**{t.lower(): t for t in ("I", "II", "III", "IV", "V", "VI")},
                **{str(n): t for n, t in enumerate(("I", "II", "III", "IV", "V", "VI"), start=1)}}


def fitzpatrick(raw: RawCsv, column: str) -> pd.Series:
    """Fitzpatrick skin type as a Roman numeral "I".."VI"; the archive writes "I", "II", ..., others 1..6."""
    values = text(raw, column, missing=("", "unknown"), lower=True)
    bad = values.notna() & ~values.isin(list(_FITZPATRICK))
    if bad.any():
        raise _first_bad(raw, bad.fillna(False), column, "is not a Fitzpatrick skin type (I-VI)")
    return values.map(_FITZPATRICK, na_action="ignore").astype("string")


def flag(raw: RawCsv, column: str) -> pd.Series:
    """A 0/1 cell ("0", "1", "0.0", "1.0") as a boolean; anything else, including empty, is a malformed row."""
    numbers = _numbers(raw.cells[column])
    bad = ~np.isin(numbers, [0.0, 1.0])
    if bad.any():
        raise _first_bad(raw, bad, column, "is not 0 or 1")
    return pd.Series(numbers == 1.0, index=raw.cells.index)


def image_names(raw: RawCsv, column: str) -> tuple[pd.Series, pd.Series]:
    """(image_name, image_id): the file stem as written, and the id without ISIC 2019's `_downsampled` suffix."""
    # plain Python over the list: every value is distinct, and pandas' .str methods cost more per value here
    names = [name.strip() for name in raw.cells[column]]
    plain = np.fromiter(map(bool, map(_PLAIN_NAME.fullmatch, names)), dtype=bool, count=len(names))
    if not plain.all():
        raise _first_bad(raw, ~plain, column, "is not a plain image file name")
    ids = [name.removesuffix(DOWNSAMPLED) for name in names]
    index = raw.cells.index
    return pd.Series(names, index=index, dtype="string"), pd.Series(ids, index=index, dtype="string")


def isic_patient(raw: RawCsv, name_column: str) -> dict[str, pd.Series]:
    """The image and patient columns ISIC 2020 and the ISIC Archive export share (patient_id, sex, age_approx,
    and lesion_id where the copy has it), under the lesion table's names; the image name is in `name_column`."""
    names, ids = image_names(raw, name_column)
    return {"image_id": ids, "image_name": names, "patient_id": text(raw, "patient_id"),
            "lesion_id": text(raw, "lesion_id"), "sex": sex(raw, "sex"),
            "age": age(raw, "age_approx")}
