"""A run folder as its readers (review, generate, evaluate) see it: run.json (through orchestrator.runs.record),
train.toml flattened as sd-scripts reads it, and the sample prompts as sd-scripts numbers them."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.prompts import parse_sample_prompts
from orchestrator.kohya.train_toml import read_train_toml
from orchestrator.runs.folder import still_training
from orchestrator.runs.record import RunRecord, read_record

SD_SCRIPTS_OUTPUT_NAME = "last"  # what sd-scripts names the LoRA when output_name is not set


@dataclass(frozen=True)
class Prompt:
    index: int
    text: str
    seed: int | None


@dataclass(frozen=True)
class RunFacts:
    run_dir: Path
    name: str
    record: RunRecord
    train: Mapping[str, Any]       # {} for a folder without train.toml
    output_name: str | None

    @property
    def status(self) -> str:
        """run.json's status; "killed" where it says running but the medsynth process that marked it is gone."""
        status = str(self.record.get("status", "unknown"))
        return "killed" if status == "running" and still_training(self.record) is False else status

    @property
    def steps_per_epoch(self) -> int | None:
        value = self.record.table("schedule").get("steps_per_epoch")
        return int(value) if value else None

    @property
    def lora_name(self) -> str:
        return self.output_name or SD_SCRIPTS_OUTPUT_NAME

    @property
    def config(self) -> Mapping[str, Any]:
        return self.record.table("config")

    @property
    def dataset(self) -> Path:
        return Path(self.record.table("dataset").get("path") or self.config.get("dataset") or "")

    @functools.cached_property
    def prompts(self) -> tuple[Prompt, ...]:
        """The prompts as sd-scripts numbers them (sample_prompts.txt), else as run.json recorded them."""
        path = self.run_dir / "sample_prompts.txt"
        if path.is_file():
            parsed = parse_sample_prompts(path.read_text(encoding="utf-8"), source=str(path))
            return tuple(Prompt(i, p["prompt"], p.get("seed")) for i, p in enumerate(parsed))
        recorded = self.record.get("sample_prompts") or []
        return tuple(Prompt(i, str(p.get("text", "")), p.get("seed")) for i, p in enumerate(recorded)
                     if isinstance(p, Mapping))


def read_run(run_dir: Path, *, need_train: bool = False, hint: str = "") -> RunFacts:
    """`need_train`: a folder without train.toml is refused (else its settings are {}); `hint`: see read_record."""
    record = read_record(run_dir, hint=hint)
    train_path = run_dir / "train.toml"
    if need_train and not train_path.is_file():
        raise MedsynthError(f"{run_dir}: not a medsynth run (no train.toml)")
    train = read_train_toml(train_path) if train_path.is_file() else {}
    output_name = train.get("output_name") or record.get("output_name") or None
    return RunFacts(run_dir, str(record.get("run_name") or run_dir.name), record, train, output_name)
