"""Partitions: a member's partition is a documented checksum of its id, the same everywhere."""

from __future__ import annotations

import polars as pl
import pytest

from offerflow.pipeline.inputs.partitions import partition_of


def crc32(data: bytes) -> int:
    """CRC-32 (ISO-HDLC) written out bit by bit: the documented algorithm, not zlib's code."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_the_check_value_of_the_reference_is_crc32s() -> None:
    assert crc32(b"123456789") == 0xCBF43926  # the catalogued check value of CRC-32/ISO-HDLC


@pytest.mark.parametrize("partitions", [2, 7, 64])
def test_a_partition_is_the_crc32_of_the_stripped_utf8_id_modulo_the_count(
    partitions: int,
) -> None:
    ids = ["003D2324", "AD720CE1", "mémbre-ü", "x", "", "  padded  "]
    got = partition_of(pl.Series(ids), partitions).to_list()
    assert got == [crc32(i.strip().encode()) % partitions for i in ids]


def test_every_row_of_a_member_lands_in_one_partition() -> None:
    ids = pl.Series(["A1", " A1", "A1 ", "B2", "B2", None, ""])
    got = partition_of(ids, 16).to_list()
    assert got[0] == got[1] == got[2]
    assert got[3] == got[4]
    assert got[5] == got[6] == 0  # no id: partition 0


def test_members_spread_over_the_partitions() -> None:
    ids = pl.Series([f"{i:08X}" for i in range(8000)])
    counts = partition_of(ids, 8).value_counts().get_column("count").to_list()
    assert len(counts) == 8
    assert min(counts) > 800  # an even spread would be 1000 each


def test_one_partition_holds_everyone_and_zero_is_refused() -> None:
    assert partition_of(pl.Series(["a", "b"]), 1).to_list() == [0, 0]
    with pytest.raises(ValueError, match="at least 1"):
        partition_of(pl.Series(["a"]), 0)
