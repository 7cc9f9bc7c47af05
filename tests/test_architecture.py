"""The house's rules, checked over the import graph of every module of the package:

- each stage is a subpackage, and imports point down the chain: a module may import its own stage, the
  stages below it, and the leaf helpers (``LEAVES``), never a stage above it;
- no import cycle between modules (imports inside functions count: a lazy import is still a dependency);
- the sampler never reaches into the packed-tree side (tree, kernels, dpo);
- no module is over 300 lines, and no function over 40 outside Triton kernels.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sport_fast"
# bottom to top; the entry points and the config sit above every stage
CHAIN = ("tools", "tasks", "model", "sampler", "sandbox", "agent", "llm", "judge", "data", "tree", "kernels",
         "warmstart", "dpo", "run")
TOP = "<top>"
LEAVES = {"sport_fast.backends", "sport_fast.run.durable", "sport_fast.data.bleu", "sport_fast._C"}
MAX_LINES, MAX_FUNCTION_LINES = 300, 40


def modules() -> dict[str, Path]:
    """Dotted name -> file, following the kernels link into the top-level kernels/ folder."""
    found = {}
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        for file in sorted(f for f in files if f.endswith(".py")):
            path = Path(folder) / file
            parts = path.relative_to(PACKAGE).with_suffix("").parts
            found[".".join(("sport_fast",) + (parts[:-1] if parts[-1] == "__init__" else parts))] = path
    return found


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in CHAIN) else TOP


def rank(module: str) -> int:
    s = stage(module)
    return len(CHAIN) if s == TOP else CHAIN.index(s)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (absolute or relative, anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            # `from package import submodule` imports the submodule, not (only) the package's own names
            targets = [t for t in subs if t in known] or [base]
            if len(targets) < len(subs):
                targets.append(base)
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("sport_fast"):
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found) | {"sport_fast._C"}
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_every_stage_is_a_subpackage_and_the_top_holds_only_entry_points(graph):
    top = sorted(m for m in graph if stage(m) == TOP and m != "sport_fast")
    assert set(CHAIN) <= {m.split(".")[1] for m in graph if m.count(".") >= 1}, "a stage of the chain is missing"
    assert len(top) <= 10, f"sport_fast/ holds {len(top)} modules at the top: {top}"


def test_imports_point_down_the_chain(graph):
    wrong = [f"{m} ({stage(m)}) imports {t} ({stage(t)})" for m, targets in graph.items() for t in targets
             if t not in LEAVES and t != "sport_fast" and rank(t) > rank(m)]
    assert not wrong, "imports reaching up the chain:\n" + "\n".join(sorted(wrong))


def test_leaf_helpers_import_nothing_of_the_package(graph):
    allowed = {"sport_fast", "sport_fast._C"}  # the package itself (lazy names) and the C extension, a leaf
    wrong = {m: sorted(graph[m] - allowed) for m in LEAVES if m in graph and graph[m] - allowed}
    assert not wrong, f"leaf helpers must stay leaves: {wrong}"


def test_the_sampler_does_not_reach_into_the_packed_tree_side(graph):
    wrong = [f"{m} -> {t}" for m, targets in graph.items() if stage(m) == "sampler" for t in targets
             if stage(t) in ("tree", "kernels", "dpo")]
    assert not wrong, wrong


def test_no_import_cycles(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_modules_and_functions_are_short():
    long_modules, long_functions = [], []
    for name, path in modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                triton = any("jit" in ast.unparse(d) for d in node.decorator_list)
                if length > MAX_FUNCTION_LINES and not triton:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert not long_modules, f"modules over {MAX_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"
