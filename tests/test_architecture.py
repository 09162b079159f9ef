"""The package's shape: imports flow one way (no cycle, module- or function-level), no module over 500 lines,
and the Pyserini adapter stays an adapter (the core never imports it)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffret_pyserini"
MAX_LINES = 500


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its code (edges into a package __init__ are left
    out: importing a submodule runs its package's __init__, which would otherwise count as a cycle)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    packages = {m for m, p in files.items() if p.name == "__init__.py"}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    b = base
                    for _ in range(node.level - 1):
                        b = b.rpartition(".")[0]
                    target = f"{b}.{target}" if target else b
                targets = [target, *(f"{target}.{a.name}" for a in node.names)]
            else:
                continue
            for t in targets:
                r = resolve(t) if t.split(".")[0] == PACKAGE.name else None
                if r and r != mod and r not in packages:
                    graph[mod].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
        for w in graph[v]:
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


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert len(graph) > 40  # the walk really saw the package
    assert "diffret_pyserini.index.lucene" in graph["diffret_pyserini.train.mine"]  # function-level imports count
    assert cycles(graph) == []


def test_no_module_over_500_lines():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_the_core_never_imports_the_pyserini_adapter():
    """Only the plugin (Pyserini's class maps) and the benchmark (which measures the adapter's path) reach the
    adapter; the CLIs, pipeline and training get their encoder from the core (model.spec)."""
    graph = import_graph()
    importers = {m for m, targets in graph.items() if "diffret_pyserini.encode.pyserini_encoders" in targets}
    assert {m for m in importers if not m.startswith("diffret_pyserini.bench.")} == {"diffret_pyserini.encode.plugin"}
    assert "diffret_pyserini.encode.plugin" not in graph["diffret_pyserini.encode.pyserini_encoders"]


# Low to high: a module may import its own layer and those below it, never one above. The shared modules serve
# every stage; the stages follow the data (text -> model -> index formats -> encode writes into them -> search
# over them -> eval of the runs); budget's selectors and train sit under the pipeline that calls both; the
# research tools (bench, sweep) sit on top; `startup` is the interpreter's start-up hook, above everything.
LAYERS = (
    ("atomic", "cli", "datasets", "fingerprint", "pyserini_java", "data"),
    ("model",),
    ("index",),
    ("encode",),
    ("search",),
    ("eval",),
    ("budget",),
    ("train",),
    ("pipeline",),
    ("bench",),
    ("sweep",),
    ("repro",),
    ("startup",),
)


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    for level, names in enumerate(LAYERS):
        if part in names:
            return level
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((m, t) for m, targets in graph.items() for t in targets
                  if m != PACKAGE.name and layer_of(t) > layer_of(m))


def test_the_layering_check_finds_a_planted_upward_import():
    graph = {"diffret_pyserini.model.encoder": {"diffret_pyserini.pipeline.stages", "diffret_pyserini.atomic"},
             "diffret_pyserini.pipeline.stages": {"diffret_pyserini.model.encoder"}}
    assert upward_imports(graph) == [("diffret_pyserini.model.encoder", "diffret_pyserini.pipeline.stages")]


def test_no_package_imports_one_above_it():
    graph = import_graph()
    assert upward_imports(graph) == []


def test_only_shared_modules_and_entry_points_at_the_top_level():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "atomic", "cli", "datasets", "fingerprint", "pyserini_java", "startup"]
    for package in (p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc, f"{package.name}/__init__.py says what it holds"
