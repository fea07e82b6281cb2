"""The package's modules use one another's public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [*(ROOT / "randomizer").rglob("*.py"), ROOT / "cli.py", *(ROOT / "benchmarks").rglob("*.py")]
)


def _private_uses(tree: ast.Module) -> list[str]:
    """``from randomizer.x import _name`` and ``module._name`` on an imported randomizer module."""
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("randomizer"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("randomizer"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    assert _private_uses(ast.parse(path.read_text(encoding="utf-8"))) == []


def test_the_check_finds_private_names() -> None:
    tree = ast.parse(
        "from randomizer.store import _alembic_config\n"
        "from randomizer import audit\n"
        "audit._rows(None)\n"
    )
    assert _private_uses(tree) == [
        "line 1: from randomizer.store import _alembic_config",
        "line 3: audit._rows",
    ]
