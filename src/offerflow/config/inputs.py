"""The partner config's input: where the transactions are, how their columns map, and how a
partner writes its files (CSV format, timestamps, time zone)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_COLUMNS", "CsvFormat", "InputConfig", "PathOrUrl", "Strict"]

DEFAULT_COLUMNS: dict[str, str] = {
    "member_id": "memberId",
    "ts": "lastTransactionUtcTs",
    "type": "lastTransactionType",
    "points": "lastTransactionPointsBought",
    "revenue": "lastTransactionRevenueUSD",
}


class Strict(BaseModel):
    """A config model: unknown keys refused, frozen, strings stripped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _location(value: Any) -> Any:
    """A local path as a Path; an object store URL (``s3://…``) kept as the string it is."""
    if isinstance(value, str) and "://" not in value:
        return Path(value)
    return value


#: a local path, or the URL of an object store (``s3://bucket/key``)
PathOrUrl = Annotated[Path | str, BeforeValidator(_location)]


class CsvFormat(Strict):
    """How a partner writes its CSV files, where it differs from RFC 4180 in UTF-8 with plain
    numbers."""

    # a tab or a space is a delimiter, not whitespace to strip
    model_config = ConfigDict(str_strip_whitespace=False)

    #: the character between fields
    delimiter: str = ","
    #: the character that quotes a field (doubled inside one)
    quote: str = '"'
    #: the decimal mark of ``points`` and ``revenue``: ``1234.5`` or ``1234,5``
    decimal: Literal[".", ","] = "."
    #: the separator of thousands in ``points`` and ``revenue``, if they are grouped
    #: (``1,234.5``, ``1.234,5``, ``1 234,5``, ``1'234.5``); digits then go by three
    thousands: Literal[",", ".", " ", "'"] | None = None
    #: the text encoding of the file, a Python codec name (``utf-8``, ``cp1252``, ``latin-1``,
    #: ``utf-16``); bytes that are not text in it are rejected as ``bad_encoding:<column>``
    encoding: str = "utf-8"

    @field_validator("delimiter", "quote")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n" or not value.isascii():
            raise ValueError(f"{value!r}: give one ASCII character other than CR or LF")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value.strip()).name
        except LookupError:
            raise ValueError(f"{value!r} is not a text encoding Python knows") from None

    @model_validator(mode="after")
    def _distinct(self) -> CsvFormat:
        if self.delimiter == self.quote:
            raise ValueError(f"delimiter and quote are both {self.delimiter!r}")
        if self.decimal == "," == self.delimiter:
            raise ValueError("decimal ',' needs another delimiter, e.g. ';'")
        if self.thousands == self.decimal:
            raise ValueError(f"thousands and decimal are both {self.decimal!r}")
        return self


class InputConfig(Strict):
    """Where the transactions are and how their columns map to the canonical names."""

    #: a file, or a glob pattern (``data/*.csv``) whose files are read in name order; local, or
    #: an object store URL (``s3://bucket/exports/*.csv``)
    path: PathOrUrl
    format: Literal["csv", "parquet"] | None = None
    #: how timestamps are written when not ISO 8601: a strftime pattern (``%d/%m/%Y %H:%M``),
    #: or ``epoch_s`` / ``epoch_ms`` for seconds / milliseconds since 1970-01-01 UTC
    timestamp_format: str | None = None
    #: the IANA time zone of timestamps written without an offset (``Europe/Berlin``): local
    #: times, converted to UTC; None: they are UTC
    timezone: str | None = None
    #: how a CSV file is written: delimiter, quote, decimal mark, thousands, encoding
    csv: CsvFormat = Field(default_factory=CsvFormat)
    columns: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    type_aliases: dict[str, str] = Field(default_factory=dict)
    #: the largest fraction of the input's rows that may be rejected: above it, the run stops
    #: after reading (exit 2), before any model call
    max_reject_rate: float = Field(default=0.5, ge=0, le=1)

    @field_validator("columns")
    @classmethod
    def _all_canonical_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {unknown}; expected {sorted(DEFAULT_COLUMNS)}"
            )
        return {**DEFAULT_COLUMNS, **columns}

    @field_validator("timezone")
    @classmethod
    def _a_known_zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{zone!r} is not an IANA time zone, e.g. 'Europe/Berlin'"
                ) from None
        return zone

    @model_validator(mode="after")
    def _settings_fit_the_input(self) -> InputConfig:
        if self.timezone is not None and self.timestamp_format in ("epoch_s", "epoch_ms"):
            raise ValueError("epoch times are UTC: input.timezone has no meaning with them")
        if self.format == "parquet" and self.csv != CsvFormat():
            raise ValueError("input.csv says how a CSV file is written: a Parquet input has none")
        return self
