"""What `medsynth review` shows, as data: the sample grid of a run (rows = prompts, columns = sampling points)
or of a sweep (rows = prompts, columns = runs at one epoch), the real training images beside each prompt, the
TensorBoard scalars and the key settings. Reading the run and sweep folders is review/read.py; drawing and
writing are review/draw.py and review/write.py.

Everything is read afresh from the run folder each time, so a review can be redone while training runs:
a sample not written yet is a "pending" cell, one the run ended without is "missing".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.review.read import (References, differing_settings, expected_columns, read_masked_images,
                                      read_references, run_settings, sweep_listing)
from orchestrator.runs.facts import RunFacts, read_run
from orchestrator.runs.outputs import Column, Sample, find_samples, run_scalars
from orchestrator.runs.validation import overfitting
from orchestrator.runs.record import is_run_dir
from orchestrator.runs.tfevents import Point

# statuses of a run that will write no more samples (run.json's, or sweep.json's for a run not started);
# "killed": run.json still says running, but the medsynth process that marked it is gone (SIGKILL, a crash)
ENDED = ("finished", "failed", "interrupted", "skipped", "error", "killed")
MASKS_SHOWN = 6   # training images shown with their loss mask on a masked_loss run's page
_NOT_A_RUN_HINT = "give runs/<name>/ or a sweep folder (sweep.json, or run folders inside)"


# ----------------------------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class Cell:
    state: str                    # "ok", "pending" (may still come), "missing" (the run ended without it)
    sample: Sample | None = None


@dataclass(frozen=True)
class Row:
    text: str
    detail: str                   # "prompt 0, seed 1000"
    references: References
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class Header:
    title: str
    subtitle: str = ""


@dataclass(frozen=True)
class Grid:
    headers: tuple[Header, ...]
    rows: tuple[Row, ...]

    def count(self, state: str) -> int:
        return sum(1 for row in self.rows for cell in row.cells if cell.state == state)


@dataclass(frozen=True)
class RunReview:
    facts: RunFacts
    columns: tuple[Column, ...]            # every sampling point seen or expected, in training order
    samples: Mapping[tuple[Column, int], Sample]
    references: Mapping[int, References]
    scalars: Mapping[str, list[Point]]
    settings: tuple[tuple[str, str], ...]
    notes: tuple[str, ...] = field(default=())
    masked: tuple[Path, ...] = ()          # training images whose loss mask the page shows (masked_loss runs)

    def cell(self, column: Column, prompt_index: int) -> Cell:
        sample = self.samples.get((column, prompt_index))
        if sample is not None:
            return Cell("ok", sample)
        return Cell("missing" if self.facts.status in ENDED else "pending")

    def sampled_columns(self) -> list[Column]:
        return [c for c in self.columns if any(col == c for col, _ in self.samples)]

    def rows(self) -> list[tuple[int, str, str | None]]:
        """(prompt index, text, seed label) of every prompt, plus indices only seen in sample names."""
        rows = [(p.index, p.text, None if p.seed is None else str(p.seed)) for p in self.facts.prompts]
        known = {p.index for p in self.facts.prompts}
        extra = sorted({i for _, i in self.samples} - known)
        return rows + [(i, f"prompt {i} (not in sample_prompts.txt)", None) for i in extra]

    def grid(self, columns: Sequence[Column]) -> Grid:
        rows = []
        for index, text, seed in self.rows():
            detail = f"prompt {index}" + (f", seed {seed}" if seed is not None else "")
            refs = self.references.get(index, References(None, (), 0))
            rows.append(Row(text, detail, refs, tuple(self.cell(c, index) for c in columns)))
        return Grid(tuple(Header(c.label) for c in columns), tuple(rows))


def select_columns(available: Sequence[Column], epochs: Sequence[int], steps: Sequence[int],
                   *, where: str) -> list[Column]:
    """The columns asked for with --epoch/--step (all when none is given); an unknown one is an error."""
    wanted = [Column("epoch", e) for e in epochs] + [Column("step", s) for s in steps]
    if not wanted:
        return list(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        have = ", ".join(c.label for c in available) or "none yet"
        raise MedsynthError(f"{where}: no {unknown[0].label} (sampling points: {have})")
    return [c for c in available if c in wanted]


def review_run(run_dir: Path, *, references: int = 4) -> RunReview:
    facts = read_run(run_dir, hint=_NOT_A_RUN_HINT)
    output_name = facts.output_name
    samples = find_samples(run_dir / "sample", output_name)
    spe = facts.steps_per_epoch
    columns = tuple(sorted(set(expected_columns(facts)) | {c for c, _ in samples}, key=lambda c: c.position(spe)))
    notes = []
    dataset_path = facts.record.table("dataset").get("path")
    refs: dict[int, References] = {}
    masked: tuple[Path, ...] = ()
    if dataset_path and Path(dataset_path).is_dir():
        refs = read_references(Path(dataset_path), facts.prompts, references) if references > 0 else {}
        masked = read_masked_images(Path(dataset_path), MASKS_SHOWN) if facts.train.get("masked_loss") else ()
    elif references > 0:
        notes.append(f"training images not shown: the run's dataset {dataset_path or '(not recorded)'} is not here")
    logging_dir = facts.train.get("logging_dir")
    scalars = run_scalars(run_dir, Path(logging_dir) if logging_dir else None)
    if not samples:
        notes.append("this run wrote no samples" if facts.status in ENDED else "no samples yet")
    if not scalars and facts.status in ENDED:
        notes.append("no TensorBoard events in logs/: sd-scripts writes them only where tensorboard is installed")
    warning = overfitting(scalars)
    if warning:
        notes.append(warning)
    return RunReview(facts, columns, samples, refs, scalars, run_settings(facts, scalars), tuple(notes), masked)


# ----------------------------------------------------------------------------------------------- a sweep

@dataclass(frozen=True)
class SweepEntry:
    name: str
    path: Path
    params: Mapping[str, Any]
    status: str
    review: RunReview | None      # None while the run folder does not exist yet


@dataclass(frozen=True)
class SweepReview:
    name: str
    root: Path
    entries: tuple[SweepEntry, ...]
    compared: tuple[Column, ...]
    grid: Grid
    notes: tuple[str, ...]


def review_sweep(root: Path, *, epochs: Sequence[int] = (), steps: Sequence[int] = (),
                 references: int = 4) -> SweepReview:
    name, listing = sweep_listing(root)
    if not listing:
        raise MedsynthError(f"{root}: neither a run folder nor a sweep folder (no run.json, no sweep.json, "
                            f"no run folders inside)")
    reviews = [review_run(run.path, references=references) if is_run_dir(run.path) else None for run in listing]
    derived = differing_settings([r.facts.record for r in reviews if r is not None])
    derived_iter = iter(derived)
    entries = []
    for run, review in zip(listing, reviews):
        own = next(derived_iter) if review is not None else {}
        entries.append(SweepEntry(run.name, run.path, run.params or own, _sweep_status(run.status, review), review))
    present = [e.review for e in entries if e.review is not None]
    compared = _compared_columns(present, epochs, steps, where=str(root))
    grid, notes = _sweep_grid(entries, compared)
    return SweepReview(name, root, tuple(entries), tuple(compared), grid, tuple(notes))


def _sweep_status(listed: str | None, review: RunReview | None) -> str:
    """run.json's status, unless only sweep.json knows the run has ended (e.g. skipped before it started)."""
    own = review.facts.status if review is not None else None
    if own in ENDED or not (listed in ENDED):
        return own or listed or "pending"
    return str(listed)


