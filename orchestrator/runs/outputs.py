"""What sd-scripts has written into a run directory so far: sample images and TensorBoard event files.

Sample names (train_util.sample_image_inference at the pin):
  <output_name>_e<epoch:06d>_<prompt index:02d>_<YYYYmmddHHMMSS>[_<seed>].png   epoch-end and sample_at_first (e000000)
  <output_name>_<step:06d>_<prompt index:02d>_<YYYYmmddHHMMSS>[_<seed>].png     every sample_every_n_steps
in <output_dir>/sample/. The index counts the prompt file's non-blank, non-comment lines. A resumed run samples
again (sample_at_first repeats e000000, a re-trained epoch repeats its e<epoch>): the newest timestamp wins.
PIL writes the PNG in place, so a file still being written is recognised (no IEND chunk) and passed over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.runs.tfevents import Point, read_scalars

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC


@dataclass(frozen=True, order=True)
class Column:
    """A sampling point: kind 'epoch' (e<epoch>) or 'step' (<step>)."""

    kind: str
    number: int

    @property
    def label(self) -> str:
        if self.kind == "epoch" and self.number == 0:
            return "epoch 0 (before training)"
        return f"{self.kind} {self.number}"

    def position(self, steps_per_epoch: int | None) -> tuple[int, int]:
        """Ordering key: epoch ends and step samples on one step axis (epoch 0 is step 0)."""
        if self.kind == "step":
            return (self.number, 1)
        return (self.number * (steps_per_epoch or 0), 0) if steps_per_epoch else (self.number, 0)


@dataclass(frozen=True)
class Sample:
    path: Path
    column: Column
    prompt_index: int
    timestamp: str
    seed: int | None


def sample_pattern(output_name: str | None) -> re.Pattern[str]:
    prefix = f"{re.escape(output_name)}_" if output_name else ""
    return re.compile(rf"^{prefix}(?:e(?P<epoch>\d{{6,}})|(?P<step>\d{{6,}}))_(?P<idx>\d{{2,}})_"
                      rf"(?P<ts>\d{{14}})(?:_(?P<seed>-?\d+))?\.png$")


def parse_sample_name(name: str, output_name: str | None) -> Sample | None:
    """The sample a file name stands for, or None when it is not one of this output name's samples."""
    match = sample_pattern(output_name).match(name)
    if match is None:
        return None
    column = Column("epoch", int(match["epoch"])) if match["epoch"] else Column("step", int(match["step"]))
    seed = int(match["seed"]) if match["seed"] else None
    return Sample(Path(name), column, int(match["idx"]), match["ts"], seed)


def png_complete(path: Path) -> bool:
    """True once the PNG is completely written (signature at the start, IEND chunk at the end)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
            if head != _PNG_SIGNATURE:
                return False
            fh.seek(-len(_PNG_END), 2)
            return fh.read() == _PNG_END
    except OSError:
        return False


def find_samples(sample_dir: Path, output_name: str | None) -> dict[tuple[Column, int], Sample]:
    """The newest completely written sample per (column, prompt index)."""
    if not sample_dir.is_dir():
        return {}
    candidates: dict[tuple[Column, int], list[Sample]] = {}
    for path in sample_dir.iterdir():
        parsed = parse_sample_name(path.name, output_name)
        if parsed is not None and path.is_file():
            sample = Sample(path, parsed.column, parsed.prompt_index, parsed.timestamp, parsed.seed)
            candidates.setdefault((sample.column, sample.prompt_index), []).append(sample)
    found = {}
    for key, samples in candidates.items():
        for sample in sorted(samples, key=lambda s: (s.timestamp, s.path.name), reverse=True):
            if png_complete(sample.path):
                found[key] = sample
                break
    return found


def event_files(run_dir: Path, logging_dir: Path | None = None) -> list[Path]:
    """TensorBoard event files under <run>/logs (sd-scripts: <logging_dir>/<timestamp>/network_train/), oldest
    first; `logging_dir` is used when the run logged elsewhere."""
    roots = [run_dir / "logs"] + ([logging_dir] if logging_dir is not None else [])
    for root in roots:
        if root.is_dir():
            files = [p for p in root.rglob("events.out.tfevents.*") if p.is_file()]
            if files:
                return sorted(files, key=lambda p: (p.stat().st_mtime_ns, str(p)))
    return []


def run_scalars(run_dir: Path, logging_dir: Path | None = None) -> dict[str, list[Point]]:
    return read_scalars(event_files(run_dir, logging_dir))
