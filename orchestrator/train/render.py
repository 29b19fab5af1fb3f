"""Jinja templates -> the text of dataset.toml, train.toml and sample_prompts.txt.

Values reach the output only through a typed filter: `| toml` in the TOML templates, `| prompt` in the
prompts template. The environments' `finalize` hook refuses any other `{{ expression }}`, so a template edit
cannot paste a raw caption, path or Python `True` into a file. What the TOML filter writes:
  bool -> true/false; int -> int; float -> shortest round-tripping repr (1e-05, 128.0);
  str -> basic string with every quote, backslash and control character escaped;
  Path -> 'literal string' (no escapes needed for Windows paths), or an escaped basic string when the
  path itself contains ' or a control character; list/tuple -> array whose items share one TOML type.
None is an error (a template must leave an unset key out with {% if %}).
Every string and array is read back with toml 0.10.2, the parser sd-scripts uses, before it is used: that
parser misreads some valid TOML (a basic string starting with two quotes, array items such as ","), so
the other string form is tried, and a value neither form survives is an error instead of a silent change.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import jinja2
import toml

from orchestrator.common.errors import MedsynthError
from orchestrator.common import paths

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_BASIC_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_OPTION_START = re.compile(r"(^|\s)--+")  # sd-scripts splits a prompt line on " --"


class TomlText(str):
    """Text produced by the TOML filter: the only thing the TOML templates may output."""


class PromptText(str):
    """Text produced by the prompt filter: the only thing the prompts template may output."""


# ----------------------------------------------------------------------------------------------- TOML values

def _basic(text: str, also: str = "") -> str:
    """A basic string; characters in `also` are written as \\uXXXX too."""
    out = []
    for ch in text:
        if ch in also:
            out.append(f"\\u{ord(ch):04X}")
        elif ch in _BASIC_ESCAPES:
            out.append(_BASIC_ESCAPES[ch])
        elif _CONTROL.match(ch):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _literal(text: str) -> str | None:
    return None if "'" in text or _CONTROL.search(text) else f"'{text}'"


def _reads_back(text: str, value: Any) -> bool:
    """Does sd-scripts' parser (toml 0.10.2) read `v = text` as exactly `value`? It has bugs: a basic string
    starting with two quotes reads as empty, and array items such as "," or "\"" are split or emptied."""
    try:
        back = toml.loads(f"v = {text}\n")["v"]
    except (toml.TomlDecodeError, IndexError, ValueError, TypeError):
        return False
    return _same(back, value)


def _same(back: Any, value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return isinstance(back, list) and len(back) == len(value) and all(map(_same, back, value))
    if isinstance(value, PurePath):
        value = _path_text(value)
    return type(back) is type(value) and back == value


def _path_text(path: PurePath) -> str:
    return str(path) if isinstance(path, Path) else path.as_posix()


def _string_forms(text: str, prefer_literal: bool) -> list[str]:
    forms = [_basic(text), _literal(text)]
    if prefer_literal:
        forms.reverse()
    return [f for f in forms if f is not None]


def toml_string(text: str, *, prefer_literal: bool = False) -> str:
    for form in _string_forms(text, prefer_literal):
        if _reads_back(form, text):
            return form
    raise MedsynthError(f"cannot write {text!r} to TOML: sd-scripts' parser (toml 0.10.2) would misread it")


def toml_path(path: PurePath) -> str:
    return toml_string(_path_text(path), prefer_literal=True)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (str, PurePath)):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _array(value: list | tuple) -> str:
    kinds = {_kind(v) for v in value}
    if len(kinds) > 1:
        raise MedsynthError(f"cannot write {list(value)!r} to TOML: array items must share one type "
                            f"(got {', '.join(sorted(kinds))})")
    first = "[" + ", ".join(toml_value(v) for v in value) + "]"
    if _reads_back(first, value):
        return first
    if kinds == {"string"}:
        # toml 0.10.2's array splitter trips on items such as "," or "\"": it reads an escaped comma
        # (\u002C) correctly, and literal strings need no escaped quotes
        texts = [_path_text(v) if isinstance(v, PurePath) else v for v in value]
        for item in (lambda t: _basic(t, also=","), lambda t: _literal(t) or _basic(t, also=",")):
            text = "[" + ", ".join(map(item, texts)) + "]"
            if _reads_back(text, value):
                return text
    raise MedsynthError(f"cannot write {list(value)!r} to TOML: sd-scripts' parser (toml 0.10.2) would misread it")


def toml_value(value: Any) -> TomlText:
    """One Python value as TOML value text (see the module docstring)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        raise MedsynthError("template bug: an unset (None) value reached a TOML file; guard it with {% if %}")
    if isinstance(value, bool):
        return TomlText("true" if value else "false")
    if isinstance(value, int):
        return TomlText(str(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MedsynthError(f"cannot write {value!r} to TOML: TOML 0.5 (sd-scripts' parser) has no inf/nan")
        return TomlText(repr(value))
    if isinstance(value, PurePath):
        return TomlText(toml_path(value))
    if isinstance(value, str):
        return TomlText(toml_string(value))
    if isinstance(value, (list, tuple)):
        return TomlText(_array(value))
    raise MedsynthError(f"cannot write a {type(value).__name__} ({value!r}) to TOML")


def toml_key(key: str) -> TomlText:
    return TomlText(key if _BARE_KEY.match(key) else toml_string(key))


# ----------------------------------------------------------------------------------------------- prompt text

def prompt_text(value: Any) -> PromptText:
    """A value for one sample-prompt line: one line, no ' --' that sd-scripts would read as an option.

    Whitespace runs (newlines included) become one space; '-' runs after a space are cut to one dash, so
    'a --n b' stays prompt text ('a -n b'). A leading '#' would make the line a comment: it is dropped.
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, bool) or value is None:
        raise MedsynthError(f"template bug: {value!r} is not prompt text")
    if isinstance(value, (int, float)):
        return PromptText(repr(value) if isinstance(value, float) else str(value))
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    text = _OPTION_START.sub(lambda m: m.group(1) + "-", text)
    return PromptText(text.lstrip("#").strip())


# ----------------------------------------------------------------------------------------------- rendering

def _finalize_for(kind: type, filter_name: str):
    def finalize(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        raise MedsynthError(f"template bug: {{{{ {value!r} }}}} is written without the '| {filter_name}' filter")
    return finalize


def _environment(kind: type, filter_name: str, templates_dirs: list[Path]) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader([str(d) for d in templates_dirs]),
                             undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             finalize=_finalize_for(kind, filter_name))
    env.filters["toml"] = toml_value
    env.filters["toml_key"] = toml_key
    env.filters["prompt"] = prompt_text
    return env


def render_template(name: str, context: Mapping[str, Any], templates_dir: Path | None = None) -> str:
    """Render templates/<name>; *.toml.j2 files use the TOML filter rules, others the prompt rules.

    Without `templates_dir`: the project folder's templates/<name> when there is one, else the packaged one."""
    dirs = [templates_dir] if templates_dir is not None else paths.template_dirs()
    is_toml = name.endswith(".toml.j2")
    env = _environment(TomlText, "toml", dirs) if is_toml else _environment(PromptText, "prompt", dirs)
    where = next((d / name for d in dirs if (d / name).is_file()), dirs[-1] / name)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise MedsynthError(f"template {where} not found") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise MedsynthError(f"{exc.filename or where}, line {exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise MedsynthError(f"{where}: {exc.message}") from exc
