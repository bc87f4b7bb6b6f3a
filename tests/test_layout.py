"""The architecture, checked: layers import only downward, no import cycle, no matplotlib on import."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vae"
# each layer and the layers of the package it may import (cli.py and __init__ may import anything)
ALLOWED = {
    "models": {"models"},
    "infer": {"models", "infer"},
    "plots": {"models", "infer", "plots"},
    "workflow": {"models", "infer", "plots", "workflow"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every pyro_vae module ``path`` imports, at the top or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pyro_vae"):
                modules = [f"{target}.{alias.name}" for alias in node.names]
                found |= {m for m in modules if (PACKAGE.parent / (m.replace(".", "/") + ".py")).is_file()
                          or (PACKAGE.parent / m.replace(".", "/")).is_dir()} or {target}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pyro_vae")}
    return found - {name}


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("layer", ALLOWED)
def test_each_layer_imports_only_the_layers_below_it(layer):
    for module, targets in GRAPH.items():
        if module.split(".")[1:2] == [layer]:
            for target in targets:
                target_layer = target.split(".")[1] if target.count(".") else "pyro_vae"
                assert target_layer in ALLOWED[layer], f"{module} imports {target}"


def test_no_import_cycle():
    def strip(module):  # a package's __init__ re-exports its modules: follow the modules, not the package
        return {t for t in GRAPH.get(module, set()) if not (PACKAGE.parent / t.replace(".", "/")).is_dir()}

    state: dict[str, int] = {}

    def visit(module, path):
        state[module] = 1
        for target in strip(module):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


def test_importing_the_package_leaves_matplotlib_and_torchvision_alone():
    code = ("import sys, pyro_vae, pyro_vae.workflow.training, pyro_vae.workflow.experiments, pyro_vae.cli; "
            "print(sorted(m for m in ('matplotlib', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
