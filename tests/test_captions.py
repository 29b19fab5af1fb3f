"""Caption rendering: the seed's format, missing parts, configuration, hostile metadata, template errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.dataset import captions as captions_module
from orchestrator.dataset.captions import CaptionSettings, render_captions, write_captions
from orchestrator.common.errors import MedsynthError
from orchestrator.dataset.lesions import conform

DEFAULT = CaptionSettings()


def table(*rows: dict) -> pd.DataFrame:
    return conform(pd.DataFrame([{"image_id": f"ISIC_{i:07d}", **row} for i, row in enumerate(rows)]))


def one(row: dict, hairy: bool | None = None, settings: CaptionSettings = DEFAULT) -> str:
    return render_captions(table(row), [hairy], settings)[0]


def template(tmp_path: Path, text: str) -> CaptionSettings:
    path = tmp_path / "caption.j2"
    path.write_text(text, encoding="utf-8")
    return CaptionSettings(template=path)


FULL = {"sex": "male", "age": 70, "site": "torso"}


def test_default_template_reproduces_seed_caption_with_hair():
    assert one(FULL, hairy=True) == "photo of male skin, me1anoma on torso, at age 70, hairy"


def test_no_hair_or_unknown_hair_adds_no_hairy_clause():
    assert one(FULL, hairy=False) == "photo of male skin, me1anoma on torso, at age 70"
    assert render_captions(table(FULL), None, DEFAULT) == ["photo of male skin, me1anoma on torso, at age 70"]


def test_missing_site_leaves_out_on_clause():
    assert one({"sex": "male", "age": 55}) == "photo of male skin, me1anoma, at age 55"


def test_missing_sex_leaves_out_sex_word():
    assert one({"age": 40, "site": "torso"}) == "photo of skin, me1anoma on torso, at age 40"


def test_missing_age_leaves_out_age_clause():
    assert one({"sex": "female", "site": "torso"}, hairy=True) == "photo of female skin, me1anoma on torso, hairy"


def test_all_metadata_missing_still_gives_clean_caption():
    caption = one({})
    assert caption == "photo of skin, me1anoma"
    assert "  " not in caption and not caption.endswith(",")


def test_age_zero_is_kept():
    assert one({"sex": "female", "age": 0, "site": "torso"}).endswith(", at age 0")


def test_isic_0149568_gets_exact_caption(isic_dir):
    raw = pd.read_csv(isic_dir / "ISIC_2020_Training_GroundTruth.csv", dtype=str)
    row = raw[raw["image_name"] == "ISIC_0149568"].iloc[0]
    lesion = table({"sex": row["sex"], "age": int(float(row["age_approx"])),
                    "site": row["anatom_site_general_challenge"]})
    assert render_captions(lesion, [False], DEFAULT) == [
        "photo of female skin, me1anoma on upper extremity, at age 55"]


def test_site_map_renames_mapped_sites_only():
    settings = CaptionSettings(site_map={"lower extremity": "leg"})
    got = render_captions(table({"sex": "male", "age": 50, "site": "lower extremity"},
                                {"sex": "male", "age": 50, "site": "torso"}), None, settings)
    assert got == ["photo of male skin, me1anoma on leg, at age 50", "photo of male skin, me1anoma on torso, at age 50"]


def test_custom_trigger_replaces_me1anoma():
    caption = one(FULL, settings=CaptionSettings(trigger="sks lesion"))
    assert caption == "photo of male skin, sks lesion on torso, at age 70"


def test_hostile_metadata_stays_on_one_line_verbatim():
    site = 'back "quoted" \\ path {{ 7 * 7 }}\r\nnext\tline'
    caption = one({"sex": "male", "age": 30, "site": site})
    assert caption == 'photo of male skin, me1anoma on back "quoted" \\ path {{ 7 * 7 }} next line, at age 30'


def test_template_layout_newlines_collapse_to_single_spaces(tmp_path):
    settings = template(tmp_path, "a\n\n  {{ sex }}\t\tskin\n{{ trigger }}\n")
    assert one(FULL, settings=settings) == "a male skin me1anoma"


def test_other_lesion_columns_are_in_context(tmp_path):
    settings = template(tmp_path, "{{ image_id }} {{ diagnosis }} {{ patient_id }}")
    assert one({"diagnosis": "melanoma"}, settings=settings) == "ISIC_0000000 melanoma None"


def test_template_syntax_error_names_file_and_line(tmp_path):
    settings = template(tmp_path, "photo\nof {{ sex }\nskin\n")
    with pytest.raises(MedsynthError) as err:
        one(FULL, settings=settings)
    message = str(err.value)
    assert str(settings.template) in message and "line 2" in message and "\n" not in message


def test_undefined_name_names_file_and_line(tmp_path):
    settings = template(tmp_path, "photo of {{ sex }}\nskin {{ anatomical_site }}\n")
    with pytest.raises(MedsynthError) as err:
        one(FULL, settings=settings)
    message = str(err.value)
    assert str(settings.template) in message and "line 2" in message and "anatomical_site" in message


def test_sandbox_refuses_unsafe_attribute_access(tmp_path):
    settings = template(tmp_path, "{{ sex.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(MedsynthError, match="line 1"):
        one(FULL, settings=settings)


def test_empty_caption_names_image_id(tmp_path):
    settings = template(tmp_path, "{% if sex == 'female' %}{{ sex }}{% endif %}  \n")
    rows = table({"sex": "female"}, {"sex": "male"})
    with pytest.raises(MedsynthError, match="ISIC_0000001"):
        render_captions(rows, None, settings)


def test_missing_template_file_is_reported(tmp_path):
    with pytest.raises(MedsynthError, match="nope.j2"):
        one(FULL, settings=CaptionSettings(template=tmp_path / "nope.j2"))


def test_each_distinct_context_is_rendered_once(monkeypatch):
    calls = []
    real = captions_module._render
    monkeypatch.setattr(captions_module, "_render", lambda *a: calls.append(a) or real(*a))
    rows = table(*([FULL, {"sex": "female", "age": 30, "site": "torso"}] * 500))
    got = render_captions(rows, [False, True] * 500, DEFAULT)
    assert len(got) == 1000 and len(set(got)) == 2
    assert len(calls) == 2


def test_hair_list_must_match_rows():
    with pytest.raises(ValueError):
        render_captions(table(FULL, FULL), [True], DEFAULT)


def test_write_captions_writes_one_utf8_line_per_file(tmp_path):
    count = write_captions(tmp_path, [("ISIC_1", "photo of skin, me1anoma"), ("ISIC_2", "café \\ \"x\"")])
    assert count == 2
    assert (tmp_path / "ISIC_1.caption").read_bytes() == b"photo of skin, me1anoma\n"
    assert (tmp_path / "ISIC_2.caption").read_text(encoding="utf-8") == "café \\ \"x\"\n"
