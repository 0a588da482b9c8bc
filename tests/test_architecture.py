"""The package's import graph: no cycles, and the layers import only downwards.

Every module under ``src/ditr`` is parsed with :mod:`ast` (nothing is imported), so the graph also
holds the imports made inside functions, which are invisible to an import-time check and used to
hide cycles (``distill`` <-> ``training`` <-> ``models.ditr``). Relative imports are resolved to
absolute module names; ``from package import name`` is an edge to ``package.name`` when that is a
module, else to ``package``. Implicit imports of parent packages are not edges: every submodule
"imports" its package, which is how packages work, not a cycle.

Layers, bottom to top: ``lifting`` (pixel -> patch cell -> point, torch and numpy only),
``image_features`` (cache or online VFM: no models, data, engine or configs), ``models`` (networks:
no configs, data, engine or workflows), ``engine`` (model-agnostic loop: no models, data or
workflows), ``configs`` (the typed run config, over the lower modules' own config classes: no
data or workflows), ``data`` (no workflows), and the workflow modules, which alone may combine them
and which nothing below them imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Modules that turn a run config into work (training, distillation, prediction, demo, commands, the Python API).
WORKFLOWS = ("ditr.training", "ditr.distill", "ditr.predict", "ditr.inference", "ditr.demo", "ditr.build",
             "ditr.model_files", "ditr.published", "ditr.recipe", "ditr.commands", "ditr.cli", "ditr.api")
#: (layer, what it must not import).
LAYERS = (
    ("ditr.lifting", ("ditr.image_features", "ditr.models", "ditr.data", "ditr.engine", "ditr.configs", *WORKFLOWS)),
    ("ditr.image_features", ("ditr.models", "ditr.data", "ditr.engine", "ditr.configs", *WORKFLOWS)),
    ("ditr.models", ("ditr.data", "ditr.engine", "ditr.configs", *WORKFLOWS)),
    ("ditr.engine", ("ditr.models", "ditr.data", *WORKFLOWS)),
    ("ditr.configs", ("ditr.data", "ditr.image_features", *WORKFLOWS)),
    ("ditr.data", WORKFLOWS),
)
def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or one of its submodules (``ditr.data`` holds ``ditr.data.x``, not ``ditr.dataset``)."""
    return module == prefix or module.startswith(prefix + ".")


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``) for every module of ``ditr``."""
    found = {}
    for path in sorted((SRC / "ditr").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: never executed, so never part of a runtime cycle."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return guarded


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the ``ditr`` modules it imports anywhere in its file (function bodies included)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skip = _type_checking_nodes(tree) if runtime_only else set()
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    assert base, f"{path}:{node.lineno}: relative import above the top-level package"
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in modules else module)
        graph[name] = {t for t in targets if within(t, "ditr") and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_graph_is_read_from_every_module():
    graph = import_graph()
    assert {"ditr.cli", "ditr.build", "ditr.model_files", "ditr.models.student", "ditr.engine.trainer"} <= set(graph)
    unknown = {(m, t) for m, targets in graph.items() for t in targets if t not in graph}
    assert not unknown, f"imports of modules that do not exist: {sorted(unknown)}"
    # Function-local imports are edges too (the demo's runs import training inside their functions).
    assert "ditr.training" in graph["ditr.demo.runs"] and "ditr.inference" in graph["ditr.commands.predict"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph(runtime_only=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downwards():
    graph = import_graph()
    wrong = sorted((m, t) for layer, banned in LAYERS for m, targets in graph.items() if within(m, layer)
                   for t in targets if any(within(t, b) for b in banned))
    assert not wrong, "layering violations (module -> import):\n" + "\n".join(f"  {m} -> {t}" for m, t in wrong)


def is_workflow(module: str) -> bool:
    return any(within(module, w) for w in WORKFLOWS)


def test_nothing_below_the_workflows_imports_them():
    graph = import_graph()
    wrong = sorted((m, t) for m, targets in graph.items() if not is_workflow(m)
                   for t in targets if is_workflow(t))
    assert not wrong, "workflow modules imported from below:\n" + "\n".join(f"  {m} -> {t}" for m, t in wrong)
