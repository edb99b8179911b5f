"""The package's import layers, read from the folder layout and docs/ARCHITECTURE.md's table.

Every import points down, no cycles, a package ``__init__`` imports only its own folder, and inference loads
neither Lightning nor torchmetrics. The imports are read with ``ast`` from the source, function-local ones
included, so an import hidden inside a function to dodge a cycle counts like any other.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ipmn_lightning.phases import PHASES

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ipmn_lightning"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
#: Layers that must not import each other although one is listed after the other.
SIBLINGS = {frozenset({"inference", "lightning"}), frozenset({"inference", "training"})}


def read_layer_table(text: str) -> dict[str, tuple[int, str]]:
    """Top-level folder -> (rank, layer), from the rows between the ``layers`` markers of ARCHITECTURE.md."""
    block = text.split("<!-- layers: begin -->")[1].split("<!-- layers: end -->")[0]
    folders: dict[str, tuple[int, str]] = {}
    for row in block.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        for folder in re.findall(r"`([a-z_]+)/`", cells[2]):
            assert folder not in folders, f"{folder}/ is in two layers of {ARCHITECTURE}"
            folders[folder] = (int(cells[0]), cells[1])
    return folders


FOLDERS = read_layer_table(ARCHITECTURE.read_text())
RANK = {layer: rank for rank, layer in FOLDERS.values()} | {"base": 1, "console": max(r for r, _ in FOLDERS.values())}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module is the layer of its top-level folder (the root ``__init__`` is base)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] == "__main__":
        return "console"
    assert parts[1] in FOLDERS, f"{module}: ipmn_lightning/{parts[1]} is in no layer of {ARCHITECTURE}'s table"
    return FOLDERS[parts[1]][1]


@functools.cache
def package_imports() -> dict[str, set[str]]:
    """Module -> the ``ipmn_lightning`` modules it imports (anywhere in its source); read once per session."""
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


def test_the_table_and_the_folders_agree():
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    loose = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"modules outside any layer folder: {sorted(loose)}; move them into a folder of the table"
    assert on_disk == set(FOLDERS), (
        f"folders not in {ARCHITECTURE.name}: {sorted(on_disk - set(FOLDERS))}; "
        f"in the table but missing: {sorted(set(FOLDERS) - on_disk)}"
    )


def test_the_table_reader_sees_a_folder_in_a_wrong_row():
    """The check above cannot pass on a table it does not read: a made-up table moves `nets/` up a layer."""
    table = read_layer_table(
        "<!-- layers: begin -->\n|1|base|`core/`, `nets/`|x|\n|2|bottom|`data/`|y|\n<!-- layers: end -->"
    )
    assert table == {"core": (1, "base"), "nets": (1, "base"), "data": (2, "bottom")}


def test_every_import_points_down():
    wrong = []
    for source, targets in package_imports().items():
        for target in targets:
            a, b = layer_of(source), layer_of(target)
            if RANK[b] > RANK[a] or frozenset({a, b}) in SIBLINGS:
                wrong.append(f"{source} ({a}) imports {target} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_a_package_init_imports_only_its_own_folder():
    """Re-exports stay inside the folder, so importing a bottom module never runs a higher layer's code."""
    wrong = []
    for init in PACKAGE.rglob("__init__.py"):
        name = module_name(init)
        if name == "ipmn_lightning":
            continue
        wrong += [f"{name} imports {t}" for t in package_imports()[name] if not t.startswith(name + ".")]
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
    importers = {
        s for s, targets in package_imports().items() if any(t.startswith("ipmn_lightning.console") for t in targets)
    }
    assert importers <= {"ipmn_lightning.__main__", *(m for m in importers if m.startswith("ipmn_lightning.console"))}


#: Every module of the inference layer's folders (the role commands, the API, the service).
INFERENCE = sorted(
    module_name(p)
    for folder, (_, layer) in FOLDERS.items()
    if layer == "inference"
    for p in (PACKAGE / folder).glob("*.py")
)
HEAVY = ("pytorch_lightning", "lightning", "torchmetrics")


def test_inference_imports_neither_lightning_nor_torchmetrics():
    """In one fresh process, import each inference module in turn; a heavy package is blamed on the first import."""
    code = f"""
import importlib, json, sys
blamed = {{}}
for name in {INFERENCE!r} + ["ipmn_lightning"]:
    module = importlib.import_module(name)
    if name == "ipmn_lightning":
        module.IPMN  # the facade, imported on first use
    for heavy in {HEAVY!r}:
        if heavy in sys.modules and heavy not in blamed:
            blamed[heavy] = name
print(json.dumps(blamed))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(INFERENCE) >= 10 and json.loads(result.stdout) == {}, f"loaded by: {result.stdout}"


def test_one_name_per_phase():
    """The registry's key is the module's ``phase`` tag, its file name and its config files' name."""
    for key, phase in PHASES.items():
        module, _, name = phase.module.rpartition(".")
        assert getattr(importlib.import_module(module), name).phase == key and module.endswith(f".{key}")
        assert (PACKAGE.parent / phase.config).is_file() and (PACKAGE.parent / f"configs/demo/{key}.yaml").is_file()
