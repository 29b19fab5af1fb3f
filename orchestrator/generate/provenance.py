"""Where a synthetic folder's images came from, and whether the LoRA that drew them saw the test fold.

trace_synthetic follows the chain synthetic/metadata.csv -> generation.json (the run folder; older files lack
it, then the folder the synthetic/ folder sits in, as `medsynth generate` writes it by default, when that is the
run metadata.csv names) -> the run's run.json (its dataset) -> that dataset's dataset.json and manifest.csv,
which lists every image the LoRA was trained on (skipped rows too). A step that cannot be followed ends the
trace with the reason instead of an error: the benchmark reports it as "untraced". check_synthetic_leaks runs
orchestrator.dataset.split.find_leaks on the traced manifest and refuses a leak, naming it and the chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.record import RECORD_NAME, read_record
from orchestrator.dataset.split import Split, find_leaks
from orchestrator.generate.outputs import GENERATION_NAME, read_generation_run, read_synthetic_metadata
from orchestrator.runs.facts import read_run
from orchestrator.runs.record import RUN_JSON, is_run_dir


@dataclass(frozen=True)
class Provenance:
    synthetic: Path
    checked: tuple[Path, ...]        # the files followed, in order
    run_dir: Path | None = None
    dataset: Path | None = None      # set only when the whole chain was followed
    untraced: str | None = None      # "<file>: <why>" of the step that could not be followed

    @property
    def chain(self) -> str:
        """The files followed as "synthetic/metadata.csv -> r1/run.json -> ...": each with its folder."""
        return " -> ".join(f"{p.parent.name}/{p.name}" for p in self.checked)


def trace_synthetic(synthetic_dir: Path) -> Provenance:
    """The chain from `synthetic_dir` to the manifest of the dataset its LoRA was trained on."""
    synthetic = Path(synthetic_dir)
    checked: list[Path] = []

    def stop(why: str, run_dir: Path | None = None) -> Provenance:
        return Provenance(synthetic, tuple(checked), run_dir, None, why)

    metadata = synthetic / "metadata.csv"
    if not metadata.is_file():
        return stop(f"{metadata}: missing: not a folder 'medsynth generate' wrote")
    try:
        runs = sorted({row["medsynth_run"] for row in read_synthetic_metadata(metadata)})
    except MedsynthError as exc:
        return stop(str(exc))
    checked.append(metadata)
    if runs == [""]:
        return stop(f"{metadata}: its medsynth_run column is empty: no run drew these images")
    if len(runs) != 1:
        return stop(f"{metadata}: names {len(runs)} runs ({', '.join(runs)[:80]}), not one: whose LoRA drew "
                    f"which image is not known")
    name = runs[0]
    try:
        recorded = read_generation_run(synthetic)
    except MedsynthError as exc:
        return stop(str(exc))
    if recorded is not None:
        checked.append(synthetic / GENERATION_NAME)
    # generate's default place, <run>/synthetic, stands in for an older file's missing path or a moved run's
    # stale one (the run name is checked below)
    fallback = synthetic.parent if is_run_dir(synthetic.parent) else None
    run_dir = recorded if recorded is not None and (is_run_dir(recorded) or fallback is None) else fallback
    if run_dir is None:
        return stop(f"{synthetic / GENERATION_NAME}: records no run folder (written by an older medsynth) and "
                    f"{synthetic.parent} is no run folder: generate into the run folder again")
    try:
        run = read_run(run_dir)
    except MedsynthError as exc:
        return stop(str(exc), run_dir)
    checked.append(run_dir / RUN_JSON)
    if run.name != name:
        return stop(f"{run_dir / RUN_JSON}: is run {run.name}, but {metadata} names run {name}", run_dir)
    dataset = run.dataset
    if not str(dataset) or str(dataset) == ".":
        return stop(f"{run_dir / RUN_JSON}: records no dataset folder", run_dir)
    try:
        read_record(dataset)
    except MedsynthError as exc:
        return stop(str(exc), run_dir)
    checked.append(dataset / RECORD_NAME)
    manifest = dataset / "manifest.csv"
    if not manifest.is_file():
        return stop(f"{manifest}: missing: the LoRA's training set is not known", run_dir)
    # the manifest must still be the one the run trained on (a rebuilt dataset may list other images)
    trained_on = run.record.table("dataset").get("manifest_sha256")
    if trained_on and hashlib.sha256(manifest.read_bytes()).hexdigest() != trained_on:
        return stop(f"{manifest}: changed since run {name} was trained on it (sha256 differs from "
                    f"{run_dir / RUN_JSON}): the LoRA's training set is not known", run_dir)
    checked.append(manifest)
    return Provenance(synthetic, tuple(checked), run_dir, dataset, None)


@dataclass(frozen=True)
class LeakCheck:
    status: str                      # "clean" or "untraced"
    checked: tuple[Path, ...]
    message: str


def check_synthetic_leaks(synthetic_dir: Path, split: Split, test_fold: int, *,
                          split_file: Path | None = None) -> LeakCheck:
    """Whether an image, lesion or patient of `test_fold` reached the training set of the LoRA that drew the
    images of `synthetic_dir`: a MedsynthError naming it, the test fold and the chain when one did; else the
    trace's status ("untraced" with its reason: not an error by itself). `split_file` only words the fix."""
    trace = trace_synthetic(synthetic_dir)
    if trace.dataset is None:
        return LeakCheck("untraced", trace.checked, f"not checked for leaks: {trace.untraced}")
    leak = find_leaks(trace.dataset, split, test_fold).first(test_fold, "the LoRA's training set")
    if leak is not None:
        raise MedsynthError(f"{trace.chain}: {leak}: rebuild the dataset with --split {split_file or 'SPLIT'} "
                            f"--test-fold {test_fold} and retrain")
    return LeakCheck("clean", trace.checked, f"no image, lesion or patient of test fold {test_fold} is in the "
                                             f"LoRA's training set")
