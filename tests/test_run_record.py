"""run.json and sweep.json through their owners: the schema version written and checked, and one-line errors that
name the file and the key; sd-scripts' flattening of train.toml."""

from __future__ import annotations

import json

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.train_toml import flatten, read_train_toml, settings
from orchestrator.runs.record import SCHEMA_VERSION, read_record, update_record, write_record
from orchestrator.runs.sweep_record import read_sweep_record, write_sweep_record


def test_the_record_is_written_with_its_schema_version_and_updated_in_place(tmp_path):
    write_record(tmp_path, {"status": "created", "output_name": "x"})
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == SCHEMA_VERSION
    record = update_record(tmp_path, status="finished")
    assert record.status == "finished" and read_record(tmp_path).status == "finished"
    assert read_record(tmp_path).output_name == "x"


def test_a_record_without_a_version_is_read_as_the_first(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"status": "created"}))
    assert read_record(tmp_path).status == "created"


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 2}', "run record schema version 2; this medsynth reads version 1: written by a newer "
                              "medsynth: upgrade"),
    ('{"schema_version": "one"}', "run record schema version 'one'; this medsynth reads version 1: restore it"),
    ("{not json", "run.json: not valid JSON"),
    ("[1, 2]", "run.json: not a run record (a JSON object)"),
])
def test_an_unreadable_record_is_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(MedsynthError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_record(tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path / "run.json") in str(info.value)


def test_a_missing_record_keeps_its_wording(tmp_path):
    with pytest.raises(MedsynthError, match=r"not a medsynth run folder \(no run.json\): give a run"):
        read_record(tmp_path, hint="give a run")


def test_a_field_the_caller_needs_is_named_when_missing_or_of_another_type(tmp_path):
    write_record(tmp_path, {"launch": {"machine_rank": "1"}, "command": ["py", 3]})
    record = read_record(tmp_path)
    with pytest.raises(MedsynthError, match=r"'launch.machine_rank' is '1', expected an integer"):
        record.machine_rank
    with pytest.raises(MedsynthError, match=r"'command' is \['py', 3\], expected a list of strings"):
        record.command
    with pytest.raises(MedsynthError, match=r"no 'output_name'"):
        record.output_name
    assert record.field("config.seed", int, 7) == 7  # absent: the caller's default
    write_record(tmp_path, {"gpu": {"cpu": 1}, "launch": "rank 0"})
    with pytest.raises(MedsynthError, match=r"'gpu.cpu' is 1, expected a boolean"):
        read_record(tmp_path).cpu
    with pytest.raises(MedsynthError, match=r"'launch' is 'rank 0', expected a table"):
        read_record(tmp_path).machine_rank


def test_the_sweep_index_is_versioned_and_listed(tmp_path):
    write_sweep_record(tmp_path, {"name": "s", "runs": [{"name": "a", "path": "a", "params": {"lr": 1},
                                                         "status": "created"}]})
    assert json.loads((tmp_path / "sweep.json").read_text())["schema_version"] == SCHEMA_VERSION
    record = read_sweep_record(tmp_path)
    assert record.name == "s" and [(r.name, r.path, r.params, r.status) for r in record.runs] == [
        ("a", tmp_path / "a", {"lr": 1}, "created")]
    (tmp_path / "sweep.json").write_text(json.dumps({"schema_version": 3, "runs": []}))
    with pytest.raises(MedsynthError, match="sweep.json: sweep index schema version 3.*upgrade medsynth"):
        read_sweep_record(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"schema_version": "x", "runs": []}))
    with pytest.raises(MedsynthError, match="sweep.json: sweep index schema version 'x'; this medsynth reads version 1: "
                                            "restore it, or run the sweep again$"):
        read_sweep_record(tmp_path)


def test_train_toml_is_flattened_one_level_as_sd_scripts_reads_it(tmp_path):
    assert flatten({"model": {"a": 1}, "network": {"b": [2]}, "top": "x"}) == {"a": 1, "b": [2], "top": "x"}
    assert list(settings({"model": {"a": 1}, "top": "x"})) == [("model", "a", 1), (None, "top", "x")]
    assert flatten({"model": {"a": 1}, "training": {"a": 2}}) == {"a": 2}  # sd-scripts keeps the last one
    (tmp_path / "train.toml").write_text("[model]\na = 1\n[training]\nb = 'x'\n")
    assert read_train_toml(tmp_path / "train.toml") == {"a": 1, "b": "x"}
    (tmp_path / "train.toml").write_text("[model\n")
    with pytest.raises(MedsynthError, match="train.toml: unreadable TOML"):
        read_train_toml(tmp_path / "train.toml")
