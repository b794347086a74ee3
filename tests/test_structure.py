"""The package layout: no import cycles between hqgnn modules, lazy (function-level) imports included."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "hqgnn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of ``if TYPE_CHECKING:`` (annotation-only imports never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_graph() -> dict[str, set[str]]:
    """hqgnn module -> the hqgnn modules it imports anywhere in its body (top level or inside functions).

    ``from . import x`` counts as importing the submodule x when x is one; a submodule's implicit
    import of its parent package is not an edge (Python runs the parent first, then the child).
    """
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for a in node.names:
                    sub = f"{prefix}.{a.name}"
                    targets.append(sub if sub in mods else prefix)
            for t in targets:
                while t and t not in mods and "." in t:  # "import a.b.c": the deepest module that exists
                    t = t.rpartition(".")[0]
                if t in mods and t != mod and t.startswith("hqgnn"):
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_all_modules_import_in_one_fresh_interpreter():
    mods = sorted(m for m in _modules() if not m.startswith("hqgnn.serve") and not m.endswith("__main__"))
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    res = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]


def test_constructing_a_trainer_leaves_the_global_rng_alone():
    import torch

    from hqgnn.config import RunConfig
    from hqgnn.data import load_dataset
    from hqgnn.train import Trainer

    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items = 60, 40
    cfg.model.dim, cfg.train.device = 8, "cpu"
    data = load_dataset(cfg.data)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = Trainer(cfg, data, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    b = Trainer(cfg, data, progress=False)  # the init is still seeded by train.seed
    assert torch.equal(a.model.encoder.embedding.weight, b.model.encoder.embedding.weight)


def test_no_test_hooks_in_the_package():
    """Fault injection for the distributed tests lives in tests/fault_site, not in the training loop."""
    for path in PKG.rglob("*.py"):
        assert "HQGNN_TEST_" not in path.read_text(), path
