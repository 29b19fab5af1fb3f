"""dataset.json: written and read only by orchestrator.dataset.record; a bad file is one line naming it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.record import SCHEMA_VERSION, DatasetRecord, read_record, write_record

RECORD = DatasetRecord(class_name="melanoma", repeats=2, resolution=None, image_dir="train/2_melanoma", images=3,
                       skipped=1, trigger="me1anoma", caption_extension=".caption", manifest_sha256="ab" * 32,
                       caption_template="/t/caption.j2", site_map={"torso": "back"})


def _written(tmp_path: Path, **edit) -> Path:
    write_record(tmp_path, RECORD)
    data = json.loads((tmp_path / "dataset.json").read_text())
    for key, value in edit.items():
        if value is dataclasses.MISSING:
            del data[key]
        else:
            data[key] = value
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return tmp_path


def test_a_record_reads_back_as_written_with_its_schema_version(tmp_path):
    write_record(tmp_path, RECORD)
    assert json.loads((tmp_path / "dataset.json").read_text())["schema_version"] == SCHEMA_VERSION == 1
    assert read_record(tmp_path) == RECORD
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary sibling


def test_a_file_of_an_earlier_medsynth_without_version_template_or_site_map_is_version_1(tmp_path):
    folder = _written(tmp_path, schema_version=dataclasses.MISSING, caption_template=dataclasses.MISSING,
                      site_map=dataclasses.MISSING)
    assert read_record(folder) == dataclasses.replace(RECORD, caption_template=None, site_map={})


@pytest.mark.parametrize("edit, message", [
    ({"images": dataclasses.MISSING}, "key 'images' is missing (hand-edited wrongly?): rebuild the dataset"),
    ({"repeats": "2"}, "key 'repeats' must be an integer, got '2' (hand-edited wrongly?)"),
    ({"images": True}, "key 'images' must be an integer, got True"),
    ({"resolution": 10.5}, "key 'resolution' must be an integer or null, got 10.5"),
    ({"site_map": {"torso": 1}}, "key 'site_map' must map sites to caption texts"),
    ({"schema_version": 2}, "dataset record schema version 2; this medsynth reads version 1: written by a newer medsynth"),
    ({"schema_version": "1"}, "dataset record schema version '1'; this medsynth reads version 1"),
])
def test_a_hand_edited_or_foreign_record_is_one_line_naming_the_file_and_key(tmp_path, edit, message):
    folder = _written(tmp_path, **edit)
    with pytest.raises(MedsynthError) as caught:
        read_record(folder)
    assert str(caught.value).startswith(f"{folder / 'dataset.json'}: ") and message in str(caught.value)


def test_a_file_that_is_not_json_or_not_there_is_one_line(tmp_path):
    with pytest.raises(MedsynthError, match=re.escape(f"{tmp_path}: not a medsynth dataset (no dataset.json): "
                                                      f"run 'medsynth dataset build' first")):
        read_record(tmp_path)
    (tmp_path / "dataset.json").write_text('{"class_name": "melanoma",\n')
    with pytest.raises(MedsynthError, match=r"dataset\.json: not valid JSON \(.*line 2.*\): rebuild the dataset$"):
        read_record(tmp_path)
    (tmp_path / "dataset.json").write_text("[]")
    with pytest.raises(MedsynthError, match=r"not a dataset record \(a JSON object\)"):
        read_record(tmp_path)
