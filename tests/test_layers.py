"""The package's import layers (docs/ARCHITECTURE.md): every import points down, no cycles, no Lightning in inference.

The imports are read with ``ast`` from the source, function-local ones included, so an import hidden inside a
function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from ipmn_lightning.phases import PHASES

PACKAGE = Path(__file__).resolve().parents[1] / "ipmn_lightning"

#: (layer, modules); a module may import its own layer and the layers listed before it. A name matches the
#: module itself and everything below it; the most specific name wins. Training and inference are siblings:
#: neither imports the other.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("ipmn_lightning", "ipmn_lightning.utils")),
    ("bottom", ("ipmn_lightning.nets", "ipmn_lightning.data", "ipmn_lightning.losses", "ipmn_lightning.metrics",
                "ipmn_lightning.distortions", "ipmn_lightning.faces.analysis", "ipmn_lightning.faces.swap",
                "ipmn_lightning.faces.privacy")),
    ("registry", ("ipmn_lightning.phases",)),
    ("lightning", ("ipmn_lightning.modules", "ipmn_lightning.callbacks", "ipmn_lightning.data.datamodule")),
    ("inference", ("ipmn_lightning.bundle", "ipmn_lightning.facade", "ipmn_lightning.roles")),
    ("training", ("ipmn_lightning.training",)),
    ("workflows", ("ipmn_lightning.pipeline", "ipmn_lightning.manifest", "ipmn_lightning.evaluation",
                   "ipmn_lightning.faces", "ipmn_lightning.faces.generate")),
    ("console", ("ipmn_lightning.cli", "ipmn_lightning.__main__")),
]  # fmt: skip
#: Layers that must not import each other although one is listed after the other.
SIBLINGS = {frozenset({"inference", "lightning"}), frozenset({"inference", "training"})}
RANK = {name: index for index, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} is in no layer: add it to LAYERS in {__file__} and to docs/ARCHITECTURE.md"
    return max(matches)[1]


def package_imports() -> dict[str, set[str]]:
    """Module -> the ``ipmn_lightning`` modules it imports (anywhere in its source)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        skipped = [n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
        if name == "ipmn_lightning":  # the root's __getattr__ imports the IPMN facade on first use, on purpose
            skipped += [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        lazy = {id(n) for s in skipped for n in ast.walk(s)}
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in lazy:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:  # `from pkg import module` imports pkg.module
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t.split(".")[0] == "ipmn_lightning" and t != name}
    return graph


def test_every_import_points_down():
    wrong = []
    for source, targets in package_imports().items():
        for target in targets:
            a, b = layer_of(source), layer_of(target)
            if RANK[b] > RANK[a] or frozenset({a, b}) in SIBLINGS:
                wrong.append(f"{source} ({a}) imports {target} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle():
    graph = package_imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_console_entry_is_imported_by_nothing():
    importers = {s for s, targets in package_imports().items() if "ipmn_lightning.cli" in targets}
    assert importers <= {"ipmn_lightning.__main__"}, importers


@pytest.mark.parametrize("module", ["ipmn_lightning.facade", "ipmn_lightning.roles", "ipmn_lightning.bundle"])
def test_inference_does_not_import_lightning(module):
    code = (
        f"import sys, {module}; import ipmn_lightning; ipmn_lightning.IPMN; print('pytorch_lightning' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_one_name_per_phase():
    """The registry's key is the module's ``phase`` tag, its file name and its config files' name."""
    for key, phase in PHASES.items():
        module, _, name = phase.module.rpartition(".")
        assert getattr(importlib.import_module(module), name).phase == key and module.endswith(f".{key}")
        assert (PACKAGE.parent / phase.config).is_file() and (PACKAGE.parent / f"configs/demo/{key}.yaml").is_file()
