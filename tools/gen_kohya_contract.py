#!/usr/bin/env python3
"""Generate orchestrator/kohya/contract.json from vendor/sd-scripts (rerun whenever the pin moves).

The contract lists every option `sdxl_train_network.py` accepts, the dataset-config schema its
ConfigSanitizer enforces, and the names sd-scripts dispatches on without exposing them as argparse
choices (optimizers, lr schedulers). It imports sd-scripts, so it needs sd-scripts' requirements.
The output is deterministic: regenerating at the same pin gives the same bytes.

    python tools/gen_kohya_contract.py [--sd-scripts vendor/sd-scripts] [--out orchestrator/kohya/contract.json]
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

GENERATOR_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent

# names sd-scripts compares `optimizer_type.lower()` with (train_util.get_optimizer); the generator
# fails if the source no longer mentions one of these, so a pin move cannot silently drop them
EXPECTED_OPTIMIZERS = ("AdamW", "AdamW8bit", "Adafactor", "Lion", "Prodigy", "SGDNesterov")
# keys of ConfigSanitizer.argparse_schema that prepare_dataset_args converts from strings before the
# namespace is sanitized (train_util.prepare_dataset_args): their file type is the argparse one
CONVERTED_BEFORE_SANITIZE = ("face_crop_aug_range", "resolution")


def sd_scripts_commit(sd_scripts: Path, given: str | None) -> str:
    """The pinned commit: the checkout's HEAD, else the superproject's gitlink, else --commit."""
    found = None
    if (sd_scripts / ".git").exists():
        found = _git(["-C", str(sd_scripts), "rev-parse", "HEAD"])
    else:
        top = _git(["-C", str(sd_scripts.parent), "rev-parse", "--show-toplevel"])
        if top:
            rel = os.path.relpath(sd_scripts.resolve(), Path(top).resolve())
            entry = _git(["-C", top, "ls-tree", "HEAD", rel]) or ""
            parts = entry.split()
            if len(parts) >= 3 and parts[1] == "commit":
                found = parts[2]
    if found and given and found != given:
        sys.exit(f"error: --commit {given} differs from the commit found for {sd_scripts}: {found}")
    if not (found or given):
        sys.exit(f"error: cannot tell which commit {sd_scripts} is (not a git checkout, no gitlink): pass --commit")
    return found or given  # type: ignore[return-value]


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def record_definition_sites(root: Path) -> dict[int, str]:
    """Patch ArgumentParser.add_argument so each action remembers the sd-scripts file:line that added it."""
    sites: dict[int, str] = {}
    original = argparse._ActionsContainer.add_argument

    @functools.wraps(original)
    def add_argument(self, *args, **kwargs):
        action = original(self, *args, **kwargs)
        caller = sys._getframe(1)
        path = Path(caller.f_code.co_filename).resolve()
        if path.is_relative_to(root):
            sites[id(action)] = f"{path.relative_to(root).as_posix()}:{caller.f_lineno}"
        return action

    argparse._ActionsContainer.add_argument = add_argument
    return sites


def type_name(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "bool"
    if not isinstance(action, argparse._StoreAction):
        raise SystemExit(f"error: option {action.dest}: unsupported argparse action {type(action).__name__}")
    kind: Any = action.type
    if kind is None or kind is str:
        return "str"
    if kind is int or kind is float:
        return kind.__name__
    if kind is Path:
        return "path"
    if getattr(kind, "__name__", "") == "int_or_float":
        return "int_or_float"
    raise SystemExit(f"error: option {action.dest}: unknown argparse type {kind!r}; teach {Path(__file__).name} about it")


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    raise SystemExit(f"error: cannot record default {value!r} ({type(value).__name__})")


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def options_from_parser(parser: argparse.ArgumentParser, sites: dict[int, str],
                        namespace_types: dict[str, list[str]]) -> dict[str, dict]:
    options: dict[str, dict] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.dest in options:
            raise SystemExit(f"error: option {action.dest} is defined twice")
        options[action.dest] = {
            "flags": sorted(action.option_strings),
            "type": type_name(action),
            "nargs": action.nargs if action.nargs not in (0,) else None,
            "choices": jsonable(list(action.choices)) if action.choices is not None else None,
            "default": jsonable(action.default),
            "help": first_line(action.help),
            "defined_at": sites.get(id(action)),
            # the exact type ConfigSanitizer demands of this namespace attribute (config_util.py argparse_schema)
            "sanitized_as": namespace_types.get(action.dest),
        }
    return dict(sorted(options.items()))


def schema_types(key: str, rule: Any, voluptuous: Any) -> list[str]:
    """Type names for one voluptuous rule of ConfigSanitizer (plain type, Any(...), or a two-dim converter)."""
    if isinstance(rule, type):
        return [rule.__name__]
    if isinstance(rule, voluptuous.Any):
        return sorted(t for v in rule.validators for t in schema_types(key, v, voluptuous))
    if rule is None:
        return ["none"]
    if isinstance(rule, functools.partial) and rule.args and isinstance(rule.args[0], type):
        klass, name = rule.args[0].__name__, rule.func.__name__
        if name.endswith("scalar_or_twodim"):
            return [klass, f"pair[{klass}]"]
        if name.endswith("twodim"):
            return [f"pair[{klass}]"]
    raise SystemExit(f"error: dataset key {key}: unknown schema rule {rule!r}; teach {Path(__file__).name} about it")


def schema_level(schema: dict, voluptuous: Any) -> dict[str, dict]:
    level = {}
    for key, rule in schema.items():
        name = key.schema if isinstance(key, voluptuous.Marker) else key
        if name == "subsets":  # structure, not a value: checked as an array of subset tables
            continue
        level[name] = {"types": schema_types(name, rule, voluptuous), "required": isinstance(key, voluptuous.Required)}
    return dict(sorted(level.items()))


def optimizer_names(get_optimizer: Callable) -> list[str]:
    source = inspect.getsource(get_optimizer)
    names = sorted(set(re.findall(r'optimizer_type == "(\w+)"\.lower\(\)', source)), key=str.lower)
    missing = [n for n in EXPECTED_OPTIMIZERS if n.lower() not in {m.lower() for m in names}]
    if missing:
        raise SystemExit(f"error: train_util.get_optimizer no longer names {missing}: check the new pin by hand")
    return names


# settings some schedulers need before get_scheduler_fix can build them (probed in this order)
SCHEDULER_PROBES: tuple[tuple[str | None, Any], ...] = (
    (None, None),
    ("lr_scheduler_min_lr_ratio", 0.1),  # cosine_with_min_lr: min_lr_rate
    ("lr_scheduler_args", ["step_rules='1:10,0.1'"]),  # piecewise_constant: step_rules
)


def scheduler_names(train_util: Any, parser: argparse.ArgumentParser) -> dict[str, dict]:
    """Scheduler names get_scheduler_fix builds here, probed with a one-parameter optimizer.

    sd-scripts passes the name to transformers' SchedulerType (and diffusers' for piecewise_constant);
    some enum members crash in its dispatch, so each candidate is actually constructed. `needs` names
    the option a scheduler cannot be built without.
    """
    import torch

    candidates = {s.value for s in train_util.SchedulerType} | {train_util.DiffusersSchedulerType.PIECEWISE_CONSTANT.value}
    names = {}
    for name in sorted(candidates):
        for option, value in SCHEDULER_PROBES:
            args = parser.parse_args([])
            args.lr_scheduler, args.max_train_steps = name, 100
            args.lr_warmup_steps = 0 if name == "constant" else 10
            if option:
                setattr(args, option, value)
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
            try:
                train_util.get_scheduler_fix(args, optimizer, 1)
            except Exception:  # noqa: BLE001 - any failure means sd-scripts cannot build it this way
                continue
            names[name] = {"needs": option}
            break
    return names


def build_contract(sd_scripts: Path, commit: str) -> dict:
    root = sd_scripts.resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)  # some sd-scripts modules read files relative to the CWD at import
    sites = record_definition_sites(root)
    import voluptuous
    import sdxl_train_network
    from library import config_util, train_util

    parser = sdxl_train_network.setup_parser()
    # the sanitizer train_network.py:517 builds (masked_loss off: controlnet subsets are not used by medsynth)
    sanitizer = config_util.ConfigSanitizer(True, True, False, True)
    namespace_types = {k: schema_types(k, v, voluptuous) for k, v in sanitizer.argparse_schema.items()
                       if k not in CONVERTED_BEFORE_SANITIZE}
    sample_action = next(a for a in parser._actions if a.dest == "sample_sampler")
    return {
        "generator": {"script": "tools/gen_kohya_contract.py", "version": GENERATOR_VERSION},
        "sd_scripts": {
            "commit": commit,
            "script": "sdxl_train_network.py",
            # the scheduler list was probed with these (pinned in sd-scripts' requirements.txt)
            "probed_with": {p: importlib.metadata.version(p) for p in ("diffusers", "transformers")},
        },
        "options": options_from_parser(parser, sites, namespace_types),
        "dataset": {
            "top_level": ["datasets", "general"],
            "general": schema_level(sanitizer.general_schema, voluptuous),
            "dataset": schema_level(sanitizer.db_dataset_schema, voluptuous),
            "subset": schema_level(sanitizer.db_subset_schema, voluptuous),
        },
        "optimizers": optimizer_names(train_util.get_optimizer),
        "lr_schedulers": scheduler_names(train_util, parser),
        "samplers": list(sample_action.choices),
    }


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the file is committed and read by everyone
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sd-scripts", type=Path, default=REPO_ROOT / "vendor" / "sd-scripts")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "orchestrator" / "kohya" / "contract.json")
    ap.add_argument("--commit", help="the sd-scripts commit, when the folder is neither a checkout nor a gitlink")
    opts = ap.parse_args(argv)
    sd_scripts, out = opts.sd_scripts.resolve(), opts.out.resolve()
    if not (sd_scripts / "sdxl_train_network.py").is_file():
        sys.exit(f"error: {sd_scripts} has no sdxl_train_network.py")
    contract = build_contract(sd_scripts, sd_scripts_commit(sd_scripts, opts.commit))
    write_atomically(out, json.dumps(contract, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {out}: {len(contract['options'])} options, {len(contract['optimizers'])} optimizers, "
          f"{len(contract['lr_schedulers'])} lr schedulers, {len(contract['samplers'])} samplers")


if __name__ == "__main__":
    main()
