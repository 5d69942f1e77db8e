"""Structure: no import circles between modules, library modules never import the CLI,
search never imports the probe, the runtime never imports the probe, ``import commtune`` stays cheap. AST only (nothing is run)."""
from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("commtune", "simulators")


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
