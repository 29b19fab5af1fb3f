"""Captions: one line of text per training image, rendered from the lesion table with a Jinja template.

The template (default `templates/caption.j2`) runs in Jinja's sandbox with StrictUndefined, so a typo in a
variable name is an error, not a silently empty caption. Its context holds every lesion-table column
(NA -> None), `site` after the site map, `trigger` (the table's own trigger column when it has one: a manifest's
rows keep their class's), `hairy` and `skin_tone` (the Chardon band of a build
with --skin-tone, e.g. "intermediate"; None otherwise). Every caption is post-processed to one line:
control characters (newlines, tabs, ...) become spaces and runs of spaces collapse to one, so neither odd
metadata nor template layout can split a caption file; quotes and backslashes are kept verbatim (the
caption file is plain text, not markup).

Default output (the seed's format), with missing parts left out:
  all known      photo of male skin, me1anoma on torso, at age 70, hairy
  no site        photo of male skin, me1anoma, at age 55
  no sex         photo of skin, me1anoma on torso, at age 70
  no age         photo of male skin, me1anoma on torso
  nothing known  photo of skin, me1anoma

Speed: a template only sees the columns it names, so rows are grouped by those values and each distinct
context is rendered once (33k ISIC 2020 rows have a few hundred distinct (sex, site, age, hairy) tuples).
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from orchestrator.common import paths
from orchestrator.common.errors import MedsynthError

# C0/C1 control characters, DEL, and Unicode line/paragraph separators: all become one space
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(r" {2,}")


@dataclass(frozen=True)
class CaptionSettings:
    # the project folder's templates/caption.j2 when there is one, else the packaged one
    template: Path = field(default_factory=lambda: paths.find_template("caption.j2"))
    trigger: str = "me1anoma"
    # exact site value -> caption word, e.g. {"lower extremity": "leg"}; sites not in the map are kept
    site_map: Mapping[str, str] = field(default_factory=dict)


def render_captions(table: pd.DataFrame, hairy: Sequence[bool | None] | None,
                    settings: CaptionSettings, skin_tones: Sequence[str | None] | None = None) -> list[str]:
    """One caption per row of `table` (the normalised lesion table), in row order.

    `hairy[i]` is row i's hair decision (None = not analysed; None for the whole list = no analysis);
    `skin_tones[i]` its skin tone band, likewise.
    Raises MedsynthError for a template syntax error, an undefined name, or an empty caption.
    """
    if hairy is not None and len(hairy) != len(table):
        raise ValueError(f"hairy has {len(hairy)} values for {len(table)} rows")
    if skin_tones is not None and len(skin_tones) != len(table):
        raise ValueError(f"skin_tones has {len(skin_tones)} values for {len(table)} rows")
    template, names = _load(settings.template)
    columns = [c for c in table.columns if c in names]
    values = table[columns].astype(object).where(table[columns].notna(), None)
    hair_values: Iterable[bool | None] = hairy if hairy is not None else [None] * len(table)
    # a template that does not name skin_tone renders once per distinct row, whatever the tones
    tone_values: Iterable[str | None] = (skin_tones if skin_tones is not None and "skin_tone" in names
                                         else [None] * len(table))
    site_map = dict(settings.site_map)

    rendered: dict[tuple[Any, ...], str] = {}
    captions: list[str] = []
    for row, hair, tone in zip(values.itertuples(index=False, name=None), hair_values, tone_values):
        key = (*row, tone, None if hair is None else bool(hair))
        caption = rendered.get(key)
        if caption is None:
            context = dict(zip(columns, row), hairy=key[-1], skin_tone=tone)
            # a manifest row keeps the trigger of its class folder (a build of several classes has one each)
            context["trigger"] = context.get("trigger") or settings.trigger
            if context.get("site") is not None:
                context["site"] = site_map.get(context["site"], context["site"])
            caption = rendered[key] = _one_line(_render(template, context, settings.template, table.columns))
        captions.append(caption)
    if "" in rendered.values():  # sd-scripts crashes on an empty caption file
        row = table.iloc[captions.index("")]
        where = f"{row['source_file']}:{row['source_line']}: " if "source_file" in table.columns else ""
        raise MedsynthError(f"{where}image {row.get('image_id', '?')}: caption template {settings.template} "
                            f"rendered an empty caption")
    return captions


def write_captions(directory: Path, items: Iterable[tuple[str, str]], extension: str = ".caption") -> int:
    """Write `<name><extension>` files (UTF-8, the caption plus a newline) into `directory`; return the count.

    Uses one directory file descriptor and raw os calls: at tens of thousands of files the Python
    file-object setup per file costs more than the write itself. Not atomic per file: callers build the
    folder in a temporary sibling and rename it into place.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    count = 0
    if os.open in os.supports_dir_fd:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            for name, caption in items:
                fd = os.open(name + extension, flags, 0o644, dir_fd=dir_fd)
                try:
                    os.write(fd, (caption + "\n").encode("utf-8"))
                finally:
                    os.close(fd)
                count += 1
        finally:
            os.close(dir_fd)
        return count
    for name, caption in items:  # platforms without dir_fd (Windows)
        (directory / (name + extension)).write_text(caption + "\n", encoding="utf-8")
        count += 1
    return count


def _load(path: Path) -> tuple[jinja2.Template, set[str]]:
    """The compiled template and the names it reads from its context."""
    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(path.parent)), undefined=jinja2.StrictUndefined,
                               autoescape=False, keep_trailing_newline=False)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MedsynthError(f"cannot read caption template {path}: {e}") from e
    try:
        names = meta.find_undeclared_variables(env.parse(source, name=path.name, filename=str(path)))
        template = env.get_template(path.name)
    except jinja2.TemplateSyntaxError as e:
        raise MedsynthError(f"caption template {path}, line {e.lineno}: {e.message}") from e
    return template, names


def _render(template: jinja2.Template, context: dict[str, Any], path: Path, columns: Iterable[str]) -> str:
    try:
        return template.render(context)
    except jinja2.UndefinedError as e:
        known = ", ".join(sorted({*columns, "trigger", "hairy", "skin_tone"}))
        raise MedsynthError(f"caption template {path}, line {_template_line(e, path)}: {e.message} "
                            f"(known names: {known})") from e
    except Exception as e:  # sandbox violations, type errors in filters: all are template bugs
        raise MedsynthError(f"caption template {path}, line {_template_line(e, path)}: {e}") from e


def _template_line(error: BaseException, path: Path) -> int | str:
    """The template line where rendering failed: Jinja maps template frames to the template's file."""
    target = path.resolve()
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
             if f.filename and Path(f.filename).resolve() == target]
    return lines[-1] if lines else "?"


def _one_line(text: str) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
