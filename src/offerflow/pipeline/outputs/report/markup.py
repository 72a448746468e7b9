"""The report's HTML: sections, tables and notes, every text escaped.

The page's few elements are written here once, so that no section builds HTML of its own and
no text reaches the page unescaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["clip", "escape", "note", "seconds", "section", "table"]


def section(id_: str, title: str, body: str) -> str:
    """A ``<section>`` of the page, with its id and heading."""
    return f'<section id="{id_}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table, numbers aligned right; no header row when ``header`` is all empty."""

    def cell(value: Any) -> str:
        text = str(value)
        numeric = all(_is_number(part) for part in text.split(" → "))
        return f'<td class="n">{escape(text)}</td>' if numeric else f"<td>{escape(text)}</td>"

    head = "".join(f"<th>{escape(h)}</th>" for h in header) if any(header) else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").removesuffix(" pts").removesuffix("%"))
    except ValueError:
        return False
    return True


def note(text: str) -> str:
    """A note: a line of small grey text."""
    return f'<p class="note">{escape(text)}</p>'


def escape(text: str) -> str:
    """``text`` escaped for HTML, quotes included."""
    return html.escape(text, quote=True)


def clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis last when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def seconds(value: Any) -> str:
    """A duration in seconds, or a dash when it is not a number."""
    return "—" if not isinstance(value, int | float) else f"{value:,.2f} s"
