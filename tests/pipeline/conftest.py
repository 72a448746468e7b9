"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from offerflow.pipeline.inputs.reader import DEFAULT_COLUMNS, parse_as_of

#: the default partner's header line
HEADER = ",".join(DEFAULT_COLUMNS.values())

WriteCsv = Callable[..., Path]


@pytest.fixture
def as_of() -> datetime:
    """The as-of of most tests: the end of 2024-01-10 UTC."""
    return parse_as_of("2024-01-10")


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    """Write data lines (CSV text) under the default header; returns the file's path."""

    def write(*lines: str, header: str = HEADER, name: str = "transactions.csv") -> Path:
        path = tmp_path / name
        path.write_text("".join(f"{line}\n" for line in (header, *lines)), encoding="utf-8")
        return path

    return write
