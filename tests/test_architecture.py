"""The data flows one way (STYLE.md #11 and "data flowing back up"): trace -> engine -> results ->
report/CLI, with methods and policies below the engine.

(a) ``simcore.engine.*`` loads nothing of the report, the CLI, sweep, eval or the tracer;
(b) ``simcore.methods.*`` and ``simcore.policies.*`` load nothing of the replay driver, eval, the report
    or the CLI;
checked by importing each module in a fresh interpreter and reading ``sys.modules`` (what an import
really pulls in), and again statically over every import statement of the module, those inside
functions included (which run later, so ``sys.modules`` does not see them);
(c) no import cycle among simcore's modules: the graph of every ``import`` of simcore/**/*.py, at top
level and inside functions alike (parsed with ``ast``, nothing imported), is acyclic.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "simcore"

ENGINE_MUST_NOT_LOAD = (
    "simcore.report",
    "simcore.report_text",
    "simcore.cli",
    "simcore.sweep",
    "simcore.eval",
    "simcore.trace.tracer",
)
PLUGINS_MUST_NOT_LOAD = ("simcore.engine.replay", "simcore.eval", "simcore.report", "simcore.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _under(package: str) -> list[str]:
    return [m for m in MODULES if m == package or m.startswith(package + ".")]


def _is_in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# --- the static import graph ------------------------------------------------------------------------


def _resolve(name: str) -> str | None:
    """The simcore module an imported name belongs to (``simcore.engine.kernels.K`` -> the module)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (never run, so no edge)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph() -> dict[str, dict[str, int]]:
    """``graph[a][b]`` = the line of module a's first import of simcore module b, for every module of
    simcore/**/*.py; imports at top level and inside functions and classes alike."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_only(tree)
        edges = graph.setdefault(name, {})
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names]  # a submodule, or a name in base
            for t in targets:
                if t.split(".")[0] != "simcore":
                    continue
                target = _resolve(t)
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """A cycle of ``graph`` as [a, b, ..., a], or None if it is acyclic (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v):
        state[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def _describe(graph, chain) -> str:
    return (
        " -> ".join(f"{a} ({MODULES[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(chain, chain[1:]))
        + f" -> {chain[-1]}"
    )


def _reachable(graph, start) -> dict[str, list[str]]:
    """Every module reachable from ``start`` through imports, with one import chain to it."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in sorted(graph.get(v, ())):
            if w not in chains:
                chains[w] = chains[v] + [w]
                todo.append(w)
    return chains


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_top_level_function_level_and_relative_imports(graph):
    assert "simcore.policies" in graph["simcore.engine.sim"]  # from simcore import policies
    assert "simcore.engine.kernels" in graph["simcore.engine.hooks"]  # from simcore.engine import kernels as K
    assert "simcore.results" in graph["simcore.engine.result"]  # inside a method
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None


def test_there_is_no_import_cycle_among_simcore_modules(graph):
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {_describe(graph, cycle)}"


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("simcore.engine", ENGINE_MUST_NOT_LOAD),
        ("simcore.methods", PLUGINS_MUST_NOT_LOAD),
        ("simcore.policies", PLUGINS_MUST_NOT_LOAD),
    ],
)
def test_no_import_statement_reaches_upwards_even_inside_functions(graph, package, forbidden):
    bad = []
    for module in _under(package):
        for target, chain in _reachable(graph, module).items():
            if _is_in(target, forbidden):
                bad.append(_describe(graph, chain))
    assert not bad, "imports that flow back up:\n" + "\n".join(sorted(bad))


# --- what an import really loads, in a fresh interpreter --------------------------------------------

LOADED = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[str]]:
    """For each module of engine, methods and policies: the simcore modules in ``sys.modules`` after
    importing it alone in a fresh interpreter (run side by side)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    names = _under("simcore.engine") + _under("simcore.methods") + _under("simcore.policies")

    def run(name):
        r = subprocess.run(
            [sys.executable, "-c", LOADED, name], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, f"python -c 'import {name}' failed:\n{r.stderr}"
        return name, [m for m in json.loads(r.stdout.splitlines()[-1]) if m.split(".")[0] == "simcore"]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(pool.map(run, names))


@pytest.mark.parametrize("module", _under("simcore.engine"))
def test_the_engine_loads_no_report_cli_sweep_eval_or_tracer(loaded, graph, module):
    bad = [m for m in loaded[module] if _is_in(m, ENGINE_MUST_NOT_LOAD)]
    chains = _reachable(graph, module)
    assert not bad, f"import {module} loads {bad}: " + "; ".join(
        _describe(graph, chains[m]) for m in bad if m in chains
    )


@pytest.mark.parametrize("module", _under("simcore.methods") + _under("simcore.policies"))
def test_methods_and_policies_load_no_replay_eval_report_or_cli(loaded, graph, module):
    bad = [m for m in loaded[module] if _is_in(m, PLUGINS_MUST_NOT_LOAD)]
    chains = _reachable(graph, module)
    assert not bad, f"import {module} loads {bad}: " + "; ".join(
        _describe(graph, chains[m]) for m in bad if m in chains
    )


def test_the_subprocess_imports_this_checkout(loaded):
    """The fresh interpreters import the simcore of this checkout (not another installed copy)."""
    r = subprocess.run(
        [sys.executable, "-c", "import simcore; print(simcore.__file__)"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    assert Path(r.stdout.strip()).resolve() == (PACKAGE / "__init__.py").resolve()
    assert "simcore.engine.sim" in loaded["simcore.engine.replay"]


# --- the documents show the code as it is -----------------------------------------------------------


def _top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_the_architecture_document_names_modules_and_functions_that_exist():
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for name in sorted(set(re.findall(r"simcore(?:\.[A-Za-z_]\w*)+", text))):
        module = _resolve(name)
        rest = name[len(module) + 1 :].split(".") if module and module != name else []
        if module is None or (rest and rest[0] not in _top_level_names(MODULES[module])):
            missing.append(name)
    assert not missing, f"docs/architecture.md names what the code does not have: {missing}"


def test_extending_shows_the_whole_sieve_file():
    text = (ROOT / "docs" / "extending.md").read_text()
    sieve = (PACKAGE / "policies" / "sieve.py").read_text()
    assert f"```python\n{sieve.rstrip()}\n```" in text, "docs/extending.md: copy simcore/policies/sieve.py again"
