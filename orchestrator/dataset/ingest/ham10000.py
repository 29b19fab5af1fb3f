"""HAM10000_metadata.csv (7 columns, or 8 with the Dataverse `dataset` column); `unknown` means missing."""

from __future__ import annotations

import pandas as pd

from orchestrator.dataset.ingest import normalise as norm
from orchestrator.dataset.ingest.csvfile import RawCsv

# dx codes, named as ISIC 2019 names the same classes (all HAM10000 images are also in ISIC 2019)
DIAGNOSES = {"mel": "melanoma", "nv": "nevus", "bkl": "benign keratosis", "bcc": "basal cell carcinoma",
             "akiec": "actinic keratosis", "vasc": "vascular lesion", "df": "dermatofibroma"}
MALIGNANT = {"mel", "bcc", "akiec"}


def read(raw: RawCsv) -> pd.DataFrame:
    names, ids = norm.image_names(raw, "image_id")
    dx = norm.text(raw, "dx", missing=("", "unknown"), lower=True)
    known = dx.isin(list(DIAGNOSES))
    return pd.DataFrame({
        "image_id": ids,
        "image_name": names,
        "lesion_id": norm.text(raw, "lesion_id"),   # HAM10000 has no patient id: its lesions group the images
        "sex": norm.sex(raw, "sex"),
        "age": norm.age(raw, "age"),
        "site": norm.text(raw, "localization", missing=("", "unknown"), lower=True),
        # an unlisted dx code is kept as written, with no malignant flag
        "diagnosis": dx.map(DIAGNOSES).fillna(dx).astype("string"),
        "malignant": dx.isin(list(MALIGNANT)).astype("boolean").where(known, pd.NA),
        "source": "ham10000",
    })
