"""The package's modules import one another without a circle (module-level and function-level imports alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import clapknn

PACKAGE = Path(clapknn.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["clapknn", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parse(path: Path) -> ast.Module:
    source = path.read_text(encoding="utf-8")
    try:
        return ast.parse(source, str(path))
    except SystemError:
        # CPython before 3.11.8 (gh-106905): the AST converter's recursion counter is shared
        # between threads, so a parse can fail spuriously while a background thread that an
        # earlier test left running (Ray's) compiles too; the same source parses on a second try
        return ast.parse(source, str(path))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its body (``TYPE_CHECKING`` blocks included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(_parse(path)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # "from .x import y" imports x.y when y is a module, else x
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle_sees_a_circle_and_its_absence():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_graph_resolves_relative_and_function_level_imports():
    graph = import_graph()
    assert "clapknn.embedding.engine" in graph["clapknn.embedding.encode"]  # a function-level import
    assert "clapknn.audio.digests" in graph["clapknn.embedding.cache"]
    # two levels up, into a sibling subpackage, and a package's __init__ re-exporting its modules
    assert "clapknn.audio.snippet" in graph["clapknn.embedding.engine"]
    assert "clapknn.encoders.base" in graph["clapknn.encoders.clap.encoder"]
    assert {"clapknn.encoders.clap.checkpoints", "clapknn.encoders.clap.encoder"} <= graph["clapknn.encoders.clap"]
    assert "clapknn.errors" in graph["clapknn.encoders.clap.checkpoints"]  # three dots: from ...errors


def test_no_import_circle_among_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)
