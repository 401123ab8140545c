"""The runner's structure: no import cycles, results readable without the runner, one name per thing."""

import ast
import dataclasses
import inspect
import os
import subprocess
import sys

import pytest

import funrl
from funrl import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(funrl.__file__)))

#: funrl/nn/__init__.py ends by re-exporting funrl.nn.transformer, which uses nn.linear: a package and its
#: submodule, ordered so that it imports (outside the runner's scope; listed so that no new cycle joins it)
KNOWN_CYCLES = [{"funrl.nn", "funrl.nn.transformer"}]


def _modules() -> dict:
    """funrl's modules: dotted name -> path."""
    mods = {}
    for folder, _, files in os.walk(os.path.join(ROOT, "funrl")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _imports(name: str, path: str, mods: dict, top_level_only: bool = False) -> set:
    """The funrl modules ``name`` imports, at module level and (unless ``top_level_only``) inside functions."""

    def module_of(dotted):
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted

    tree = ast.parse(open(path).read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {module_of(a.name) for a in node.names if a.name.startswith("funrl")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("funrl"):
            for a in node.names:  # "from funrl import results" imports the module funrl.results
                full = f"{node.module}.{a.name}"
                out.add(full if full in mods else module_of(node.module))
    out.discard(name)
    return out


def _cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_through_imports_inside_functions():
    mods = _modules()
    # the root package imports its submodules only on attribute access, so "import funrl" is no edge back
    assert _imports("funrl", mods["funrl"], mods, top_level_only=True) == set()
    graph = {m: _imports(m, p, mods) - {"funrl"} for m, p in mods.items() if m != "funrl"}
    assert graph["funrl.plotting"] >= {"funrl.results"} and "funrl.runner" not in graph["funrl.plotting"]
    assert "funrl.runner" not in graph["funrl.evaluation"] | graph["funrl.results"] | graph["funrl.transfer"]
    cycles = _cycles(graph)
    assert all(c in KNOWN_CYCLES for c in cycles), cycles


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_plotting_evaluation_and_results_load_without_the_runner():
    code = ("import sys, funrl.plotting, funrl.evaluation, funrl.results, funrl.export; "
            "print(sorted(m for m in sys.modules if m in ('funrl.runner', 'funrl.cli')))")
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"


def test_settings_are_runs_arguments():
    # a new run() argument must reach _run: _Settings holds exactly run()'s arguments
    fields = [f.name for f in dataclasses.fields(runner._Settings)]
    params = [p for p in inspect.signature(funrl.run).parameters if p != "overrides"]
    assert fields == params + ["overrides"]
    assert list(runner._RUN_DEFAULTS) == params


def test_the_driver_has_one_name():
    """common.Runner (a name it shared with the module funrl.runner) is now only common.Driver."""
    from funrl.algorithms import common

    assert "Runner" not in common.__all__ and "Driver" in common.__all__
    assert not hasattr(common, "Runner")
