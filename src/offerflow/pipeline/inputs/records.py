"""CSV records: the data after a CSV file's header, cut into pieces of whole records.

Where a record ends is a matter of bytes and of CSV's quoting rules alone, so it is decided here,
apart from :mod:`~offerflow.pipeline.inputs.sources`, which has polars parse the pieces.

Where the data holds no quote, a record ends at every newline. From the line of its first quote
on, a regular expression takes the records one field after another, each field unquoted and
without a quote, or quoted whole (its quotes doubled) and followed by a delimiter or the line's
end; a record it cannot take that way is malformed (a quote inside an unquoted field, text after
a closing quote), and a placeholder record stands in for it in the piece, its values read as a
lenient reader (Python's csv module, a spreadsheet) reads them. Counting quotes instead, as
polars does, is cheaper, but a stray quote turns their parity and with it every record end after
it. Reading a polars ``quote_style="always"`` copy of 1.1 million generated rows (63 MB) takes 7
to 14% more CPU than counting quotes did; a file without quotes reads as before.

The delimiter and the quote character are the partner's (``input.csv``): a :class:`Grammar` is
the expressions for one pair of them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from offerflow.errors import InputError

__all__ = ["Grammar", "Piece", "csv_pieces", "lenient_fields", "record_end", "unused_marker"]

#: Unicode noncharacters: never meant as text, so one absent from a piece can mark things in it
_MARKERS = tuple(map(chr, range(0xFDD0, 0xFDF0)))


@dataclass(frozen=True, slots=True)
class Grammar:
    """CSV's quoting rules for one delimiter and one quote character, as regular expressions.

    ``records`` takes well-formed records one after another: each field unquoted and without a
    quote, or quoted whole (its quotes doubled). ``lenient_record`` takes one record as lenient
    readers do: a quote inside an unquoted field is a character, and text after a closing
    quote runs on to the next delimiter; a field opened by a quote is quoted. The patterns are
    possessive, so that a failed match never backtracks.
    """

    delimiter: bytes
    quote: bytes
    records: re.Pattern[bytes]
    lenient_record: re.Pattern[bytes]
    lenient_field: re.Pattern[bytes]

    @staticmethod
    @functools.cache
    def of(delimiter: str = ",", quote: str = '"') -> Grammar:
        """The grammar of a delimiter and a quote character (one ASCII character each)."""
        d, q = re.escape(delimiter.encode()), re.escape(quote.encode())
        quoted = q + b"[^" + q + b"]*+(?:" + q + q + b"[^" + q + b"]*+)*+" + q
        field = b"(?:" + quoted + b"|[^" + d + q + b"\n]*+)"
        records = b"(?:" + field + b"(?:" + d + field + b")*+\r?\n)*+"
        loose = quoted + b"[^" + d + b"\n]*+|(?!" + q + b")[^" + d + b"\n]*+"
        lenient_field = (
            q + b"(?P<quoted>[^" + q + b"]*+(?:" + q + q + b"[^" + q + b"]*+)*+)" + q
            + b"(?P<after>[^" + d + b"\n]*+)|(?!" + q + b")[^" + d + b"\n]*+"
        )  # fmt: skip
        lenient_record = b"(?:" + loose + b")(?:" + d + b"(?:" + loose + b"))*+\n"
        return Grammar(
            delimiter.encode(),
            quote.encode(),
            re.compile(records),
            re.compile(lenient_record),
            re.compile(lenient_field),
        )


@dataclass(frozen=True, slots=True)
class Piece:
    """Whole records of a CSV file, as polars parses them behind the file's header."""

    #: the records, each malformed one replaced by a placeholder: ``marker`` in every field
    body: bytes
    #: the malformed records, in file order
    malformed: tuple[bytes, ...] = ()
    marker: str = ""
    #: True when the file ends inside a quoted field opened after ``body``
    unclosed: bool = False


def csv_pieces(
    read: Callable[[], bytes], data: bytes, width: int, grammar: Grammar
) -> Iterator[Piece]:
    """The records of a CSV file after its header, as pieces of about the size ``read`` reads.

    ``data`` is what was read after the header; ``width`` is the number of the header's fields,
    which a placeholder has. At least one piece is yielded, and a record longer than a piece
    is read on to its end.
    """
    first, looked_at = True, 0
    while True:
        more = read()
        if more and len(data) < 2 * looked_at:
            data += more  # a record longer than the data: look again once the data has doubled
            continue
        piece, rest = _whole_records(data, width, grammar, final=not more)
        if piece.body or piece.unclosed or (first and not more):
            yield piece
            first = False
        if not more:
            return
        looked_at = 0 if piece.body else len(rest)
        data = rest + more


def _whole_records(
    data: bytes, width: int, grammar: Grammar, *, final: bool
) -> tuple[Piece, bytes]:
    """The whole records at the start of ``data``, which starts where a record does, and the
    rest of ``data``. With ``final``, the data runs to the end of the file."""
    if grammar.quote not in data:
        end = len(data) if final else data.rfind(b"\n") + 1
        return Piece(data[:end]), data[end:]
    if final and not data.endswith(b"\n"):
        data += b"\n"
    # the records before the line of the first quote hold none
    start = data.rfind(b"\n", 0, data.find(grammar.quote)) + 1
    parts, malformed, marker = [data[:start]], [], ""
    while True:
        end = grammar.records.match(data, start).end()  # type: ignore[union-attr]  # never None
        parts.append(data[start:end])
        start = end
        record = grammar.lenient_record.match(data, end) if end < len(data) else None
        if record is None:
            break  # the end of the data, or of the whole records in it
        marker = marker or unused_marker(data)
        malformed.append(record.group())
        parts.append(grammar.delimiter.join([marker.encode()] * width) + b"\n")
        start = record.end()
    unclosed = final and start < len(data)
    piece = Piece(b"".join(parts), tuple(malformed), marker, unclosed)
    return piece, b"" if final else data[start:]


def record_end(data: bytes, start: int, grammar: Grammar) -> int:
    """The end (past its newline) of the record that starts at ``start``, or -1 if not in data."""
    record = grammar.lenient_record.match(data, start)
    return -1 if record is None else record.end()


def unused_marker(data: bytes | str) -> str:
    """A noncharacter absent from ``data``."""
    for marker in _MARKERS:
        present = marker in data if isinstance(data, str) else marker.encode() in data
        if not present:
            return marker
    raise InputError("a piece of the file holds every Unicode noncharacter: is it text?")


def lenient_fields(record: bytes, grammar: Grammar) -> list[str]:
    """The values of one record (ending with its newline), as lenient readers take them."""
    values: list[str] = []
    start = 0
    quote = grammar.quote
    while True:
        field = grammar.lenient_field.match(record, start)
        assert field is not None  # the record is one lenient_record matched
        quoted = field.group("quoted")
        raw = field.group() if quoted is None else quoted.replace(quote * 2, quote) + field["after"]
        values.append(raw.decode("utf-8", "replace"))
        start = field.end() + 1
        if record[field.end() : start] != grammar.delimiter:
            values[-1] = values[-1].removesuffix("\r")  # the last field: a CRLF's CR
            return values
