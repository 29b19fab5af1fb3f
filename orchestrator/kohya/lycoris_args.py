"""LyCORIS's network_args (network_module = "lycoris.kohya"), checked against the installed lycoris-lora.

sd-scripts splits each "key=value" at the first '=' and hands the strings to lycoris.kohya.create_network as
keyword arguments (train_network.py:664-668). create_network reads the keys it knows with kwargs.get(), ignores
any other key without a word, and converts each value with int(), float() or str_bool() (anything but "false"
is true); a few it passes on unconverted. What it reads, how, the algorithms (wrapper.network_module_dict) and
the built-in presets (config.PRESET) are taken here from the installed package's source with ast, not imported
(lycoris imports torch; the dry run stays under a second), so the checks follow the installed version.
Named lycoris_args: sd_scripts_probe.py runs as a script from this folder, where a lycoris.py would shadow the
package.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import MedsynthError
from orchestrator.common.suggest import did_you_mean

MODULE = "lycoris.kohya"
NOT_INSTALLED = (f"{MODULE!r} needs the lycoris-lora package, which this Python cannot import: "
                 "pip install 'medsynth[lycoris]' (or make setup-kohya)")
# how create_network turns the string: a converter call around kwargs.get(), else the default's type
_CONVERTERS = {"int": "int", "float": "float", "str_bool": "bool"}
_BOOL_WORDS = ("true", "false")


@dataclass(frozen=True)
class Lycoris:
    """What the installed lycoris.kohya.create_network accepts."""

    version: str
    kinds: Mapping[str, str]           # key -> int | float | bool | truthy (passed on as the string) | text
    deprecated: Mapping[str, str]      # old key -> the key lycoris maps it to
    algos: tuple[str, ...]
    presets: tuple[str, ...]

    def problem(self, args: Sequence[str]) -> str | None:
        """The first thing lycoris would misread or ignore in these "key=value" strings, or None."""
        seen: set[str] = set()
        for i, arg in enumerate(args):
            key, _, value = arg.partition("=")
            problem = self._item_problem(key, value)
            if key in seen:
                problem = f"{key} is given twice (sd-scripts keeps the last one without a word)"
            if problem:
                return f"item {i} {arg!r}: {problem} (lycoris-lora {self.version})"
            seen.add(key)
        return None

    def _item_problem(self, key: str, value: str) -> str | None:
        if key in self.deprecated:
            return f"{key} is deprecated; use {self.deprecated[key]}"
        kind = self.kinds.get(key)
        if kind is None:
            current = sorted(k for k in self.kinds if k not in self.deprecated)
            hint = did_you_mean(key, current) or f"; it reads {', '.join(current)}"
            return f"{key} is not an argument lycoris.kohya reads (it would ignore it){hint}"
        if key == "algo" and value.lower() not in self.algos:
            return f"{value!r} is not one of {', '.join(self.algos)}{did_you_mean(value, self.algos, fold_case=True)}"
        if key == "preset" and value not in self.presets and not value.endswith(".toml"):
            return (f"{value!r} is not a built-in preset ({', '.join(self.presets)}) nor a .toml preset file"
                    f"{did_you_mean(value, self.presets)}")
        if kind in ("int", "float"):
            try:
                int(value) if kind == "int" else float(value)
            except ValueError:
                return f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
        if kind == "bool" and value.lower() not in _BOOL_WORDS:
            return f"must be true or false, got {value!r}: lycoris reads anything but 'false' as true"
        if kind == "truthy" and value.lower() != "true":
            return (f"lycoris passes {key} on as the string {value!r}, which Python takes as true: "
                    f"write {key}=true, or leave it out for false")
        return None


def installed() -> Lycoris | None:
    """The installed lycoris-lora, None when this Python cannot import it (found without importing it)."""
    try:
        spec = importlib.util.find_spec("lycoris")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    return read_package(Path(next(iter(spec.submodule_search_locations))))


@functools.cache
def read_package(folder: Path) -> Lycoris:
    try:
        version = importlib.metadata.version("lycoris-lora")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    try:
        kohya, wrapper, config = (ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
                                  for name in ("kohya", "wrapper", "config"))
        create = next(n for n in kohya.body if isinstance(n, ast.FunctionDef) and n.name == "create_network")
        algos = tuple(_literal_dict(wrapper, "network_module_dict"))
        deprecated = {k: v for k, v in _literal_dict(wrapper, "deprecated_arg_dict").items() if isinstance(v, str)}
        presets = tuple(_preset_names(config))
    except (OSError, SyntaxError, StopIteration, KeyError) as exc:
        raise MedsynthError(f"cannot read which network_args lycoris-lora {version} accepts from {folder} "
                            f"({type(exc).__name__}: {exc}); medsynth reads 4.1.3's layout") from exc
    return Lycoris(version, _kwargs_kinds(create), deprecated, algos, presets)


def _kwargs_kinds(function: ast.FunctionDef) -> dict[str, str]:
    """key -> kind for every kwargs.get("key"[, default]) in the function; a converted use wins over a raw one."""
    parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
    kinds: dict[str, str] = {}
    for node in ast.walk(function):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "kwargs"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue
        kind = _converter(node, parents) or _raw_kind(node.args[1] if len(node.args) > 1 else None)
        key = node.args[0].value
        if kinds.get(key) in (None, "text", "truthy"):
            kinds[key] = kind
    return kinds


def _converter(node: ast.AST, parents: Mapping[ast.AST, ast.AST]) -> str | None:
    """int/float/bool when the value reaches a converter call before it is assigned or passed on."""
    while node in parents and not isinstance(parents[node], (ast.Assign, ast.keyword, ast.Compare)):
        node = parents[node]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CONVERTERS:
            return _CONVERTERS[node.func.id]
    return None


def _raw_kind(default: ast.expr | None) -> str:
    """A value passed on unconverted stays a string: an int default means the module int()s it; a bool default
    means a truth test, where every non-empty string is true."""
    try:
        value = ast.literal_eval(default) if default is not None else None
    except ValueError:
        value = None
    if isinstance(value, bool):
        return "truthy"
    return "int" if isinstance(value, int) else "text"


def _literal_dict(tree: ast.Module, name: str) -> dict[str, object]:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)):
            return {k.value: (v.value if isinstance(v, ast.Constant) else None)
                    for k, v in zip(node.value.keys, node.value.values) if isinstance(k, ast.Constant)}
    raise KeyError(name)


def _preset_names(tree: ast.Module) -> list[str]:
    """PRESET's keys: a dict literal, or a comprehension over another module-level dict literal."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PRESET" for t in node.targets):
            if isinstance(node.value, ast.Dict):
                return list(_literal_dict(tree, "PRESET"))
            source = node.value.generators[0].iter if isinstance(node.value, ast.DictComp) else None
            if (isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute)
                    and isinstance(source.func.value, ast.Name)):
                return list(_literal_dict(tree, source.func.value.id))
    raise KeyError("PRESET")
