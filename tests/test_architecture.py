"""The package's shape, checked from its source: no import circles, no reaching into another module's
private names, stages that do not import each other sideways, and short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgesparse"
MAX_FUNCTION_LINES = 60
LONG_OK = "# long:"  # a function may exceed MAX_FUNCTION_LINES when a comment with this tag says why


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported (not inside functions or TYPE_CHECKING blocks)."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack += node.body + node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.With):
            stack += node.body
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges() -> dict[str, dict[str, list[str]]]:
    """module -> {imported edgesparse module: names taken from it}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for module, path in MODULES.items():
        out: dict[str, list[str]] = {}
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES and alias.name != module:
                        out.setdefault(alias.name, [])
                continue
            source = _resolve(module, node)
            if source not in MODULES:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:  # ``from pkg import submodule``
                    out.setdefault(sub, [])
                else:
                    out.setdefault(source, []).append(alias.name)
        out.pop(module, None)
        graph[module] = out
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_graph_finds_a_known_edge() -> None:
    # guards the checks below against silently reading nothing
    graph = _edges()
    assert "edgesparse.export" in graph["edgesparse.run"]
    assert "edgesparse.train.fit" in graph["edgesparse.run"] or "edgesparse.train" in graph["edgesparse.run"]
    assert _cycles({"a": {"b": []}, "b": {"a": []}, "c": {}}) == [["a", "b"]]


def test_no_import_cycles() -> None:
    assert _cycles(_edges()) == []


def test_no_private_names_of_other_modules() -> None:
    bad = [f"{module} imports {name} from {source}"
           for module, deps in _edges().items() for source, names in deps.items()
           for name in names if name.startswith("_") and not name.startswith("__")]
    assert bad == []


def _private_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("_") and not name.rsplit(".", 1)[-1].startswith("__")


def test_no_private_module_of_another_package() -> None:
    """``pkg._mod`` is private to ``pkg``: a module outside ``pkg`` importing it should use a public one."""
    bad = []
    for module, deps in _edges().items():
        for source in deps:
            parent = source.rsplit(".", 1)[0]
            if _private_module(source) and not (module == parent or module.startswith(parent + ".")):
                bad.append(f"{module} imports {source}")
    assert bad == []


def test_the_private_module_check_sees_a_violation() -> None:
    assert _private_module("edgesparse.models._graph") and not _private_module("edgesparse.models.graph")
    assert not _private_module("edgesparse.__init__")


@pytest.mark.parametrize(("stage", "forbidden"), [
    ("edgesparse.train", ("edgesparse.export", "edgesparse.run", "edgesparse.sweep", "edgesparse.profile")),
    ("edgesparse.export", ("edgesparse.train", "edgesparse.run", "edgesparse.sweep", "edgesparse.profile")),
    ("edgesparse.models", ("edgesparse.train", "edgesparse.export", "edgesparse.run")),
    ("edgesparse.data", ("edgesparse.train", "edgesparse.export", "edgesparse.run", "edgesparse.models")),
    ("edgesparse.tflite", ("edgesparse.train", "edgesparse.export", "edgesparse.run", "edgesparse.profile",
                           "edgesparse.device")),
    ("edgesparse.device", ("edgesparse.train", "edgesparse.export", "edgesparse.run", "edgesparse.profile")),
])
def test_stages_do_not_import_sideways(stage: str, forbidden: tuple[str, ...]) -> None:
    """Also imports inside functions: a stage must not reach another one at all."""
    bad = []
    for module, path in MODULES.items():
        if module != stage and not module.startswith(stage + "."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [_resolve(module, node)] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{module} -> {n}" for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert bad == []


def test_functions_are_short() -> None:
    long = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                n = node.end_lineno - node.lineno + 1
                head = lines[max(0, node.lineno - 3): node.lineno + 1]
                if n > MAX_FUNCTION_LINES and not any(LONG_OK in line for line in head):
                    long.append(f"{module}.{node.name}: {n} lines")
    assert long == []


#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "tf_keras": "tf-keras",
                 "tensorflow_model_optimization": "tensorflow-model-optimization", "ai_edge_litert": "ai-edge-litert",
                 "tflite_runtime": "tflite-runtime", "ray": "ray[default]", "IPython": "ipython"}


def test_every_third_party_import_is_declared() -> None:
    import sys

    setup = (PACKAGE.parent / "setup.py").read_text(encoding="utf-8")
    imported = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                imported.add(node.module.split(".")[0])
    third_party = sorted(m for m in imported if m not in sys.stdlib_module_names and m != "edgesparse")
    assert "numpy" in third_party
    missing = [m for m in third_party if f'"{DISTRIBUTIONS.get(m, m)}' not in setup]
    assert missing == []
