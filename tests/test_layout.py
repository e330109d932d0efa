"""The code's shape: layers importing downwards only, no import cycle, no hidden import, short functions.

Each module of ``core`` belongs to one tier (``TIERS``) and may import modules of its own tier or of
the tiers below it. Two checks, because each sees what the other cannot:

- static: every import statement of every module, those inside functions included, and every
  ``importlib.import_module("core....")`` with a literal name;
- at run time: one fresh interpreter imports the tiers from the bottom up and, after each tier, looks
  at what ``sys.modules`` holds: a module of a higher tier (however it got there: a package's
  ``__init__``, a computed ``import_module``) fails, and so do torch and Ray after the building blocks.

A module-level ``__getattr__`` (a lazy import) and a computed ``import_module`` outside a package's
discovery of its own modules are refused outright: they hide edges from both checks (a computed import
of another library's module says so on its line: ``# external module``).

``python tests/test_layout.py`` prints the module graph by tier, the longest functions and the lines
per file.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
Tiers = list[tuple[str, tuple[str, ...]]]
TIERS: Tiers = [  # (tier, the modules or packages in it), bottom first
    ("building blocks", ("core", "core.config", "core.config_loader", "core.errors", "core.results", "core.io",
                         "core.fs", "core.registry", "core.metrics")),
    # the Ray adapter: every ray.init, and the private Ray API the platform leans on, behind one module
    ("the Ray adapter", ("core.runtime",)),
    ("one run: data, models, losses, the run directory", ("core.data", "core.models", "core.losses", "core.runs")),
    ("one run: evaluation", ("core.eval",)),
    ("one run: training", ("core.train",)),
    ("studies", ("core.study",)),
    ("tooling", ("core.tools",)),
    ("entry points", ("core.evaluate", "core.ablate", "core.export")),  # thin re-exports of the real modules
]
NOT_BELOW_BLOCKS = ("torch", "torchvision", "ray")  # the building blocks never load them
MAX_FUNCTION_LINES = 40


def modules(root: Path = REPO, package: str = "core") -> dict[str, Path]:
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def tier(module: str, tiers: Tiers = TIERS) -> int:
    """The tier of ``module``: the one naming it or its closest enclosing package."""
    best, depth = None, -1
    for i, (_, members) in enumerate(tiers):
        for m in members:
            if (module == m or module.startswith(m + ".")) and m.count(".") > depth:
                best, depth = i, m.count(".")
    if best is None:
        raise AssertionError(f"{module} belongs to no tier")
    return best


def _literal_import(node: ast.Call) -> str | None:
    """The module a call ``importlib.import_module("x.y")`` names, when it is a literal."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return None


def imports(path: Path, known: dict[str, Path], package: str = "core") -> set[str]:
    """Modules of ``package`` a file imports anywhere (inside functions too; literal ``import_module``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.Call) and (target := _literal_import(node)):
            found.add(target)
    return {m for m in found if m in known}


def graph(root: Path = REPO, package: str = "core") -> dict[str, set[str]]:
    known = modules(root, package)
    return {m: imports(p, known, package) - {m} for m, p in known.items()}


def upward_edges(g: dict[str, set[str]], tiers: Tiers = TIERS) -> list[str]:
    names = [t for t, _ in tiers]
    return [f"{m} ({names[tier(m, tiers)]}) imports {d} ({names[tier(d, tiers)]})"
            for m, deps in sorted(g.items()) for d in sorted(deps) if tier(d, tiers) > tier(m, tiers)]


def _discovers_own_modules(node: ast.Call) -> bool:
    """``import_module(f"{__name__}.{name}")``: a package importing its own modules (plugin discovery)."""
    arg = node.args[0] if node.args else None
    return isinstance(arg, ast.JoinedStr) and bool(arg.values) and isinstance(arg.values[0], ast.FormattedValue) \
        and getattr(arg.values[0].value, "id", None) == "__name__"


def hidden_imports(root: Path = REPO, package: str = "core") -> list[str]:
    """Module-level ``__getattr__`` hooks and computed ``import_module`` calls: imports no check can see."""
    bad = []
    for name, path in modules(root, package).items():
        text = path.read_text()
        tree, lines = ast.parse(text), text.splitlines()
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            bad.append(f"{name}: a module-level __getattr__ (a lazy import)")
        for node in ast.walk(tree):
            func = getattr(node, "func", None)
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if isinstance(node, ast.Call) and called in ("import_module", "__import__") \
                    and _literal_import(node) is None and not _discovers_own_modules(node) \
                    and "# external module" not in lines[node.lineno - 1]:
                bad.append(f"{name}: a computed {called}(...) at line {node.lineno}")
    return bad


_PROBE = """
import importlib, json, sys
tier_of, forbidden, count = json.loads(sys.argv[1])
bad = []
for i in range(count):
    for m in sorted(m for m, t in tier_of.items() if t == i):
        importlib.import_module(m)
    loaded = set(sys.modules)
    bad += [f"after importing tier {i}, {m} (tier {t}) is loaded" for m, t in sorted(tier_of.items())
            if m in loaded and t > i]
    if i == 0:
        bad += [f"the building blocks load {x}" for x in forbidden if x in loaded]
