"""ISIC 2020 training metadata: the ISIC site's GroundTruth(_v2).csv and Kaggle's train.csv.

Chris Deotte's resized-JPEG tables share this header (plus tfrecord, width, height); his ISIC 2019 variant writes
the 2019 class codes (MEL, BCC, ...) as diagnosis and sets target only for MEL, so codes are named as ISIC 2019
names them and benign_malignant also marks BCC/AK/SCC malignant there (on ISIC 2020 both columns agree).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.dataset.ingest import normalise as norm
from orchestrator.dataset.ingest.csvfile import RawCsv
from orchestrator.dataset.ingest.isic2019 import DIAGNOSES as ISIC2019_CODES


def read(raw: RawCsv) -> pd.DataFrame:
    patient = norm.isic_patient(raw, "image_name")
    target = norm.flag(raw, "target")
    malignant = target | (norm.text(raw, "benign_malignant", lower=True) == "malignant").fillna(False)
    diagnosis = norm.text(raw, "diagnosis", missing=("", "unknown"))
    diagnosis = diagnosis.replace(ISIC2019_CODES).str.lower()
    # the 2020 challenge's target is melanoma (target == 1 <=> diagnosis == melanoma on every row),
    # which also names the class when a copy lacks the diagnosis column
    diagnosis = diagnosis.mask(diagnosis.isna() & target, "melanoma")
    return pd.DataFrame({
        **patient,
        "site": norm.text(raw, "anatom_site_general_challenge", lower=True),
        "diagnosis": diagnosis,
        "malignant": malignant,
        "source": "isic2020",
    })
