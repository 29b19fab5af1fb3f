"""The TOML and prompt filters: every value round-trips through `toml` (sd-scripts' parser) and none can inject."""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
import toml

from orchestrator.common.errors import MedsynthError
from orchestrator.kohya.prompts import parse_sample_prompts
from orchestrator.train.render import prompt_text, render_template, toml_key, toml_value

HOSTILE = [
    'say "hi"', "back\\slash", "C:\\Users\\x", "'''", '"""', "line1\nline2", "tab\there", "cr\rlf",
    "x = 1\n[evil]\ny = 2", "bell\x07", "del\x7f", "üñí ☃", "", "#not a comment", "a = 'b'", "\\u0041",
]


def roundtrip(value):
    return toml.loads(f"v = {toml_value(value)}")["v"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_string_round_trips_as_one_value(text):
    doc = toml.loads(f"a = {toml_value(text)}\nb = 1\n")
    assert doc == {"a": text, "b": 1}


@pytest.mark.parametrize("value", [True, False, 0, 100, -3, 10**12])
def test_booleans_and_ints_keep_their_toml_type(value):
    back = roundtrip(value)
    assert back == value and type(back) is type(value)


def test_booleans_are_lowercase():
    assert toml_value(True) == "true" and toml_value(False) == "false"


@pytest.mark.parametrize("value", [4e-7, 1e-4, 8e-5, 128.0, 0.1, 1.0 / 3, 5.656854249492381e-05, 1e30, -2.5])
def test_floats_stay_floats_and_round_trip_exactly(value):
    back = roundtrip(value)
    assert type(back) is float and back == value


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_float_is_refused(value):
    with pytest.raises(MedsynthError, match="inf/nan"):
        toml_value(value)


@pytest.mark.parametrize("path", ["/data/runs/a b/x.safetensors", "C:\\Users\\me\\model.safetensors",
                                  "/tmp/it's here", "/tmp/new\nline", "/tmp/quote\"d"])
def test_paths_round_trip(path):
    assert roundtrip(Path(path)) == path


def test_plain_path_is_a_literal_string():
    assert toml_value(Path("/data/x")) == "'/data/x'"
    assert toml_value(PureWindowsPath("C:\\a\\b")) == "'C:/a/b'"
    assert toml_value(PurePosixPath("/a/b")) == "'/a/b'"


def test_path_with_quote_or_newline_falls_back_to_basic_string():
    assert toml_value(Path("/tmp/it's")).startswith('"')
    assert toml_value(Path("/tmp/a\nb")).startswith('"')


def test_homogeneous_lists_round_trip():
    assert roundtrip(["weight_decay=0.01", 'betas=(0.9, 0.99)']) == ["weight_decay=0.01", "betas=(0.9, 0.99)"]
    assert roundtrip((1, 2, 3)) == [1, 2, 3]
    assert roundtrip([]) == []


@pytest.mark.parametrize("value", [[1, 2.0], [True, 1], ["a", 1]])
def test_mixed_lists_are_refused(value):
    with pytest.raises(MedsynthError, match="share one type"):
        toml_value(value)


@pytest.mark.parametrize("value", [None, {"a": 1}, object()])
def test_values_without_a_toml_form_are_refused(value):
    with pytest.raises(MedsynthError):
        toml_value(value)


def test_odd_key_is_quoted():
    assert toml_key("noise_offset") == "noise_offset"
    assert toml.loads(f"{toml_key('a b')} = 1") == {"a b": 1}


def test_expression_without_filter_is_refused(tmp_path):
    (tmp_path / "x.toml.j2").write_text("a = {{ value }}\n")
    with pytest.raises(MedsynthError, match=r"without the '\| toml' filter"):
        render_template("x.toml.j2", {"value": "x"}, tmp_path)


def test_filtered_expression_renders(tmp_path):
    (tmp_path / "x.toml.j2").write_text("a = {{ value | toml }}\nb = {{ flag | toml }}\n")
    text = render_template("x.toml.j2", {"value": 'he said "x"\n[y]', "flag": True}, tmp_path)
    assert toml.loads(text) == {"a": 'he said "x"\n[y]', "b": True}


def test_undefined_template_variable_is_an_error(tmp_path):
    (tmp_path / "x.toml.j2").write_text("a = {{ missing | toml }}\n")
    with pytest.raises(MedsynthError, match="missing"):
        render_template("x.toml.j2", {}, tmp_path)


def test_prompt_text_is_one_line():
    assert prompt_text("photo of\nskin,\r\n\tme1anoma") == "photo of skin, me1anoma"


@pytest.mark.parametrize("text", ["melanoma --n evil --d 5", "a ---w 9", "--s 1000 start", "x\n--l 99"])
def test_prompt_text_cannot_start_an_option(text):
    assert " --" not in " " + prompt_text(text)


def test_prompt_text_keeps_quotes_and_backslashes():
    assert prompt_text('a "b" \\c \'d\'') == 'a "b" \\c \'d\''


def test_prompt_text_cannot_become_a_comment():
    assert not prompt_text("# photo").startswith("#")


def test_hostile_prompt_line_parses_to_the_intended_options(tmp_path):
    (tmp_path / "p.txt.j2").write_text("{{ text | prompt }} --n {{ neg | prompt }} --d {{ seed | prompt }}\n")
    hostile = 'photo "x" --n injected --d 1\nsecond line --w 64'
    line = render_template("p.txt.j2", {"text": hostile, "neg": "blurry --s 1", "seed": 7}, tmp_path)
    assert line.count("\n") == 1
    (parsed,) = parse_sample_prompts(line, source="p.txt")
    assert parsed["seed"] == 7
    assert "width" not in parsed and "sample_steps" not in parsed
    assert "injected" in parsed["prompt"] and "blurry" in parsed["negative_prompt"]


@pytest.mark.parametrize("text", ['"', '""', '""x', '"""', '"" and more'])
def test_strings_starting_with_quotes_survive_the_toml_0_10_2_bug(text):
    # toml 0.10.2 reads "\"\"x" as '': the filter must pick a form the parser reads back
    assert roundtrip(text) == text


def test_string_no_form_can_carry_is_refused():
    with pytest.raises(MedsynthError, match="misread"):
        toml_value('""\'')


@pytest.mark.parametrize("items", [[",", "a"], ['"', "a"], [" ,", ", "], ["betas=(0.9,0.99)", "eps=1e-8"]])
def test_string_arrays_survive_the_toml_0_10_2_splitter(items):
    assert roundtrip(items) == items
