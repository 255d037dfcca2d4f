"""The engine package never imports ComfyUI: it must run from scripts and the CLI alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "comfy_lumina_mgpt"
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server"}


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(ENGINE.rglob("*.py")), ids=lambda p: str(p.relative_to(ENGINE)))
def test_engine_file_has_no_comfyui_import(path):
    bad = imported_roots(ast.parse(path.read_text(encoding="utf-8"))) & FORBIDDEN
    assert not bad, f"{path} imports {sorted(bad)}; move ComfyUI glue into nodes/"


def test_checker_catches_a_comfy_import():
    assert imported_roots(ast.parse("import folder_paths\nfrom comfy.utils import ProgressBar")) == {
        "folder_paths", "comfy"}


def test_engine_has_files():
    assert len(list(ENGINE.rglob("*.py"))) > 5
