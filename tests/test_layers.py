"""The import-layer guard (DESIGN.md: "Data flows one way. A lower layer never imports a higher one.").

Every module of the doitray package is read with ``ast`` (nothing is imported), every import in it is
resolved to a doitray module — ``import a.b``, ``from a import b``, relative ``from ..x import y``, and
``importlib.import_module("a.b")`` with a literal name, at module level or inside functions, classes and
``if`` blocks alike — and the test fails on

- an import from a lower layer into a higher one (the importing file, its line, and both layers are named);
- any import cycle between modules, function-level imports included (the cycle's path is named): a cycle
  that only "works" because one side imports lazily is still two modules that each need the other.

Imports within one layer are allowed (as long as they do not form a cycle). A module whose top-level name is
not in ``LAYERS`` fails too, so a new area has to be placed in the order on purpose.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "doitray"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Low -> high. Each entry is one layer: the names directly under doitray/ (a top-level module, or a
# subpackage doitray/<name>/ with everything inside it; "__init__" is doitray/__init__.py itself).
# A module may import from its own layer or any layer before it, never from a layer after it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "abilities", "records", "console", "store", "scratch", "tracking"),   # leaves
    ("data",),
    ("models",),
    ("train",),
    ("eval",),
    ("study",),
    ("analysis",),
    ("report",),
    ("cluster",),
    ("cli",),
)
LAYER_OF: dict[str, int] = {name: i for i, names in enumerate(LAYERS) for name in names}


def layer_name(i: int) -> str:
    return "leaves" if i == 0 else LAYERS[i][0]


@dataclass(frozen=True)
class Edge:
    src: str    # importing module, e.g. "doitray.data.pipeline"
    dst: str    # imported doitray module, e.g. "doitray.study.spec"
    where: str  # "doitray/data/pipeline.py:12"


def discover(root: Path) -> dict[str, Path]:
    """``{module name: file}`` for every .py file under the package directory ``root``."""
    pkg = root.name
    mods: dict[str, Path] = {}
    for f in sorted(root.rglob("*.py")):
        parts = [pkg, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a package module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def imports_of(mod: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """Every package module ``mod`` imports anywhere in its file, with the line."""
    pkg = mod.split(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, int]] = []

    def add(name: str | None, line: int) -> None:
        if name and (name == pkg or name.startswith(pkg + ".")):
            target = _resolve(name, mods)
            if target and target != mod:
                out.append((target, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base_parts = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                # `from pkg.x import y`: y may be a submodule (pkg.x.y) or a name defined in pkg.x
                sub = f"{base}.{a.name}"
                add(sub if a.name != "*" and sub in mods else base, node.lineno)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            add(node.args[0].value, node.lineno)
    return out


def edges(root: Path) -> tuple[dict[str, Path], list[Edge]]:
    mods = discover(root)
    base = root.parent
    out = []
    for mod, path in mods.items():
        for dst, line in imports_of(mod, path, mods):
            out.append(Edge(mod, dst, f"{path.relative_to(base).as_posix()}:{line}"))
    return mods, out


def area(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_problems(root: Path) -> list[str]:
    """An upward import, or a module outside the layer table, as one line each."""
    mods, es = edges(root)
    problems = [f"{mods[m].relative_to(root.parent).as_posix()}: {area(m)!r} is in no layer of LAYERS"
                for m in mods if area(m) not in LAYER_OF]
    for e in es:
        a, b = LAYER_OF.get(area(e.src)), LAYER_OF.get(area(e.dst))
        if a is not None and b is not None and b > a:
            problems.append(f"{e.where}: {e.src} ({layer_name(a)}) imports {e.dst} ({layer_name(b)}), "
                            f"a higher layer")
    return problems


def cycles(root: Path) -> list[list[str]]:
    """One concrete cycle (a path ending where it started) per strongly connected group of modules."""
    _, es = edges(root)
    graph: dict[str, set[str]] = {}
    for e in es:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())

    # Tarjan's strongly connected components (iterative)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    out = []
    for group in groups:
        members = set(group)
        start = group[0]
        # shortest path start -> ... -> start inside the group (BFS)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [start]
        v = found
        while v is not None and v != start:
            path.append(v)
            v = prev.get(v)
        out.append([start, *reversed(path[1:]), start])
    return out


def _report(root: Path) -> str:
    lines = layer_problems(root)
    _, es = edges(root)
    where = {(e.src, e.dst): e.where for e in es}
    for cyc in cycles(root):
        hops = ", ".join(f"{a} -> {b} ({where[(a, b)]})" for a, b in zip(cyc, cyc[1:]))
        lines.append(f"import cycle {' -> '.join(cyc)}: {hops}")
    return "\n".join(lines)


def test_imports_follow_the_layers_and_form_no_cycle():
    assert ROOT.is_dir()
    report = _report(ROOT)
    order = " -> ".join("+".join(names) for names in LAYERS)
    assert not report, f"import layers (low -> high: {order}):\n{report}"


def test_the_checker_catches_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "abilities.py": "from doitray import records\n",
        "records.py": "import doitray\n",
        "data/__init__.py": "",
        "data/pipeline.py": "from ..models import presets\n"          # upward: data < models
                            "from . import recipes\n",
        "data/recipes.py": "def f():\n    from doitray.data.pipeline import run\n",   # cycle via a lazy import
        "models/__init__.py": "",
        "models/presets.py": "from doitray.data.recipes import Recipe\n",   # downward: fine
        "study/__init__.py": "",
        "study/a.py": "import importlib\nimportlib.import_module('doitray.study.b')\n",
        "study/b.py": "from .a import x\n",                        # same layer, but a cycle a <-> b
        "stray.py": "",                                            # not in the table
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)

    problems = layer_problems(pkg)
    assert any("doitray/data/pipeline.py:1: doitray.data.pipeline (data) imports doitray.models.presets (models)"
               in p for p in problems), problems
    assert any("'stray' is in no layer" in p for p in problems), problems
    assert len(problems) == 2, problems      # the downward and same-layer imports pass

    found = {tuple(c) for c in cycles(pkg)}
    assert ("doitray.data.pipeline", "doitray.data.recipes", "doitray.data.pipeline") in found, found
    assert ("doitray.study.a", "doitray.study.b", "doitray.study.a") in found, found
    assert len(found) == 2, found
    report = _report(pkg)
    assert "doitray/data/recipes.py:2" in report and "doitray/study/a.py:2" in report, report

    # the same tree with the upward import and the cycles removed is clean
    (pkg / "data/pipeline.py").write_text("from . import recipes\n")
    (pkg / "data/recipes.py").write_text("Recipe = dict\n")
    (pkg / "study/b.py").write_text("from doitray.data import recipes\n")
    (pkg / "stray.py").unlink()
    assert _report(pkg) == ""
