"""read_metadata: every given CSV, each read by its format's reader, merged into one lesion table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest import ham10000, isic2019, isic2020, isic_archive
from orchestrator.dataset.ingest.csvfile import RawCsv, read_csv_file
from orchestrator.dataset.ingest.detect import Layout, detect_layout
from orchestrator.dataset.ingest.merge import drop_repeated_rows, merge_sources
from orchestrator.dataset.lesions import conform

READERS: dict[str, Callable[[RawCsv], pd.DataFrame]] = {
    "isic2020 training": isic2020.read,
    "isic2019 metadata": isic2019.read_metadata,
    "isic2019 ground truth": isic2019.read_ground_truth,
    "ham10000": ham10000.read,
    "isic_archive": isic_archive.read,
}


def read_table(path: Path, fmt: str | None = None) -> tuple[Layout, pd.DataFrame]:
    """One CSV as a lesion table (one row per image) and the layout it was read as."""
    raw = read_csv_file(path)
    layout = detect_layout(raw.header, raw.path, fmt)
    table = READERS[layout.name](raw)
    table["source_file"] = str(raw.path)
    table["source_line"] = raw.lines
    return layout, drop_repeated_rows(conform(table))


def read_metadata(paths: Sequence[Path], fmt: str | None = None) -> pd.DataFrame:
    """All CSVs as one lesion table; the same image id from several files is kept once (first file wins).

    ISIC 2019 ground-truth files are merged right after the 2019 metadata files, whatever the order given,
    so a 2019 image's row points at its metadata line.
    """
    if not paths:
        raise MedsynthError("no metadata CSV given")
    tables = [read_table(Path(p), fmt) for p in paths]
    metadata_at = [i for i, (layout, _) in enumerate(tables) if layout.name == "isic2019 metadata"]

    def position(index: int) -> tuple[int, int, int]:
        if metadata_at and tables[index][0].name == "isic2019 ground truth":
            return (metadata_at[-1], 1, index)
        return (index, 0, 0)

    ordered = [tables[i][1] for i in sorted(range(len(tables)), key=position)]
    return conform(merge_sources(ordered))
