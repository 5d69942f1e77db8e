"""Structure, from the source's imports (AST only, nothing is run; imports inside
functions count too).

Modules: no import circle between modules; library modules never import the CLI;
search never imports the probe or a particular evaluator; the runtime never
imports the probe; ``import commtune`` stays cheap.

Packages import one way. The nodes of the package graph are the subpackages
``commtune.<sub>`` (``commtune.search``, ``commtune.probe``, ...), each
top-level module of ``commtune/`` on its own (``commtune.knobs``,
``commtune.api``, ...; ``commtune`` itself is the package's ``__init__``),
``simulators`` and ``search_spaces``. The graph has no strongly connected
component larger than one node, and every edge points down :data:`LAYERS`,
bottom first (imports within a layer are allowed, circles are not):

0. foundation: errors, units, limits, io, knobs, registry, stats, proc,
   host_load, extras, _callable, devices, cluster, profiles, data, and the
   ``search_spaces`` YAML;
1. ``commtune.models``: model profiles (the zoo, profile files, recording);
2. ``simulators`` and ``commtune.scenario``: the step model of one training step;
3. ``commtune.search``: the space grammar, samplers, study storage and the
   engines, which see an objective only through its interface; and
   ``commtune.sharding_checks`` (a sharded configuration against a model,
   cluster or space);
4. ``commtune.runtime`` (profiles applied to DDP, worker groups, the online
   AutoTuner on search's grammar and samplers), ``commtune.emulation`` (the
   emulated cluster), ``commtune.plots`` (figures from data);
5. ``commtune.probe`` (live measurement and calibration, on the runtime's workers
   and the emulated cluster) and ``commtune.exporters``;
6. ``commtune.evaluators``: knobs in, metrics out (the simulator, live DDP);
7. orchestration: ``commtune.tuning`` (evaluator + space + engine -> report +
   profile) and ``commtune.validation`` (live vs simulated);
8. ``commtune.api`` and ``commtune.cli``; 9. ``commtune`` and ``commtune.__main__``.
"""
from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("commtune", "simulators", "search_spaces")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a dotted import) refers to."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


