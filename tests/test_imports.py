"""The package's shape: imports point down only, and the public modules are there after ``import lstmkit``.

The picture (README, "Layout"): cli -> apps -> (train, inspect, memory, viz) -> modules -> engines -> errors,
with the variant declarations between the engines and the errors. A circle, or an import that points up, means
an idea has no home yet; this file finds both by reading the source, function-level imports included.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lstmkit"

# The layer of each top-level module or package of lstmkit: a module may import only from its layer or below.
LAYERS: dict[str, int] = {
    "errors": 0, "fileio": 0, "synthetic": 0,
    "variants": 1, "init": 1, "checkpoint": 1,
    "engines": 2,
    "modules": 3, "params": 3,
    "train": 4, "inspect": 4, "memory": 4, "viz": 4, "convert": 4,
    "apps": 5,
    "cli": 6, "forecast": 6,  # forecast: the public entry of the forecaster (over apps/forecast)
    "__init__": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The lstmkit modules ``path`` imports, anywhere in the file but under ``if TYPE_CHECKING:``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            if node.module:
                found.add(f"{base}.{node.module}")
            else:
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lstmkit":
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "lstmkit")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m != "lstmkit"}  # the package root: only cli's __version__, filtered above


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from .engines.base import X" may name a module or a name inside one: keep the longest module that exists
        targets = set()
        for target in _imports(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            targets.add(target)
        graph[name] = targets - {name}
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert names == set(LAYERS)


def test_imports_point_down_only():
    upward = [(a, b) for a, targets in _graph().items() for b in targets
              if a.split(".")[1:2] != b.split(".")[1:2] and _layer(b) > _layer(a)]
    assert upward == []


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])


def test_the_checker_sees_a_function_level_upward_import(tmp_path, monkeypatch):
    # The circle this file guards against came from an import inside a function (inspect <-> modules).
    fake = tmp_path / "lstmkit"
    (fake / "engines").mkdir(parents=True)
    (fake / "engines" / "__init__.py").write_text("def f():\n    from ..modules import LSTM\n")
    (fake / "modules.py").write_text("from . import engines\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    graph = _graph()
    assert graph["lstmkit.engines"] == {"lstmkit.modules"} and graph["lstmkit.modules"] == {"lstmkit.engines"}


def test_import_lstmkit_gives_inspect_memory_and_variants():
    # A fresh interpreter: in this one, other tests may have imported lstmkit.inspect already.
    code = (
        "import torch, lstmkit\n"
        "gates = lstmkit.inspect.record(lstmkit.LSTM(3, 4, 2), torch.randn(5, 2, 3))\n"
        "assert gates.f.shape == (2, 1, 5, 2, 4), gates.f.shape\n"
        "assert lstmkit.memory.memory_estimate(3, 4).peak_bytes > 0\n"
        "assert 'zoneout' in lstmkit.variants.NAMES\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