print(json.dumps(bad))
"""


def runtime_upward(root: Path = REPO, package: str = "core", tiers: Tiers = TIERS,
                   forbidden: tuple[str, ...] = NOT_BELOW_BLOCKS) -> list[str]:
    """Import the tiers bottom up in a fresh interpreter; what a tier's imports loaded from above it."""
    tier_of = {m: tier(m, tiers) for m in modules(root, package) if not m.endswith("__main__")}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([tier_of, list(forbidden), len(tiers)])],
                         cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


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


# -- the checker on a package made to break it ------------------------------------------------------

def _fake_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in {"fake/__init__.py": "", "fake/train/__init__.py": "", "fake/train/loop.py": "X = 1\n",
                      **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


FAKE_TIERS: Tiers = [("blocks", ("fake", "fake.config", "fake.io")), ("train", ("fake.train",))]


def test_the_checker_fails_on_an_upward_import_inside_a_function(tmp_path):
    _fake_package(tmp_path, {"fake/config.py": "def f():\n    from fake.train.loop import X\n    return X\n",
                             "fake/io.py": "import fake.config\n"})
    g = graph(tmp_path, "fake")
    assert upward_edges(g, FAKE_TIERS) == ["fake.config (blocks) imports fake.train.loop (train)"]
    assert runtime_upward(tmp_path, "fake", FAKE_TIERS) == []  # not run at import: only the static check sees it


def test_the_checker_fails_on_an_upward_import_it_can_only_see_at_run_time(tmp_path):
    _fake_package(tmp_path, {"fake/config.py": "import importlib\nimportlib.import_module('fake.' + 'train.loop')\n",
                             "fake/io.py": "def __getattr__(name):\n    import fake.train.loop\n"})
    # the computed name is invisible to the AST (the lazy hook's import is not)
    assert upward_edges(graph(tmp_path, "fake"), FAKE_TIERS) == ["fake.io (blocks) imports fake.train.loop (train)"]
    assert runtime_upward(tmp_path, "fake", FAKE_TIERS) == ["after importing tier 0, fake.train (tier 1) is loaded",
                                                            "after importing tier 0, fake.train.loop (tier 1) is loaded"]
    assert hidden_imports(tmp_path, "fake") == ["fake.config: a computed import_module(...) at line 2",
                                                "fake.io: a module-level __getattr__ (a lazy import)"]


def test_the_checker_fails_when_the_building_blocks_load_torch(tmp_path):
    _fake_package(tmp_path, {"fake/config.py": "import json\n", "fake/io.py": "import torch\n"})
    assert runtime_upward(tmp_path, "fake", FAKE_TIERS) == ["the building blocks load torch"]


# -- the platform -----------------------------------------------------------------------------------

def test_layers_import_only_downwards():
    bad = upward_edges(graph())
    assert not bad, "\n".join(bad)


def test_layers_import_only_downwards_at_run_time():
    """The real transitive import graph: no tier loads a module above it, the building blocks load no
    torch and no Ray (``python -c 'import core.config'`` works without them)."""
    bad = runtime_upward()
    assert not bad, "\n".join(bad)


def test_no_hidden_imports():
    bad = hidden_imports()
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_every_module_has_a_tier():
    for m in modules():
        tier(m)


def test_functions_are_short():
    long = [f"{name}: {n} code lines" for n, name in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_entry_points_run():
    modules = ("core.train", "core.eval", "core.study.ablate", "core.data.shard", "core.export", "core.tools.cluster",
               "core.evaluate", "core.ablate")
    # side by side: each one imports torch and Ray
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for m in modules}
    for module, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "usage" in (stdout + stderr).lower(), (module, stderr[-500:])


if __name__ == "__main__":
    g = graph()
    for i, (name, _) in enumerate(TIERS):
        print(f"\n{name}:")
        for m in sorted(x for x in g if tier(x) == i):
            print(f"  {m:30s} -> {', '.join(sorted(g[m])) or '-'}")
    print("\nlongest functions (code lines):")
    for n, f in function_lengths()[:10]:
        print(f"  {n:4d} {f}")
    print("\nlines per file:")
    for m, p in sorted(modules().items(), key=lambda kv: -len(kv[1].read_text().splitlines()))[:15]:
        print(f"  {len(p.read_text().splitlines()):4d} {p.relative_to(REPO)}")
