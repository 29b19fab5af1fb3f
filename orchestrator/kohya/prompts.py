"""The sample-prompt .txt file, read the way sd-scripts reads it, with the cases it mishandles silently refused.

sd-scripts (train_util.load_prompts / line_to_prompt_dict, train_util.py:6254-6357) strips each line, skips blank
lines and lines whose *first character* is '#', splits the rest on " --" and matches each piece against option
regexes by prefix, case-insensitively. Anything that matches no option, or only a prefix of one, is dropped
without a word; an unknown sampler becomes DDIM; sizes are rounded down to a multiple of 8. Here each of those
is an error naming the line.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean
from orchestrator.kohya.contract import load_contract

# option -> (key in sd-scripts' prompt dict, value pattern); the SDXL trainer uses only these
_OPTIONS: dict[str, tuple[str, str]] = {
    "w": ("width", r"\d+"),
    "h": ("height", r"\d+"),
    "d": ("seed", r"\d+"),
    "s": ("sample_steps", r"\d+"),
    "l": ("scale", r"\d+(\.\d*)?|\.\d+"),
    "n": ("negative_prompt", r".+"),
    "ss": ("sample_sampler", r".+"),
}
# options sd-scripts parses for other model families or controlnet; meaningless for the SDXL LoRA trainer
_OTHER_OPTIONS = ("g", "cn", "ctr", "rcfg", "fs")
# sd-scripts also runs its option regexes over the prompt text itself: a prompt starting like this loses its text
_PROMPT_LOOKS_LIKE_OPTION = re.compile(r"(w|h|d|s) \d|(l|g) [\d.]|(n|ss|cn|ctr|rcfg|fs) .", re.IGNORECASE)
_LINE_BREAKING = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def parse_sample_prompts(text: str, *, source: str) -> list[dict[str, Any]]:
    """Each prompt as sd-scripts' dict (prompt, width, height, seed, sample_steps, scale, negative_prompt,
    sample_sampler); raises MedsynthError naming the line for anything sd-scripts would mangle or drop."""
    samplers = load_contract().samplers
    prompts = []
    # open(..., "r") in sd-scripts reads with universal newlines: \r\n and \r end a line too
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        stripped = line.strip()
        if not stripped or line[0] == "#":
            continue
        where = f"{source}: line {number}"
        if stripped.startswith("#"):
            raise MedsynthError(f"{where}: '#' after leading whitespace: sd-scripts treats only a '#' in the first "
                                "column as a comment and would use this line as a prompt")
        bad = next((c for c in stripped if c != "\t" and unicodedata.category(c) in _LINE_BREAKING), None)
        if bad is not None:
            raise MedsynthError(f"{where}: control character U+{ord(bad):04X}: a prompt must be one plain line")
        prompts.append(_parse_line(stripped, where, samplers))
    if not prompts:
        raise MedsynthError(f"{source}: no prompts (only blank or comment lines): sd-scripts would sample nothing")
    return prompts


def validate_sample_prompts(text: str, *, source: str) -> None:
    parse_sample_prompts(text, source=source)


def _parse_line(line: str, where: str, samplers: tuple[str, ...]) -> dict[str, Any]:
    prompt, *pieces = line.split(" --")
    if not prompt.strip() or prompt.startswith("--"):
        raise MedsynthError(f"{where}: no prompt text before the options")
    if _PROMPT_LOOKS_LIKE_OPTION.match(prompt):
        raise MedsynthError(f"{where}: the prompt starts like an option ({prompt[:12]!r}...): "
                            "sd-scripts would read it as one; reword its start")
    result: dict[str, Any] = {"prompt": prompt}
    for piece in pieces:
        name, _, value = piece.partition(" ")
        name = name.lower()
        if name in _OTHER_OPTIONS:
            raise MedsynthError(f"{where}: option --{name} is not used by the SDXL LoRA trainer")
        if name not in _OPTIONS:
            known = ", ".join(f"--{o}" for o in _OPTIONS)
            raise MedsynthError(f"{where}: unknown option --{piece.split(' ')[0]}: sd-scripts would ignore it "
                                f"silently (known: {known})")
        key, pattern = _OPTIONS[name]
        if key in result:
            raise MedsynthError(f"{where}: option --{name} given twice (sd-scripts would keep the last)")
        if not re.fullmatch(pattern, value):
            raise MedsynthError(f"{where}: --{name} {value!r}: expected {_expected(name)}; "
                                "sd-scripts would drop or truncate it")
        result[key] = _convert(name, value, where, samplers)
    return result


def _expected(name: str) -> str:
    return {"l": "a number", "n": "text", "ss": "a sampler name"}.get(name, "a whole number")


def _convert(name: str, value: str, where: str, samplers: tuple[str, ...]) -> Any:
    if name in ("w", "h"):
        size = int(value)
        if size < 64 or size % 8:
            raise MedsynthError(f"{where}: --{name} {size}: must be a multiple of 8, at least 64 "
                                f"(sd-scripts would silently use {max(64, size - size % 8)})")
        return size
    if name == "s":
        steps = int(value)
        if not 1 <= steps <= 1000:
            raise MedsynthError(f"{where}: --s {steps}: steps must be 1..1000 (sd-scripts would clamp it)")
        return steps
    if name == "d":
        return int(value)
    if name == "l":
        return float(value)
    if name == "ss" and value not in samplers:
        raise MedsynthError(f"{where}: --ss {value!r}: not a sampler sd-scripts knows (names are case-sensitive; an "
                            f"unknown one silently becomes DDIM): one of {', '.join(samplers)}"
                            f"{did_you_mean(value.strip(), samplers, fold_case=True)}")
    return value
