"""The ISIC Archive's metadata export (isic-cli `isic metadata download`).

Its columns are isic_id, attribution, copyright_license and then whichever metadata keys the exported images
have, so everything is looked up by name. Diagnosis and malignancy come from the current hierarchical columns
(diagnosis_1..5) where filled, else from the legacy ones (diagnosis, benign_malignant). The site comes from
anatom_site_general where filled (the vocabulary the other formats share), else from anatom_site_1. The
Fitzpatrick skin type, where the export has fitzpatrick_skin_type, becomes `fitzpatrick` (the build's skin
tone then comes from it rather than from the image).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.dataset.ingest import normalise as norm
from orchestrator.dataset.ingest.csvfile import RawCsv

MELANOMA_GROUP = "malignant melanocytic proliferations (melanoma)"
_MALIGNANT = {"malignant": True, "benign": False}   # indeterminate (and its variants) stay missing


def _diagnosis(raw: RawCsv) -> pd.Series:
    legacy = norm.text(raw, "diagnosis", lower=True)
    group = norm.text(raw, "diagnosis_2", lower=True)
    detail = norm.text(raw, "diagnosis_3", lower=True)
    # diagnosis_3 names the melanoma subtypes ("Melanoma Invasive", "Melanoma in situ", ...) and the flat class
    # for others ("Nevus"); the group alone still marks a melanoma whose subtype is not given
    melanoma = detail.str.startswith("melanoma").fillna(False) | (group == MELANOMA_GROUP).fillna(False)
    hierarchical = detail.mask(melanoma, "melanoma")
    return hierarchical.fillna(legacy)


def _malignant(raw: RawCsv) -> pd.Series:
    legacy = norm.text(raw, "benign_malignant", lower=True).map(_MALIGNANT)
    top = norm.text(raw, "diagnosis_1", lower=True).map(_MALIGNANT)
    return top.astype("boolean").fillna(legacy.astype("boolean"))


def read(raw: RawCsv) -> pd.DataFrame:
    patient = norm.isic_patient(raw, "isic_id")
    site = norm.text(raw, "anatom_site_general", lower=True).fillna(norm.text(raw, "anatom_site_1", lower=True))
    return pd.DataFrame({
        **patient,
        "site": site,
        "fitzpatrick": norm.fitzpatrick(raw, "fitzpatrick_skin_type"),
        "diagnosis": _diagnosis(raw),
        "malignant": _malignant(raw),
        "source": "isic_archive",
        "attribution": norm.text(raw, "attribution"),
        "license": norm.text(raw, "copyright_license"),
    })
