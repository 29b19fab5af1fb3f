"""The normalised lesion table: one row per image, whatever metadata format it came from.

Every reader in `orchestrator.dataset.ingest` returns a pandas DataFrame with exactly these columns, in this
order. Missing values are pandas NA (never "nan", "unknown" or ""), so captions can leave them out.
"""

from __future__ import annotations

import pandas as pd

# name -> pandas dtype
LESION_COLUMNS: dict[str, str] = {
    "image_id": "string",      # ISIC id without the `_downsampled` suffix (the de-duplication key)
    "image_name": "string",    # the image file's stem, e.g. ISIC_0000017_downsampled (file = image_name + ".jpg")
    "patient_id": "string",
    "lesion_id": "string",     # the source's lesion id (HAM10000, ISIC 2020 GT_v2, archive exports) | NA
    "sex": "string",           # "male" | "female" | NA
    "age": "Int64",            # years (ISIC's 5-year buckets) | NA
    "fitzpatrick": "string",   # Fitzpatrick skin type "I".."VI" (ISIC Archive exports) | NA
    "site": "string",          # anatomical site as the source wrote it (lower-case) | NA
    "diagnosis": "string",     # lower-case diagnosis name, e.g. "melanoma", "nevus" | NA
    "malignant": "boolean",    # the source's malignant flag | NA
    "source": "string",        # format name: isic2020 | isic2019 | ham10000 | isic_archive
    "source_file": "string",   # the CSV the row came from
    "source_line": "Int64",    # 1-based line number in that CSV (the header is line 1)
    "attribution": "string",
    "license": "string",
}


def empty_lesion_table() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in LESION_COLUMNS.items()})


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Return df with exactly LESION_COLUMNS (missing ones filled with NA) in order and dtype."""
    out = pd.DataFrame(index=df.index)
    for name, dtype in LESION_COLUMNS.items():
        col = df[name] if name in df.columns else pd.Series(pd.NA, index=df.index)
        out[name] = col.astype(dtype)
    return out.reset_index(drop=True)