@functools.lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """module -> modules it imports (at any level, also inside functions)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join([*pkg, base] if base else pkg)
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            for n in names:
                target = _resolve(n, mods)
                if target and target != mod and not mod.startswith(target + "."):
                    graph[mod].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path a -> ... -> a), or None. A package's ``__init__``
    importing its own submodules is not a cycle of interest and is skipped."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if m.startswith(t + ".") or t.startswith(m + "."):
                continue  # parent package <-> its submodule
            if color.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in color:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        color[m] = 2
        return None

    for m in sorted(graph):
        if m not in color:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def package_of(module: str) -> str:
    """The package-graph node of ``module``: ``commtune.<sub>`` for a subpackage's
    modules, the module itself for a top-level module of ``commtune/``, else its
    top-level package (``simulators``, ``search_spaces``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "commtune" else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the module imports behind that edge ("a.b -> c.d")."""
    out: dict[str, dict[str, list[str]]] = {package_of(m): {} for m in graph}
    for mod, targets in sorted(graph.items()):
        for t in sorted(targets):
            a, b = package_of(mod), package_of(t)
            if a != b:
                out[a].setdefault(b, []).append(f"{mod} -> {t}")
    return out


def strongly_connected(edges: dict[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``edges`` (node -> successors), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
            out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def package_cycles(pkg_graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """One line per package cycle (an SCC larger than one node), with every edge inside it
    and the module imports behind each edge."""
    lines = []
    for component in strongly_connected(pkg_graph):
        if len(component) > 1:
            inside = [f"  {a} -> {b}: {'; '.join(pkg_graph[a][b])}" for a in component
                      for b in sorted(pkg_graph[a]) if b in component]
            lines.append("packages import each other: " + ", ".join(component) + "\n" + "\n".join(inside))
    return lines


#: the package graph's layers, bottom first (module docstring); a package imports its own layer or lower ones
LAYERS: tuple[tuple[str, ...], ...] = (
    ("commtune.errors", "commtune.units", "commtune.limits", "commtune.io", "commtune.knobs", "commtune.registry",
     "commtune.stats", "commtune.proc", "commtune.host_load", "commtune.extras", "commtune._callable",
     "commtune.devices", "commtune.cluster", "commtune.profiles", "commtune.data", "search_spaces"),
    ("commtune.models",),
    ("simulators", "commtune.scenario"),
    ("commtune.search", "commtune.sharding_checks"),
    ("commtune.runtime", "commtune.emulation", "commtune.plots"),
    ("commtune.probe", "commtune.exporters"),
    ("commtune.evaluators",),
    ("commtune.tuning", "commtune.validation"),
    ("commtune.api", "commtune.cli"),
    ("commtune", "commtune.__main__"),
)


def test_no_package_cycle():
    cycles = package_cycles(package_graph(import_graph()))
    assert not cycles, "\n".join(cycles)


def test_every_package_sits_in_one_layer_and_imports_down():
    level = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    pkg_graph = package_graph(import_graph())
    unplaced = sorted(set(pkg_graph) - set(level))
    assert not unplaced, f"packages in no layer (add them to LAYERS and the module docstring): {unplaced}"
    upward = [f"{a} (layer {level[a]}) -> {b} (layer {level[b]}): {'; '.join(mods)}"
              for a, targets in sorted(pkg_graph.items()) for b, mods in sorted(targets.items()) if level[b] > level[a]]
    assert not upward, "imports up the layers:\n" + "\n".join(upward)


def test_package_cycle_finder_finds_a_planted_cycle():
    planted = {"x.a": {"y.b"}, "y.b": {"z.c"}, "z.c": {"x.d"}, "x.d": set(), "w": {"x.a"}}
    nodes = {m: m.split(".")[0] for m in planted}
    pkg_graph: dict[str, dict[str, list[str]]] = {p: {} for p in nodes.values()}
    for m, ts in planted.items():
        for t in ts:
            pkg_graph[nodes[m]].setdefault(nodes[t], []).append(f"{m} -> {t}")
    (line,) = package_cycles(pkg_graph)
    assert line.startswith("packages import each other: x, y, z") and "z -> x: z.c -> x.d" in line
    assert package_cycles({"a": {"b": ["a -> b"]}, "b": {}}) == []
    assert package_of("commtune.search.space") == "commtune.search" and package_of("commtune.knobs") == "commtune.knobs"
    assert package_of("simulators.system") == "simulators" and package_of("commtune") == "commtune"


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_library_never_imports_the_cli():
    offenders = [f"{m} -> {t}" for m, ts in import_graph().items() if not m.startswith("commtune.cli")
                 and m not in ("commtune.__main__",) for t in ts if t == "commtune.cli" or t.startswith("commtune.cli.")]
    assert not offenders, offenders


def test_search_never_imports_probe_or_a_particular_evaluator():
    g = import_graph()
    offenders = [f"{m} -> {t}" for m, ts in g.items() if m.startswith("commtune.search")
                 for t in ts if t.startswith(("commtune.probe", "commtune.evaluators.live", "commtune.evaluators.simulator"))]
    assert not offenders, offenders


def test_runtime_never_imports_probe():
    """The probe uses the runtime (DDP plan, worker loop), never the reverse: launchers live in the probe."""
    offenders = [f"{m} -> {t}" for m, ts in import_graph().items() if m.startswith("commtune.runtime")
                 for t in ts if t == "commtune.probe" or t.startswith("commtune.probe.")]
    assert not offenders, offenders


def test_import_commtune_is_cheap():
    code = ("import sys, commtune; heavy = [m for m in ('torch', 'optuna', 'ray', 'matplotlib', 'scipy') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import commtune pulled in {out}"
