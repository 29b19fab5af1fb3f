"""What `medsynth review` shows, as data: the sample grid of a run (rows = prompts, columns = sampling points)
or of a sweep (rows = prompts, columns = runs at one epoch), the real training images beside each prompt, the
TensorBoard scalars and the key settings. Drawing and writing live in review_draw.py / review_write.py.

Everything is read afresh from the run folder each time, so a review can be redone while training runs:
a sample not written yet is a "pending" cell, one the run ended without is "missing".
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import toml

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.prompts import parse_sample_prompts
from orchestrator.dataset.age import age_band
from orchestrator.runs.folder import lora_files, still_training
from orchestrator.runs.outputs import Column, Sample, find_samples, run_scalars
from orchestrator.runs.tfevents import Point

# statuses of a run that will write no more samples (run.json's, or sweep.json's for a run not started);
# "killed": run.json still says running, but the medsynth process that marked it is gone (SIGKILL, a crash)
ENDED = ("finished", "failed", "interrupted", "skipped", "error", "killed")
LOSS_TAGS = ("loss/current", "loss/average", "loss/epoch_average")
LR_TAGS = ("lr/unet", "lr/textencoder")


# ----------------------------------------------------------------------------------------------- one run

@dataclass(frozen=True)
class Prompt:
    index: int
    text: str
    seed: int | None


@dataclass(frozen=True)
class RunFacts:
    """A run folder's own files: run.json, train.toml (flattened as sd-scripts reads it), the prompts."""

    run_dir: Path
    name: str
    record: Mapping[str, Any]
    train: Mapping[str, Any]
    output_name: str | None
    prompts: tuple[Prompt, ...]

    @property
    def status(self) -> str:
        status = str(self.record.get("status", "unknown"))
        return "killed" if status == "running" and still_training(self.record) is False else status

    @property
    def steps_per_epoch(self) -> int | None:
        value = _get(self.record, "schedule", "steps_per_epoch")
        return int(value) if value else None


def _get(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _flatten(tables: Mapping[str, Any]) -> dict[str, Any]:
    """sd-scripts' reading of --config_file: the tables only organise the file."""
    flat: dict[str, Any] = {}
    for key, value in tables.items():
        if isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def read_run(run_dir: Path) -> RunFacts:
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run folder (no run.json): give runs/<name>/ or a sweep "
                            f"folder (sweep.json, or run folders inside)")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsynthError(f"{record_path}: unreadable ({exc})") from exc
    if not isinstance(record, dict):
        raise MedsynthError(f"{record_path}: expected a JSON object")
    train_path = run_dir / "train.toml"
    train: dict[str, Any] = {}
    if train_path.is_file():
        try:
            train = _flatten(toml.loads(train_path.read_text(encoding="utf-8")))
        except (OSError, toml.TomlDecodeError) as exc:
            raise MedsynthError(f"{train_path}: unreadable TOML ({exc})") from exc
    output_name = train.get("output_name") or record.get("output_name") or None
    return RunFacts(run_dir, str(record.get("run_name") or run_dir.name), record, train, output_name,
                    _read_prompts(run_dir, record))


def _read_prompts(run_dir: Path, record: Mapping[str, Any]) -> tuple[Prompt, ...]:
    """The prompts as sd-scripts numbers them (sample_prompts.txt), else as run.json recorded them."""
    path = run_dir / "sample_prompts.txt"
    if path.is_file():
        parsed = parse_sample_prompts(path.read_text(encoding="utf-8"), source=str(path))
        return tuple(Prompt(i, p["prompt"], p.get("seed")) for i, p in enumerate(parsed))
    recorded = record.get("sample_prompts") or []
    return tuple(Prompt(i, str(p.get("text", "")), p.get("seed")) for i, p in enumerate(recorded)
                 if isinstance(p, Mapping))


def expected_columns(facts: RunFacts) -> list[Column]:
    """The sampling points the run's settings ask for (sd-scripts: sample_images in train_util)."""
    t, schedule = facts.train, facts.record.get("schedule") or {}
    columns = [Column("epoch", 0)] if t.get("sample_at_first") else []
    every_epochs, every_steps = t.get("sample_every_n_epochs"), t.get("sample_every_n_steps")
    if every_epochs:  # wins over sample_every_n_steps
        epochs = t.get("max_train_epochs") or schedule.get("epochs")
        if epochs:
            columns += [Column("epoch", e) for e in range(every_epochs, int(epochs) + 1, every_epochs)]
    elif every_steps:
        steps = schedule.get("total_steps") or t.get("max_train_steps")
        if steps:
            columns += [Column("step", s) for s in range(every_steps, int(steps) + 1, every_steps)]
    return columns


