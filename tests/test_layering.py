"""The package layers import only downward, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["verl.utils", "verl.protocol", "verl.single_controller", "verl.workers", "verl.eval", "verl.trainer"]


def layer_of(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for d in ("verl", "RS", "data") for p in (ROOT / d).rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules} for name, path in modules.items()}


def test_verl_layers_import_only_downward():
    bad = []
    for module, targets in project_graph().items():
        if not module.startswith("verl"):
            continue
        for target in targets:
            if target.startswith(("RS", "data")):
                bad.append(f"{module} -> {target} (verl must not import RS/ or data/)")
            mine, theirs = layer_of(module), layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module} -> {target} (upward: {LAYERS[mine]} below {LAYERS[theirs]})")
    assert not bad, "\n".join(sorted(bad))


def test_no_two_modules_import_each_other():
    graph = project_graph()
    cycles = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets if a in graph.get(b, ())})
    cycles = [
        c for c in cycles if c[0] != c[1] and not c[1].startswith(c[0] + ".") and not c[0].startswith(c[1] + ".")
    ]
    assert not cycles, cycles
