"""Read one metadata CSV into strings, keeping each row's line number for error messages.

Every cell stays text (no "NA" -> NaN guessing); type conversion happens in `normalise`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.common.errors import MedsynthError


def where(path: Path, line: int | None = None) -> str:
    """The location prefix of every error message: 'file' or 'file, line N'."""
    return f"{path}" if line is None else f"{path}, line {line}"


@dataclass(frozen=True)
class RawCsv:
    path: Path
    header: list[str]
    cells: pd.DataFrame      # one str column (as written) per named header column
    lines: np.ndarray        # 1-based line number of each row (the header is line 1)

    def fail(self, row: int | None, message: str) -> MedsynthError:
        """An error naming this file and, for a row index, its line."""
        return MedsynthError(f"{where(self.path, None if row is None else int(self.lines[row]))}: {message}")


def _records(path: Path) -> tuple[list[str] | None, list[list[str]], list[int]]:
    """Header, data rows and each row's line number; blank lines are dropped."""
    # newline="" lets csv handle CRLF, LF and a missing final newline alike; utf-8-sig drops a BOM if present
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            records = list(reader)
        except csv.Error as e:
            raise MedsynthError(f"{where(path, reader.line_num)}: unreadable CSV ({e})") from None
        if reader.line_num == len(records):
            lines = list(range(1, len(records) + 1))   # one record per line: the common, fast case
        else:
            # a quoted field spans lines: re-read, asking the reader where each record ends
            f.seek(0)
            reader = csv.reader(f)
            lines = [reader.line_num for _ in reader]
    if not all(records):   # blank lines (often one at the end) are not rows
        lines = [n for n, r in zip(lines, records) if r]
        records = [r for r in records if r]
    if not records:
        return None, [], []
    return records[0], records[1:], lines[1:]


def _not_utf8(path: Path) -> MedsynthError:
    """The error naming the line of the first byte that is not UTF-8 (the text reader's own offset counts from
    the start of the chunk it was decoding, not of the file)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")   # a BOM is valid UTF-8, so offsets stay those of the file
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return MedsynthError(f"{where(path, line)}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})")
    return MedsynthError(f"{path}: not UTF-8 text")


def read_csv_file(path: Path) -> RawCsv:
    path = Path(path)
    try:
        header, rows, lines = _records(path)
    except FileNotFoundError:
        raise MedsynthError(f"{path}: metadata file not found") from None
    except IsADirectoryError:
        raise MedsynthError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    if header is None or not any(h.strip() for h in header):
        raise MedsynthError(f"{path}: empty file (no header line)")
    header = [h.strip() for h in header]
    repeated = sorted({h for h in header if h and header.count(h) > 1})
    if repeated:
        raise MedsynthError(f"{where(path, 1)}: column {', '.join(repeated)} appears more than once in the header")
    if not rows:
        raise MedsynthError(f"{path}: no data rows after the header")
    wrong = np.flatnonzero(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) != len(header))
    if wrong.size:
        i = int(wrong[0])
        raise MedsynthError(f"{where(path, lines[i])}: expected {len(header)} columns as in the header, "
                            f"found {len(rows[i])}")
    named = [i for i, name in enumerate(header) if name]   # an unnamed column (a saved index) is ignored
    grid = np.array(rows, dtype=object).reshape(len(rows), len(header))[:, named]   # 2-D even for one column
    cells = pd.DataFrame(grid, columns=[header[i] for i in named], dtype=object)
    return RawCsv(path, header, cells, np.asarray(lines, dtype=np.int64))
