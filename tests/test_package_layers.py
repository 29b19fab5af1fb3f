"""The package's shape: one subpackage per stage, data flowing one way (a stage imports only stages below it),
no import cycles between modules, and no module so long that its job is no longer one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "orchestrator"
# the flow, bottom first: a subpackage may import its own modules and those of earlier layers only
LAYERS = [{"common"}, {"vision", "kohya"}, {"dataset"}, {"runs"}, {"train"}, {"sweep", "review", "generate"},
          {"evaluate", "benchmark"}, {"cli"}]
MAX_LINES = 360


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The orchestrator modules a file imports, at any depth (imports inside functions count: they still couple)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n in modules and n.startswith("orchestrator.")}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return next((i for i, layer in enumerate(LAYERS) if len(parts) > 1 and parts[1] in layer), None)


def test_every_module_belongs_to_a_stage_and_imports_only_stages_below_it():
    modules = _modules()
    loose = [m for m in modules if m != "orchestrator" and _layer(m) is None]
    assert loose == []
    upward = sorted(f"{m} -> {i}" for m, path in modules.items() if _layer(m) is not None
                    for i in _imports(path, modules)
                    if _layer(i) is not None and (_layer(i) > _layer(m) or
                                                  (_layer(i) == _layer(m) and i.split(".")[1] != m.split(".")[1])))
    assert upward == []


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
    # a package's __init__ imported as part of `from orchestrator.x import y` is not an edge of y's module
    graph = {m: {i for i in deps if not (modules[i].name == "__init__.py" and any(d.startswith(i + ".") for d in deps))}
             for m, deps in graph.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, stack + [node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_no_module_is_longer_than_one_job_needs():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
