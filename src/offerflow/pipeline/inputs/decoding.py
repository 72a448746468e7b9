"""An input file's bytes as the reader parses them: decompressed, and as UTF-8.

Partners' exports often come compressed. A file that starts with the magic bytes of gzip,
bzip2 or xz is decompressed as it is read, whatever its name says (``members.csv.gz``, or a
``.csv`` that is gzip inside): nothing to configure, and never the whole file in memory. A zip
archive is read as the one file it holds (folders and macOS's ``__MACOSX/`` aside); one that
holds several, or an encrypted one, is an InputError naming what it holds. A file
in another encoding than UTF-8 (``input.csv.encoding``) is decoded as it is read and handed on
as UTF-8, so that what follows sees one encoding; bytes that are not text in its encoding come
out as bytes that are not UTF-8 (``surrogateescape``), for the reader to reject as such.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import Protocol

from offerflow.errors import InputError

__all__ = ["COMPRESSION_ERRORS", "UTF8", "Utf8Stream", "compression"]

#: what a compressed file that is corrupt or cut short raises as it is read (bzip2's: OSError)
COMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, zipfile.BadZipFile)

#: the encodings a file is read in as it is (else it is decoded and encoded as UTF-8)
UTF8 = frozenset({"utf-8", "utf-8-sig"})
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip"}


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def _decompressing(kind: str, path: Path) -> _Readable:
    """The decompressed bytes of a file compressed as ``kind``."""
    if kind == "gzip":
        return gzip.GzipFile(path, "rb")
    if kind == "bzip2":
        return bz2.BZ2File(path, "rb")
    if kind == "zip":
        return _ZipMember(path)
    return lzma.LZMAFile(path, "rb")


class _ZipMember:
    """The one file a zip archive holds, read as it is inflated."""

    def __init__(self, path: Path) -> None:
        self._archive = zipfile.ZipFile(path)
        try:
            files = [
                info
                for info in self._archive.infolist()
                if not info.is_dir() and not info.filename.startswith("__MACOSX/")
            ]
            if len(files) != 1:
                names = ", ".join(info.filename for info in files[:5])
                held = f": {names}{', …' if len(files) > 5 else ''}" if files else ""
                message = f"the zip archive holds {len(files)} files{held}; it may hold one"
                raise InputError(message, path=path)
            if files[0].flag_bits & 0x1:
                message = f"{files[0].filename} in the zip archive is encrypted: decrypt it first"
                raise InputError(message, path=path)
            self._file = self._archive.open(files[0])
        except BaseException:
            self._archive.close()
            raise

    def read(self, size: int = -1, /) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()
        self._archive.close()


def compression(path: Path) -> str | None:
    """How the file is compressed (``gzip``, ``bzip2``, ``xz``, ``zip``), from its first bytes;
    None when it is not."""
    with path.open("rb") as handle:
        head = handle.read(6)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


class Utf8Stream:
    """A file read a piece at a time as UTF-8 bytes: decompressed, then decoded from
    ``encoding`` unless that is UTF-8. Raises OSError or one of :data:`COMPRESSION_ERRORS`
    when the file cannot be read or decompressed."""

    def __init__(self, path: Path, encoding: str) -> None:
        kind = compression(path)
        self._raw = path.open("rb") if kind is None else _decompressing(kind, path)
        self._decoder = (
            None
            if encoding in UTF8
            else codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        )

    def read(self, size: int = -1) -> bytes:
        """The next bytes (up to ``size`` of the file's own), b"" at its end."""
        if self._decoder is None:
            return self._raw.read(size)
        while True:
            # a read may hold no whole character of a multi-byte encoding: read on
            raw = self._raw.read(size)
            text = self._decoder.decode(raw, final=not raw)
            if text or not raw:
                return text.encode("utf-8", "surrogateescape")

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Utf8Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
