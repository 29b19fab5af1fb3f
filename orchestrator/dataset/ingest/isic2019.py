"""ISIC 2019 training data: a metadata file and a one-hot ground-truth file, read apart and joined on the image id."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.dataset.ingest import normalise as norm
from orchestrator.dataset.ingest.csvfile import RawCsv
from orchestrator.dataset.ingest.detect import ISIC2019_CLASSES

# the challenge's class codes, named as the other formats name them
DIAGNOSES = {"MEL": "melanoma", "NV": "nevus", "BCC": "basal cell carcinoma", "AK": "actinic keratosis",
             "BKL": "benign keratosis", "DF": "dermatofibroma", "VASC": "vascular lesion",
             "SCC": "squamous cell carcinoma"}
MALIGNANT = {"MEL", "BCC", "AK", "SCC"}


def read_metadata(raw: RawCsv) -> pd.DataFrame:
    names, ids = norm.image_names(raw, "image")
    # public copies name the sex column `sex` or `gender`, with the same values
    sex_column = "sex" if "sex" in raw.cells else "gender"
    return pd.DataFrame({
        "image_id": ids,
        "image_name": names,
        "lesion_id": norm.text(raw, "lesion_id"),
        "sex": norm.sex(raw, sex_column),
        "age": norm.age(raw, "age_approx"),
        "site": norm.text(raw, "anatom_site_general", lower=True),
        "source": "isic2019",
    })


def read_ground_truth(raw: RawCsv) -> pd.DataFrame:
    names, ids = norm.image_names(raw, "image")
    codes = [c for c in (*ISIC2019_CLASSES, "UNK") if c in raw.cells]
    onehot = np.column_stack([norm.flag(raw, c).to_numpy() for c in codes])
    several = onehot.sum(axis=1) > 1
    if several.any():
        row = int(np.flatnonzero(several)[0])
        raise raw.fail(row, f"image {names.iat[row]} is marked as more than one class "
                            f"({', '.join(c for c, on in zip(codes, onehot[row]) if on)})")
    code = pd.Series(np.where(onehot.any(axis=1), np.asarray(codes)[onehot.argmax(axis=1)], None), dtype=object)
    # UNK (never set in the training file) and an all-zero row leave the diagnosis missing
    diagnosis = code.map(DIAGNOSES).astype("string")
    malignant = code.map(lambda c: c in MALIGNANT if c in DIAGNOSES else pd.NA).astype("boolean")
    return pd.DataFrame({
        "image_id": ids,
        "image_name": names,
        "diagnosis": diagnosis,
        "malignant": malignant,
        "source": "isic2019",
    })