@dataclass(frozen=True)
class Reference:
    image_id: str
    path: Path
    caption: str


@dataclass(frozen=True)
class References:
    """Training images of the (sex, site, age band) a prompt was made from."""

    group: str | None
    images: tuple[Reference, ...]
    total: int


def _group_label(key: tuple[str, str, str]) -> str:
    return " / ".join(part or "?" for part in key)


def read_references(dataset_dir: Path, prompts: Sequence[Prompt], per_prompt: int) -> dict[int, References]:
    """Per prompt index: the training images sharing the prompt's (sex, site, age band). The group is that of
    the images whose caption is the prompt text (medsynth's prompts are the group's most frequent caption)."""
    manifest = dataset_dir / "manifest.csv"
    try:
        with manifest.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("status") == "ok" and r.get("output_path")]
    except OSError:
        return {}
    if rows and not {"caption", "sex", "site", "age"} <= set(rows[0]):
        raise MedsynthError(f"{manifest}: lacks caption/sex/site/age columns: rebuild the dataset")

    def key(row: Mapping[str, str]) -> tuple[str, str, str]:
        return (row["sex"] or "", row["site"] or "", age_band(row["age"]) or "")

    out = {}
    for prompt in prompts:
        keys = Counter(key(r) for r in rows if r["caption"] == prompt.text)
        if not keys:
            out[prompt.index] = References(None, (), 0)
            continue
        group = min(keys, key=lambda k: (-keys[k], k))
        members = sorted((r for r in rows if key(r) == group), key=lambda r: r["image_id"])
        images = tuple(Reference(r["image_id"], dataset_dir / r["output_path"], r["caption"])
                       for r in members[:per_prompt])
        out[prompt.index] = References(_group_label(group), images, len(members))
    return out


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
    facts = read_run(run_dir)
    output_name = facts.output_name
    samples = find_samples(run_dir / "sample", output_name)
    spe = facts.steps_per_epoch
    columns = tuple(sorted(set(expected_columns(facts)) | {c for c, _ in samples}, key=lambda c: c.position(spe)))
    notes = []
    dataset_path = _get(facts.record, "dataset", "path")
    refs: dict[int, References] = {}
    if dataset_path and Path(dataset_path).is_dir():
        refs = read_references(Path(dataset_path), facts.prompts, references) if references > 0 else {}
    elif references > 0:
        notes.append(f"training images not shown: the run's dataset {dataset_path or '(not recorded)'} is not here")
    logging_dir = facts.train.get("logging_dir")
    scalars = run_scalars(run_dir, Path(logging_dir) if logging_dir else None)
    if not samples:
        notes.append("this run wrote no samples" if facts.status in ENDED else "no samples yet")
    if not scalars and facts.status in ENDED:
        notes.append("no TensorBoard events in logs/: sd-scripts writes them only where tensorboard is installed")
    return RunReview(facts, columns, samples, refs, scalars, run_settings(facts, scalars), tuple(notes))


