"""Recognise a metadata CSV's format from its header (column names, in any order)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.ingest.csvfile import where

FORMATS: tuple[str, ...] = ("isic2020", "isic2019", "ham10000", "isic_archive")

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")


@dataclass(frozen=True)
class Layout:
    """One recognisable file layout. A format can have several (ISIC 2019 ships metadata and ground truth apart)."""

    name: str                                  # e.g. "isic2019 ground truth"
    format: str                                # one of FORMATS
    required: tuple[tuple[str, ...], ...]      # each entry: a column, or alternative names for it

    def missing(self, header: list[str]) -> list[str]:
        present = set(header)
        return [" or ".join(names) for names in self.required if not present.intersection(names)]


def _cols(*names: str) -> tuple[tuple[str, ...], ...]:
    return tuple((n,) for n in names)


LAYOUTS: tuple[Layout, ...] = (
    Layout("isic2020 training", "isic2020",
           _cols("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target")),
    Layout("isic2019 metadata", "isic2019",
           _cols("image", "age_approx", "anatom_site_general") + (("sex", "gender"),)),
    Layout("isic2019 ground truth", "isic2019", _cols("image", *ISIC2019_CLASSES)),
    Layout("ham10000", "ham10000", _cols("lesion_id", "image_id", "dx", "age", "sex", "localization")),
    Layout("isic_archive", "isic_archive", _cols("isic_id", "attribution", "copyright_license")),
)


def detect_layout(header: list[str], path: Path, fmt: str | None = None) -> Layout:
    """The layout whose required columns the header has; `fmt` restricts the candidates (--format)."""
    if fmt is not None and fmt not in FORMATS:
        raise MedsynthError(f"unknown metadata format {fmt!r} (choose from {', '.join(FORMATS)})")
    candidates = [layout for layout in LAYOUTS if fmt in (None, layout.format)]
    for layout in candidates:
        if not layout.missing(header):
            return layout
    # report the candidate with the largest share of its columns present
    closest = max(candidates, key=lambda layout: 1 - len(layout.missing(header)) / len(layout.required))
    lacking = ", ".join(closest.missing(header))
    if fmt is not None:
        raise MedsynthError(f"{where(path, 1)}: format {fmt} was given but the header lacks column(s) {lacking}")
    tried = ", ".join(layout.name for layout in LAYOUTS)
    raise MedsynthError(f"{where(path, 1)}: header not recognised (tried {tried}); "
                        f"closest is {closest.name}, which lacks column(s) {lacking}")


def detect_format(header: list[str], path: Path) -> str:
    return detect_layout([h.strip() for h in header], path).format
