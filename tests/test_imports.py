"""No import cycles inside fracsurv/ (every import, also those inside functions)."""

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "fracsurv"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            else:
                continue
            for t in targets:
                o = owner(t) if t.startswith("fracsurv") else None
                if o and o != m:
                    graph[m].add(o)
    return graph


def test_graph_is_complete():
    g = _graph()
    assert "fracsurv.datasets.spine" in g and "fracsurv.datasets._patient" in g["fracsurv.datasets.spine"]


def test_no_import_cycles():
    graphlib.TopologicalSorter(_graph()).prepare()  # raises CycleError on a cycle
