"""The layering of the pack, read from the import statements of every file.

    nodes/  ->  comfy_lumina_mgpt/ (the engine)  and  lumina_world's pure modules
    lumina_tools/  ->  lumina_world/  ->  comfy_lumina_mgpt/

- the engine imports nothing of ComfyUI, the world, the tools or the nodes: it runs from scripts alone;
- the world imports neither the tools nor the nodes; the modules the nodes load (scene, render, analyser,
  folder_dataset and the package itself) import nothing outside ``lumina_world``, because inside ComfyUI the
  pack's packages are reached only by relative imports;
- the tools import no ComfyUI module (they talk to a server over HTTP) and no node;
- the nodes import the engine and those pure world modules, never the tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMFYUI = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "nodes"}
PACKAGES = ("comfy_lumina_mgpt", "lumina_world", "lumina_tools", "nodes")
PURE_WORLD = {"lumina_world", "lumina_world.scene", "lumina_world.render", "lumina_world.analyser",
              "lumina_world.folder_dataset"}


def imports_of(path: Path) -> set[str]:
    """Dotted names ``path`` imports, relative imports resolved against its package; names under the pack's
    own packages are returned in full (``comfy_lumina_mgpt.atomic``), others by their top-level name."""
    package = path.parent.relative_to(ROOT).as_posix().replace("/", ".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # from . import a, b: each is a module of the package
                    found.update(f"{target}.{alias.name}" if target else alias.name for alias in node.names)
                    continue
            else:
                target = node.module
            found.add(target)
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in PACKAGES[:3]}


def roots(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("path", files("comfy_lumina_mgpt"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_engine_imports_only_itself_and_libraries(path):
    names = imports_of(path)
    assert not roots(names) & COMFYUI, f"{path} imports ComfyUI; move that into nodes/"
    upward = {n for n in ours(names) if not n.startswith("comfy_lumina_mgpt")}
    assert not upward, f"{path} imports {sorted(upward)}: the engine may not depend on the lab or the tools"


@pytest.mark.parametrize("path", files("lumina_world"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_world_imports_the_engine_only_where_nodes_never_look(path):
    names = imports_of(path)
    assert not roots(names) & (COMFYUI | {"lumina_tools"}), f"{path} imports ComfyUI or the tools"
    module = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
    if module in PURE_WORLD:
        outside = {n for n in ours(names) if not n.startswith("lumina_world")}
        assert not outside, f"{path} is loaded by the nodes inside ComfyUI and may not import {sorted(outside)}"


@pytest.mark.parametrize("path", files("lumina_tools"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_tools_import_no_comfyui_module(path):
    assert not roots(imports_of(path)) & COMFYUI - {"nodes"}


@pytest.mark.parametrize("path", files("nodes"), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_nodes_import_the_engine_and_the_pure_world_only(path):
    names = ours(imports_of(path))
    bad = {n for n in names if n.startswith("lumina_tools")
           or (n.startswith("lumina_world") and n not in PURE_WORLD)}
    assert not bad, f"{path} imports {sorted(bad)}"


def test_the_checker_resolves_relative_imports(tmp_path):
    assert imports_of(ROOT / "nodes" / "examples.py") >= {"comfy_lumina_mgpt.atomic",
                                                         "lumina_world.folder_dataset"}
    assert "comfy_lumina_mgpt.tasks" in imports_of(ROOT / "lumina_world" / "dataset.py")
    assert "lumina_world.scene" in imports_of(ROOT / "lumina_world" / "render.py")


def test_every_package_has_files():
    for package in PACKAGES:
        assert len(files(package)) > 3, package