def _fmt(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def final_value(scalars: Mapping[str, list[Point]], tag: str) -> float | None:
    points = scalars.get(tag)
    return points[-1].value if points else None


def _batch_text(batch: Any, explanation: str | None) -> str:
    """run.json's explanation already starts with the size ("12 (H200 tier ...)"); else add it in brackets."""
    if explanation and str(explanation).startswith(str(batch)):
        return str(explanation)
    return _fmt(batch) + (f" ({explanation})" if explanation else "")


def run_settings(facts: RunFacts, scalars: Mapping[str, list[Point]]) -> tuple[tuple[str, str], ...]:
    """The run's key settings, labelled, from run.json (train.toml for what run.json lacks)."""
    r, t = facts.record, facts.train
    cfg, sched = r.get("config") or {}, r.get("schedule") or {}
    status = facts.status if r.get("status") == "running" else _fmt(r.get("status"))
    if r.get("exit_code") not in (None, 0):
        status += f" (exit code {r['exit_code']})"
    lr = sched.get("learning_rate", t.get("learning_rate"))
    batch = sched.get("batch_size", t.get("train_batch_size"))
    epochs = sched.get("epochs", t.get("max_train_epochs"))
    loras = [p.name for p in lora_files(facts.run_dir, facts.output_name)] if facts.output_name else []
    rows = [
        ("run", facts.name),
        ("status", status),
        ("preset", _fmt(r.get("preset"))),
        ("learning rate", _fmt(lr) + (f" ({sched['lr_note']})" if sched.get("lr_note") else "")),
        ("batch size", _batch_text(batch, _get(r, "batch", "explanation"))),
        ("epochs", _fmt(epochs) + (f" ({sched['total_steps']} steps)" if sched.get("total_steps") else "")),
        ("optimizer", " ".join([_fmt(t.get("optimizer_type", cfg.get("optimizer_type")))]
                               + [str(a) for a in t.get("optimizer_args", cfg.get("optimizer_args")) or []])),
        ("scheduler", _fmt(t.get("lr_scheduler", cfg.get("lr_scheduler")))
         + (f", {t['lr_warmup_steps']} warmup steps" if t.get("lr_warmup_steps") else "")),
        ("network", f"{_fmt(t.get('network_module', cfg.get('network_module')))} dim "
                    f"{_fmt(t.get('network_dim', cfg.get('network_dim')))} alpha "
                    f"{_fmt(t.get('network_alpha', cfg.get('network_alpha')))}"),
        ("resolution", _fmt(t.get("resolution"))),
        ("mixed precision", _fmt(t.get("mixed_precision", cfg.get("mixed_precision")))),
        ("seed", _fmt(t.get("seed", r.get("seed")))),
        ("dataset", f"{_fmt(_get(r, 'dataset', 'path'))} ({_fmt(_get(r, 'dataset', 'images'))} images x "
                    f"{_fmt(_get(r, 'dataset', 'repeats'))} repeats)"),
        ("sampler", f"{_fmt(t.get('sample_sampler', cfg.get('sample_sampler')))}, "
                    f"{_fmt(cfg.get('sample_steps'))} steps, CFG {_fmt(cfg.get('sample_cfg_scale'))}"),
        ("final loss (average)", _fmt(final_value(scalars, "loss/average"))),
        ("last epoch average loss", _fmt(final_value(scalars, "loss/epoch_average"))),
        ("LoRA files", ", ".join(loras) or "-"),
        ("created", _fmt(r.get("created_at"))),
    ]
    return tuple(rows)


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


def is_sweep_dir(path: Path) -> bool:
    return (path / "sweep.json").is_file() or (
        not (path / "run.json").is_file() and any(p.is_file() for p in path.glob("*/run.json")))


def _sweep_listing(root: Path) -> tuple[str, list[tuple[str, Path, dict[str, Any], str | None]]]:
    """(sweep name, [(run name, run folder, params, status)]) from sweep.json, else from the run folders."""
    index = root / "sweep.json"
    if not index.is_file():
        dirs = sorted(p.parent for p in root.glob("*/run.json"))
        return root.name, [(d.name, d, {}, None) for d in dirs]
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        listing = []
        for i, run in enumerate(data["runs"]):
            if not isinstance(run, Mapping) or "name" not in run:
                raise ValueError(f"runs[{i}] has no name")
            path = root / str(run.get("path") or run["name"])
            listing.append((str(run["name"]), path, dict(run.get("params") or {}), run.get("status")))
        name = str(data.get("name") or root.name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MedsynthError(f"{index}: unreadable sweep index ({exc})") from exc
    if not listing:
        raise MedsynthError(f"{index}: lists no runs")
    return name, listing


def differing_settings(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the config values that differ between the runs (when sweep.json gives no params)."""
    configs = [dict(r.get("config") or {}) for r in records]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if k not in ("runs_dir",)
                 and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [{k: c.get(k) for k in differing} for c in configs]


def review_sweep(root: Path, *, epochs: Sequence[int] = (), steps: Sequence[int] = (),
                 references: int = 4) -> SweepReview:
    name, listing = _sweep_listing(root)
    if not listing:
        raise MedsynthError(f"{root}: neither a run folder nor a sweep folder (no run.json, no sweep.json, "
                            f"no run folders inside)")
    reviews = [review_run(path, references=references) if (path / "run.json").is_file() else None
               for _, path, _, _ in listing]
    derived = differing_settings([r.facts.record for r in reviews if r is not None])
    derived_iter = iter(derived)
    entries = []
    for (run_name, path, params, status), review in zip(listing, reviews):
        own = next(derived_iter) if review is not None else {}
        entries.append(SweepEntry(run_name, path, params or own, _sweep_status(status, review), review))
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
