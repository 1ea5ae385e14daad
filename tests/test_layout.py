"""The package's shape, as ARCHITECTURE.md states it: no stage package imports another (shared
helpers live in base modules), no import cycle between modules (imports inside functions
count), and no module over 330 lines. Read from the source with `ast`, nothing imported.

    .venv/bin/python tests/test_layout.py [PACKAGE_DIR]   # prints the package import graph
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "wit_builder"
MAX_LINES = 330


def module_imports(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, dotted names without the package prefix."""
    modules = {_name(package, p): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                    node.module.split(".")[0] == package.name:
                base = node.module.split(".", 1)[1] if "." in node.module else ""
                for alias in node.names:  # `from pkg.a import b`: module a.b, or a's name b
                    target = f"{base}.{alias.name}".strip(".")
                    found.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".", 1)[1] for a in node.names
                          if a.name.startswith(package.name + ".")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _name(package: Path, path: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_packages(package: Path) -> set[str]:
    """The packages of the registry's entries (`Stage("name", "wit_builder.PKG.module", ...)`)."""
    tree = ast.parse((package / "registry.py").read_text())
    return {node.args[1].value.split(".")[1] for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Stage"
            and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)}


def package_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    top = lambda m: m.split(".")[0] or "__init__"
    return {(top(a), top(b)) for a, targets in graph.items() for b in targets if top(a) != top(b)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_stage_package_imports_another():
    stages = stage_packages(PACKAGE)
    assert {"extract", "match", "filter", "balance", "download", "finalize"} <= stages
    between = sorted((a, b) for a, b in package_edges(module_imports(PACKAGE))
                     if a in stages and b in stages)
    assert between == []


def test_no_import_cycle():
    graph = module_imports(PACKAGE)
    assert len(graph) > 100 and sum(map(len, graph.values())) > 200  # the graph was read
    assert cycles(graph) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_the_line_limit():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    graph = module_imports(root)
    stages = stage_packages(root if (root / "registry.py").exists() else PACKAGE)
    edges = package_edges(graph)
    for a in sorted({a for a, _ in edges}):
        targets = sorted(b for x, b in edges if x == a)
        print(f"{a}: " + ", ".join(f"**{b}**" if a in stages and b in stages else b for b in targets))
    crossing = [(a, b) for a, targets in graph.items() for b in targets
                if a.split(".")[0] in stages and b.split(".")[0] in stages
                and a.split(".")[0] != b.split(".")[0]]
    print(f"{len(crossing)} imports between stage packages")
    print(f"{len(edges)} package edges; stage -> stage (bold):",
          sorted((a, b) for a, b in edges if a in stages and b in stages) or "none")
    print("cycles:", cycles(graph) or "none")
    print(f"modules over {MAX_LINES} lines:", {str(p.relative_to(root)): n for p in root.rglob("*.py")
          if (n := len(p.read_text().splitlines())) > MAX_LINES} or "none")
