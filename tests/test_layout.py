"""The code's shape: three layers importing downwards only, no import cycle, short functions.

``python tests/test_layout.py`` prints the module graph, the longest functions and the lines per file.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILDING_BLOCKS = {"core", "core.config", "core.errors", "core.results", "core.io", "core.fs", "core.runtime",
                   "core.cluster",
                   "core.losses.registry"}  # the registry is a leaf table: it imports nothing from core
ONE_RUN = ("core.data", "core.models", "core.losses", "core.train", "core.eval")
STUDIES = ("core.study",)
ALIASES = {"core.evaluate", "core.ablate", "core.export"}  # entry points, thin re-exports
MAX_FUNCTION_LINES = 40


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "core").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def layer(module: str) -> int:
    if module in BUILDING_BLOCKS:
        return 0
    if module.startswith(tuple(p + "." for p in ONE_RUN)) or module in ONE_RUN:
        return 1
    if module.startswith(tuple(p + "." for p in STUDIES)) or module in STUDIES:
        return 2
    raise AssertionError(f"{module} belongs to no layer")


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of ``core`` imported anywhere in the file (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("core"))
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, known) - {m} for m, p in known.items()}


def code_lines(node: ast.AST, lines: list[str]) -> int:
    """Lines of a function that are neither blank, comments nor its docstring."""
    body = getattr(node, "body", [])
    doc = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = set(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i in range(node.lineno, node.end_lineno + 1)
               if i not in doc and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#"))


def function_lengths() -> list[tuple[int, str]]:
    out = []
    for name, path in modules().items():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((code_lines(node, text.splitlines()), f"{name}.{node.name}"))
    return sorted(out, reverse=True)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
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
                out.append(sorted(component))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_layers_import_only_downwards():
    bad = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})" for m, deps in graph().items()
           if m not in ALIASES for d in deps if layer(d) > layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_loss_registry_is_a_leaf():
    assert graph()["core.losses.registry"] == set()
    assert not any(d in ("core.config",) for d in set().union(*(graph()[m] for m in graph()
                                                               if m.startswith("core.losses"))))


def test_functions_are_short():
    long = [f"{name}: {n} code lines" for n, name in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_old_entry_points_still_run():
    import subprocess

    modules = ("core.train", "core.evaluate", "core.eval", "core.ablate", "core.data.shard", "core.export")
    # side by side: each one imports torch and Ray
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in modules}
    for module, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "usage" in (stdout + stderr).lower(), (module, stderr[-500:])


if __name__ == "__main__":
    g = graph()
    for name in ("building blocks", "one run", "studies"):
        print(f"\n{name}:")
        for m in sorted(x for x in g if x not in ALIASES and layer(x) == ("building blocks", "one run",
                                                                           "studies").index(name)):
            print(f"  {m:30s} -> {', '.join(sorted(g[m])) or '-'}")
    print("\nlongest functions (code lines):")
    for n, f in function_lengths()[:10]:
        print(f"  {n:4d} {f}")
    print("\nlines per file:")
    for m, p in sorted(modules().items(), key=lambda kv: -len(kv[1].read_text().splitlines()))[:15]:
        print(f"  {len(p.read_text().splitlines()):4d} {p.relative_to(REPO)}")