def _compared_columns(reviews: Sequence[RunReview], epochs: Sequence[int], steps: Sequence[int],
                      *, where: str) -> list[Column]:
    """--epoch/--step, else the latest column every run has sampled, else the latest any run has."""
    spe = next((r.facts.steps_per_epoch for r in reviews if r.facts.steps_per_epoch), None)
    known = sorted({c for r in reviews for c in r.columns}, key=lambda c: c.position(spe))
    if epochs or steps:
        return select_columns(known, epochs, steps, where=where)
    sampled = [set(r.sampled_columns()) for r in reviews]
    common = set.intersection(*sampled) if sampled else set()
    pool = common or (set.union(*sampled) if sampled else set())
    return [max(pool, key=lambda c: c.position(spe))] if pool else []


def _sweep_grid(entries: Sequence[SweepEntry], compared: Sequence[Column]) -> tuple[Grid, list[str]]:
    """Rows = prompt texts (in the first run's order), columns = run x compared column."""
    texts = list(dict.fromkeys(p.text for e in entries if e.review is not None for p in e.review.facts.prompts))
    headers = tuple(Header(e.name, c.label) for e in entries for c in compared)
    rows = []
    for text in texts:
        cells = []
        refs = References(None, (), 0)
        for entry in entries:
            prompt = next((p for p in entry.review.facts.prompts if p.text == text), None) if entry.review else None
            if prompt is not None and not refs.images:
                refs = entry.review.references.get(prompt.index, refs)  # type: ignore[union-attr]
            for column in compared:
                if prompt is None:
                    cells.append(Cell("missing" if entry.status in ENDED else "pending"))
                else:
                    cell = entry.review.cell(column, prompt.index)  # type: ignore[union-attr]
                    cells.append(Cell("missing") if cell.state == "pending" and entry.status in ENDED else cell)
        seeds = sorted({p.seed for e in entries if e.review for p in e.review.facts.prompts
                        if p.text == text and p.seed is not None})
        detail = "seed " + ", ".join(map(str, seeds)) if seeds else ""
        rows.append(Row(text, detail, refs, tuple(cells)))
    notes = [] if compared else ["no run has written samples yet"]
    return Grid(headers, tuple(rows)), notes
