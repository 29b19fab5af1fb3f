"""The dataset stage: ISIC metadata in, a kohya training folder out (ingest, select, patient-level folds, captions, images,
report, the builder)."""
