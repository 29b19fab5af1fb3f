"""The HTML pages medsynth writes (review.html, evaluation.html): a template from templates/ (the project's copy
first), HTML-escaped, rendered and written atomically so a browser open on the page never reads half of it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.common import paths
from orchestrator.common.atomic import write_atomic


def write_page(path: Path, template: str, context: Mapping[str, Any]) -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths.template_dirs()), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    write_atomic(path, env.get_template(template).render(**context))
