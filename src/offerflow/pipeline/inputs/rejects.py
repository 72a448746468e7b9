"""What an input's rejects say about it as a whole: too many stop a run before any model call.

A partner's input that the config does not fit (a ``timestamp_format`` that matches no row, a
column mapped to the wrong column, a file that is not UTF-8) yields a run in which every row is
a reject, every member ``no_transactions``, and every check green. So a run stops after reading
when more of the rows than ``input.max_reject_rate`` are rejected (InputError, exit 2), naming
the most frequent reasons with a hint each that quotes a value of the file; and it warns when no
row can be used at all while that is allowed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import polars as pl

from offerflow.config import CsvFormat
from offerflow.errors import InputError
from offerflow.pipeline.inputs.sources import BAD_ENCODING, MALFORMED

__all__ = ["RejectFigures", "RejectSample", "check_rejects", "describe_rejects"]


class RejectFigures(Protocol):
    """What the checks read of an input (a ``ReadResult`` has it all): its row counts, its
    rejects by reason, and rejected rows (some or all) to quote in hints."""

    @property
    def rows_in(self) -> int: ...

    @property
    def rows_used(self) -> int: ...

    @property
    def rows_rejected(self) -> int: ...

    @property
    def rejects_by_reason(self) -> dict[str, int]: ...

    @property
    def rejects(self) -> pl.DataFrame: ...


@dataclass(frozen=True, slots=True)
class RejectSample:
    """An input's reject figures counted where it was read (e.g. on a cluster), with a few
    rejected rows of each reason to quote."""

    rows_in: int
    rows_used: int
    rejects_by_reason: dict[str, int]
    #: rejected rows as ``rejects.csv`` has them (file, line, raw values, reason), a few a reason
    rejects: pl.DataFrame

    @property
    def rows_rejected(self) -> int:
        """The rejected rows, all of them."""
        return sum(self.rejects_by_reason.values())


log = logging.getLogger(__name__)

#: how many reasons an error or a warning names, the most frequent first
_TOP = 3
#: the longest value a hint quotes
_QUOTED_CHARS = 40


def check_rejects(
    result: RejectFigures,
    *,
    limit: float,
    path: Path | str,
    columns: Mapping[str, str],
    timestamp_format: str | None,
    as_of: datetime,
    sample: int | None = None,
    csv: CsvFormat | None = None,
) -> None:
    """Raise InputError when more than ``limit`` of the input's rows are rejected.

    The error names the most frequent reasons, each with a hint; ``columns`` (canonical name to
    the file's column), ``timestamp_format`` and ``csv`` are the config's, which the hints
    quote, and ``sample`` says that ``result`` holds only the first rows of the input. When not
    above the limit, an input without a usable row is logged as a warning.
    """
    rejected, rows = result.rows_rejected, result.rows_in
    where = f"in a sample (each file's first {sample:,} rows), " if sample is not None else ""
    if rows and rejected / rows > limit:
        reasons = describe_rejects(
            result, columns=columns, timestamp_format=timestamp_format, as_of=as_of, csv=csv
        )
        raise InputError(
            f"{where}{rejected:,} of {rows:,} rows are rejected ({rejected / rows:.1%}), above "
            f"input.max_reject_rate ({limit:.1%}):\n  " + "\n  ".join(reasons),
            path=path,
        )
    if not rows:
        log.warning("%s: the input has no rows: the run has no member", path)
    elif not result.rows_used:
        reasons = describe_rejects(
            result, columns=columns, timestamp_format=timestamp_format, as_of=as_of, csv=csv
        )
        log.warning(
            "%s: %sno row of %s can be used: every member gets no_transactions; %s",
            path,
            where,
            f"{rows:,}",
            "; ".join(reasons),
        )


def describe_rejects(
    result: RejectFigures,
    *,
    columns: Mapping[str, str],
    timestamp_format: str | None,
    as_of: datetime,
    csv: CsvFormat | None = None,
) -> list[str]:
    """The most frequent reject reasons, most frequent first, each as ``N of M rows reason:
    hint``: ``1,616 of 1,670 rows bad_timestamp: does input.timestamp_format '%d/%m/%Y' match
    '2023-05-01 10:00:00'?``."""
    counts = sorted(result.rejects_by_reason.items(), key=lambda item: (-item[1], item[0]))
    return [
        f"{count:,} of {result.rows_in:,} rows {reason}: "
        + _hint(reason, result.rejects, columns, timestamp_format, as_of, csv or CsvFormat())
        for reason, count in counts[:_TOP]
    ]


def _hint(
    reason: str,
    rejects: pl.DataFrame,
    columns: Mapping[str, str],
    timestamp_format: str | None,
    as_of: datetime,
    csv: CsvFormat,
) -> str:
    """What may be wrong when many rows are rejected for ``reason``, with an example."""
    kind, _, name = reason.partition(":")
    rows = rejects.filter(pl.col("reason") == reason)
    line = _where(rows)

    def raw(canonical: str) -> str:
        found = rows.get_column(columns[canonical]).drop_nulls()
        return "" if found.is_empty() else str(found[0])

    def value(canonical: str) -> str:
        text = raw(canonical)
        return repr(text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "…")

    if reason == MALFORMED:
        return f"a quote inside an unquoted field, or text after a closing quote (e.g. {line})"
    if reason.startswith(BAD_ENCODING):
        return (
            f"the file is not {csv.encoding} text (e.g. {line}): set input.csv.encoding to "
            "the file's (e.g. 'cp1252')"
        )
    if kind in {"missing_member_id", "missing_field"}:
        canonical = name or "member_id"
        return (
            f"is input.columns.{canonical} ({columns[canonical]!r}) the column that holds it? "
            f"(e.g. {line})"
        )
    if reason == "bad_timestamp":
        if timestamp_format is not None:
            return f"does input.timestamp_format {timestamp_format!r} match {value('ts')}?"
        return (
            f"{value('ts')} is not ISO 8601 (2023-05-01 10:00:00): does input.timestamp_format "
            "need setting?"
        )
    if reason == "future_timestamp":
        return f"{value('ts')} is after the as-of, {as_of:%Y-%m-%d %H:%M:%S} UTC: is --as-of right?"
    if reason == "unknown_type":
        return f"{value('type')} is not buy, gift or redeem: does input.type_aliases need it?"
    if kind == "bad_number":
        text = raw(name)
        if csv.thousands is not None and csv.thousands in text:
            return f"{value(name)}: are its digits grouped by three (input.csv.thousands)?"
        mark = "," if csv.decimal == "." else "."
        if mark in text:
            return (
                f"{value(name)} holds a {mark!r}: is input.csv.decimal {mark!r}, or "
                f"input.csv.thousands {mark!r}?"
            )
        return (
            f"{value(name)} is not a number: is input.columns.{name} ({columns[name]!r}) the "
            "column that holds it?"
        )
    return f"the same values as an earlier row (e.g. {line}): is some data in the input twice?"


def _where(rows: pl.DataFrame) -> str:
    """The first of ``rows``: ``line N``, or ``FILE line N`` for an input of several files."""
    first = rows.row(0, named=True)
    return f"{first['file']} line {first['line']}" if "file" in first else f"line {first['line']}"
