"""Evaluation of a synthetic set against real images: lesion features, FID/KID, the reader study."""
