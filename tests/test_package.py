"""The package's house rules that a reader can check: no import cycle among apr_mini's modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "apr_mini"


def imports_within_package() -> dict[str, set[str]]:
    """Each module's imports of sibling modules, module-level and inside functions alike."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[path.stem] = found & modules - {"__init__"}
    return graph


def test_no_import_cycle():
    graph, done, path = imports_within_package(), set(), []

    def visit(module):
        assert module not in path, "import cycle: " + " -> ".join(path[path.index(module):] + [module])
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
