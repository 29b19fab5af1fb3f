"""The value rules of single sd-scripts training options: TOML types against the contract's argparse types, and
the per-option checks argparse never makes on a config file (resolution, optimizer and scheduler names, warmup
steps or ratio, key=value lists). Used by orchestrator/kohya/validate.py, which walks the files."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from orchestrator.common.suggest import closest, did_you_mean
from orchestrator.kohya.contract import Contract, Option

# list options that sd-scripts also accepts as one number (train_network.py:738)
SCALAR_TOO = {"text_encoder_lr"}
# "key=value" list options: True = the value must be a Python literal (sd-scripts ast.literal_eval()s it)
KEY_VALUE_OPTIONS = {"optimizer_args": True, "lr_scheduler_args": True, "network_args": False}
# an int is a step count, a float a ratio of the total steps (train_util.get_scheduler_fix)
STEPS_OR_RATIO = ("lr_warmup_steps", "lr_decay_steps")
# dataset-config names of argparse options (config_util.ConfigSanitizer.ARGPARSE_OPTNAME_TO_CONFIG_OPTNAME)
OPTION_FOR_DATASET_KEY = {"batch_size": "train_batch_size", "num_repeats": "dataset_repeats"}
ADAFACTOR = "adafactor"  # get_optimizer turns this optimizer's lr_scheduler into "adafactor:<lr>" (relative_step)

_FILE_TYPES = {"str": ("str",), "path": ("str",), "int": ("int",), "float": ("float", "int"), "bool": ("bool",),
               "int_or_float": ("int", "float")}
_TOML_NAMES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}


def short_repr(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show_value(value: Any) -> str:
    return f"{_TOML_NAMES.get(type(value), type(value).__name__)} {short_repr(value)}"


def is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, float)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, Mapping)
    if kind.startswith("pair["):
        inner = kind[5:-1]
        return isinstance(value, list) and len(value) == 2 and all(is_kind(v, inner) for v in value)
    return False  # "none": TOML has no null


def describe_kinds(kinds: tuple[str, ...]) -> str:
    words = {"bool": "a boolean", "int": "an integer", "float": "a float", "str": "a string", "dict": "a table",
             "pair[int]": "[W, H] integers", "pair[float]": "a [low, high] pair of floats"}
    return " or ".join(words[k] for k in kinds if k in words)


def unknown_option_hint(key: str, contract: Contract, *, prefix: str = "", settings: Iterable[str] = ()) -> str:
    """For a name that is no option of sdxl_train_network.py: that it is a dataset.toml key, else the closest of
    `settings` (medsynth's own), else the closest option (written with `prefix`), else ""."""
    if key in {**contract.dataset.general, **contract.dataset.subset}:
        alias = OPTION_FOR_DATASET_KEY.get(key)
        return "; it is a dataset.toml key" + (f" (the training option is {alias!r})" if alias else "")
    mine = closest(key, settings)
    if mine:
        return f"; did you mean the medsynth setting '{mine}'?"
    match = closest(key, contract.options)
    return f"; did you mean '{prefix}{match}'?" if match else ""


def option_problem(option: Option, value: Any, contract: Contract) -> str | None:
    if option.nargs is not None and not (option.name in SCALAR_TOO and not isinstance(value, list)):
        if not isinstance(value, list):
            return f"expected an array of {option.type} values, got {show_value(value)}"
        for i, item in enumerate(value):
            problem = _scalar_problem(option, item, contract)
            if problem:
                return f"item {i}: {problem}"
        return None
    return _scalar_problem(option, value, contract)


def _scalar_problem(option: Option, value: Any, contract: Contract) -> str | None:
    exact = tuple(k for k in option.sanitized_as or () if k != "none")
    kinds = exact or _FILE_TYPES[option.type]
    if not any(is_kind(value, k) for k in kinds):
        if option.name == "resolution" and is_kind(value, "int"):
            return (f'must be a string "W" or "W,H" (e.g. "{value}"), got {show_value(value)}: '
                    "sd-scripts splits it on ',' and would crash")
        note = (f": sd-scripts' dataset sanitizer checks this option's exact type (write {value}.0)"
                if exact and "float" in kinds and is_kind(value, "int") else "")
        return f"expected {describe_kinds(kinds)}, got {show_value(value)}{note}"
    if option.choices is not None:
        allowed = [c for c in option.choices if c is not None]
        if value not in allowed:
            note = " (case-sensitive; sd-scripts would silently use DDIM)" if option.name == "sample_sampler" else ""
            return (f"{value!r} is not one of {', '.join(map(str, allowed))}{note}"
                    f"{did_you_mean(str(value), map(str, allowed))}")
    check = _VALUE_CHECKS.get(option.name)
    return check(value, contract) if check else None


def _resolution(value: str, contract: Contract) -> str | None:
    if not re.fullmatch(r"\d+(,\d+)?", value):
        return f'must be "W" or "W,H" in whole pixels (e.g. "1024" or "1024,1024"), got {value!r}'
    return None


def _face_crop(value: str, contract: Contract) -> str | None:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        return f'must be "low,high" (two numbers), got {value!r}'
    return None if low <= high else f"low must not exceed high, got {value!r}"


def _steps_or_ratio(value: int | float, contract: Contract) -> str | None:
    if value < 0:
        return f"must not be negative, got {value}"
    if isinstance(value, float) and value >= 1:
        return (f"{value} is a float, which sd-scripts reads as a ratio of the total steps (it would multiply "
                f"the steps by {value}); write {int(value)} for a step count, or a float below 1 for a ratio")
    return None


def _optimizer(value: str, contract: Contract) -> str | None:
    known = {o.lower(): o for o in contract.optimizers}
    if value == "" or value.lower() in known or re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", value):
        return None  # "" = AdamW; "module.Class" is imported by sd-scripts (case-sensitive)
    return (f"{value!r} is not an optimizer sd-scripts knows (case-insensitive: {', '.join(contract.optimizers)}; "
            "or a class path such as 'torch.optim.RAdam' or 'bitsandbytes.optim.AdEMAMix8bit')"
            f"{did_you_mean(value, contract.optimizers, fold_case=True)}")


def _scheduler(value: str, contract: Contract) -> str | None:
    if value in contract.schedulers or value == ADAFACTOR:
        return None
    return (f"{value!r} is not an lr scheduler sd-scripts can build (case-sensitive): "
            f"{', '.join(contract.schedulers)}{did_you_mean(value, contract.schedulers)}")


def _prompt_file(value: str, contract: Contract) -> str | None:
    if value.endswith((".txt", ".toml", ".json")):
        return None
    return f"{value!r}: sd-scripts reads only .txt, .toml or .json prompt files (others crash at the first sample)"


def _positive(value: int, contract: Contract) -> str | None:
    return None if value >= 1 else f"must be at least 1, got {value}"


def _key_value(literal: bool) -> Callable[[str, Contract], str | None]:
    def check(value: str, contract: Contract) -> str | None:
        key, sep, rest = value.partition("=")
        if not key or not sep or (literal and "=" in rest):
            return f"{value!r} must be key=value" + (" with a single '='" if literal else "")
        if literal:
            try:
                ast.literal_eval(rest)
            except (ValueError, SyntaxError):
                return f"{value!r}: sd-scripts evaluates the value as a Python literal (quote strings: key='text')"
        return None
    return check


_VALUE_CHECKS: dict[str, Callable[[Any, Contract], str | None]] = {
    "resolution": _resolution,
    "face_crop_aug_range": _face_crop,
    "lr_warmup_steps": _steps_or_ratio,
    "lr_decay_steps": _steps_or_ratio,
    "optimizer_type": _optimizer,
    "lr_scheduler": _scheduler,
    "sample_prompts": _prompt_file,
    "max_train_epochs": _positive,
    # 0 is a modulo by zero at the first step or epoch end (train_network.py), or (max_validation_steps) no validation
    "validate_every_n_epochs": _positive,
    "validate_every_n_steps": _positive,
    "max_validation_steps": _positive,
    **{name: _key_value(literal) for name, literal in KEY_VALUE_OPTIONS.items()},
}
