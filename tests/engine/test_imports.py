"""The engine imports only the standard library, anyio and offerflow.errors.

See docs/architecture.md, "Layers".
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import offerflow.engine

ENGINE = Path(offerflow.engine.__file__).parent


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def allowed(module: str) -> bool:
    top = module.partition(".")[0]
    return (
        top in sys.stdlib_module_names
        or top == "anyio"
        or module == "offerflow.errors"
        or module.startswith("offerflow.engine")
    )


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda path: path.name)
def test_an_engine_module_imports_only_the_standard_library_anyio_and_errors(path: Path) -> None:
    assert sorted(m for m in imported_modules(path) if not allowed(m)) == []


def test_the_check_itself_refuses_a_foreign_import() -> None:
    assert not allowed("offerflow.pipeline")
    assert not allowed("polars")
