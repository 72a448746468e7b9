"""Partitions of the members: which one each member's rows belong to, the same everywhere.

A member's partition is the CRC-32 (ISO-HDLC, the checksum of zlib and gzip) of the UTF-8
bytes of its id without surrounding whitespace, modulo the number of partitions. The reader
strips ids the same way, so every row of a member lands in its partition, whichever file,
process or machine reads it, and whatever the versions of Python or polars (whose own hashes
are not stable across versions). Rows without an id all go to partition 0.
"""

from __future__ import annotations

import zlib

import polars as pl

__all__ = ["partition_of"]


def partition_of(member_ids: pl.Series, partitions: int) -> pl.Series:
    """The partition (0 to ``partitions - 1``) of each member id, in order, as UInt32."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    ids = member_ids.cast(pl.String).str.strip_chars().fill_null("")
    if partitions == 1:
        return pl.repeat(0, ids.len(), dtype=pl.UInt32, eager=True).alias("partition")
    distinct = ids.unique()
    # one checksum per distinct id (zlib's C code; a member has several rows)
    sums = pl.Series(
        "partition", [zlib.crc32(member.encode()) % partitions for member in distinct], pl.UInt32
    )
    table = pl.DataFrame({"member_id": distinct, "partition": sums})
    return (
        ids.to_frame("member_id")
        .join(table, on="member_id", how="left", maintain_order="left")
        .get_column("partition")
    )
