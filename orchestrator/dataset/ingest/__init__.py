"""Metadata readers: ISIC 2020, ISIC 2019 (metadata + ground truth), HAM10000 and ISIC Archive exports,
each auto-detected from its header and normalised to `orchestrator.dataset.lesions.LESION_COLUMNS`."""

from orchestrator.dataset.ingest.detect import FORMATS, detect_format
from orchestrator.dataset.ingest.read import read_metadata

__all__ = ["FORMATS", "detect_format", "read_metadata"]
