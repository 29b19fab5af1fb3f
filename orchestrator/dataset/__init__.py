"""The dataset stage: ISIC metadata in, a kohya training folder out (ingest, select, captions, images, report, the builder)."""
