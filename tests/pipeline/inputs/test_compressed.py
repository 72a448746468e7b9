"""Compressed exports: a CSV file in gzip, bzip2 or xz reads as the file it holds, found by its
first bytes; a corrupt or cut one is an input error naming the file."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from offerflow.config import CsvFormat
from offerflow.errors import InputError
from offerflow.pipeline.inputs import generate_transactions, sources, write_transactions
from offerflow.pipeline.inputs.decoding import compression
from offerflow.pipeline.inputs.reader import ReadResult, read_transactions


def _zipped(files: dict[str, bytes]) -> bytes:
    """A zip archive of these files (a name ending in / is a folder)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in files.items():
            out.writestr(name, data)
    return archive.getvalue()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zip": lambda data: _zipped({"export/members.csv": data}),
}


def _read(
    path: Path, as_of: datetime, csv: CsvFormat | None = None, **options: object
) -> ReadResult:
    return read_transactions(path, as_of=as_of, csv=csv or CsvFormat(), **options)  # type: ignore[arg-type]


def _same(read: ReadResult, expected: ReadResult) -> None:
    assert read.rows_in == expected.rows_in
    assert_frame_equal(read.transactions, expected.transactions)
    assert read.rejects.select("line", "reason").equals(expected.rejects.select("line", "reason"))


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """Generated members, with the generator's messy rows, as a plain CSV file."""
    path = tmp_path / "plain.csv"
    write_transactions(generate_transactions(150, seed=12), path)
    return path


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
@pytest.mark.parametrize("chunk_bytes", [1021, 1 << 22])
def test_a_compressed_file_reads_as_the_file_it_holds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plain: Path,
    as_of: datetime,
    kind: str,
    chunk_bytes: int,
) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk_bytes)  # records cut across reads too
    packed = tmp_path / f"members.csv.{kind}"
    packed.write_bytes(COMPRESSORS[kind](plain.read_bytes()))
    assert compression(packed) == kind
    expected = _read(plain, as_of)
    assert expected.rows_in > 600
    assert expected.rows_rejected > 0
    _same(_read(packed, as_of), expected)


def test_its_first_bytes_say_a_file_is_compressed_not_its_name(
    tmp_path: Path, plain: Path, as_of: datetime
) -> None:
    expected = _read(plain, as_of)
    inside = tmp_path / "members.csv"  # gzip, named as plain text
    inside.write_bytes(gzip.compress(plain.read_bytes()))
    named = tmp_path / "members.csv.gz"  # plain text, named as gzip
    named.write_bytes(plain.read_bytes())
    assert compression(inside) == "gzip"
    assert compression(named) is None
    _same(_read(inside, as_of), expected)
    _same(_read(named, as_of), expected)


def test_a_partners_format_reads_from_inside_a_compressed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_of: datetime
) -> None:
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 389)  # records cut across reads
    csv = CsvFormat(delimiter=";", decimal=",", encoding="cp1252")
    theirs = tmp_path / "theirs.csv"
    write_transactions(generate_transactions(80, seed=5, numbers=csv), theirs, csv)
    theirs.write_bytes(theirs.read_bytes().replace(b"\n", b"\r\n"))
    packed = tmp_path / "theirs.csv.gz"
    packed.write_bytes(gzip.compress(theirs.read_bytes()))
    _same(_read(packed, as_of, csv), _read(theirs, as_of, csv))


def test_a_sample_of_a_compressed_file_reads_its_first_rows(
    tmp_path: Path, plain: Path, as_of: datetime
) -> None:
    packed = tmp_path / "members.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    sample = _read(packed, as_of, rows=40)
    assert sample.rows_in == 40
    _same(sample, _read(plain, as_of, rows=40))


def _cut(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def _spoilt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(64) + data[middle + 64 :]  # the deflate stream spoilt


@pytest.mark.parametrize(
    ("kind", "damage", "said"),
    [
        *[pytest.param(kind, _cut, "", id=f"{kind}-cut") for kind in sorted(COMPRESSORS)],
        pytest.param("gzip", _spoilt, "CRC check failed", id="gzip-spoilt"),
    ],
)
def test_a_damaged_compressed_file_is_an_input_error_naming_it(
    tmp_path: Path,
    plain: Path,
    as_of: datetime,
    kind: str,
    damage: Callable[[bytes], bytes],
    said: str,
) -> None:
    damaged = tmp_path / f"members.csv.{kind}"
    damaged.write_bytes(damage(COMPRESSORS[kind](plain.read_bytes())))
    with pytest.raises(InputError, match=f"cannot decompress the file: {said}") as raised:
        _read(damaged, as_of)
    assert str(damaged) in str(raised.value)


def test_a_zip_archive_is_read_as_the_one_file_it_holds_beside_folders_and_mac_files(
    tmp_path: Path, plain: Path, as_of: datetime
) -> None:
    archive = tmp_path / "export.zip"
    archive.write_bytes(
        _zipped(
            {
                "export/": b"",
                "export/members.csv": plain.read_bytes(),
                "__MACOSX/export/._members.csv": b"\x00\x05\x16\x07",
            }
        )
    )
    _same(_read(archive, as_of), _read(plain, as_of))


@pytest.mark.parametrize(
    ("files", "said"),
    [
        ({"a.csv": b"x", "b.csv": b"y"}, "holds 2 files: a.csv, b.csv; it may hold one"),
        ({"export/": b""}, "holds 0 files; it may hold one"),
    ],
)
def test_a_zip_archive_holding_other_than_one_file_is_an_input_error_naming_them(
    tmp_path: Path, as_of: datetime, files: dict[str, bytes], said: str
) -> None:
    archive = tmp_path / "export.zip"
    archive.write_bytes(_zipped(files))
    with pytest.raises(InputError, match=re.escape(said)) as raised:
        _read(archive, as_of)
    assert str(archive) in str(raised.value)


def test_an_encrypted_file_in_a_zip_archive_is_an_input_error(
    tmp_path: Path, plain: Path, as_of: datetime
) -> None:
    data = bytearray(_zipped({"members.csv": plain.read_bytes()}))
    entry = data.index(b"PK\x01\x02")  # the file's entry in the central directory
    data[entry + 8] |= 0x1  # its flag: encrypted
    archive = tmp_path / "export.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"members\.csv in the zip archive is encrypted"):
        _read(archive, as_of)


def test_an_empty_compressed_file_is_an_empty_file(tmp_path: Path, as_of: datetime) -> None:
    empty = tmp_path / "empty.csv.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(InputError, match="empty file"):
        _read(empty, as_of)


def test_a_compressed_parquet_file_is_refused_saying_so(
    tmp_path: Path, plain: Path, as_of: datetime
) -> None:
    table = tmp_path / "members.parquet"
    pl.read_csv(plain, infer_schema=False).write_parquet(table)
    packed = tmp_path / "members.parquet.gz"
    packed.write_bytes(gzip.compress(table.read_bytes()))
    with pytest.raises(InputError, match="it is gzip-compressed; decompress it first"):
        _read(packed, as_of, fmt="parquet")


def test_the_real_file_compressed_reads_to_the_same_rows_and_rejects(
    tmp_path: Path, member_data: Path, as_of: datetime
) -> None:
    packed = tmp_path / "member_data.csv.gz"
    packed.write_bytes(gzip.compress(member_data.read_bytes()))
    expected = _read(member_data, as_of)
    assert expected.rows_rejected > 0
    _same(_read(packed, as_of), expected)
