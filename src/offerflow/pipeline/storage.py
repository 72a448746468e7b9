"""Where a run's input and run directory live: a local path, or an object store URL.

An input or an output directory may be an ``s3://`` URL (any fsspec protocol with ``://``).
A run reads and writes local files, so object storage is staged: an input file is fetched to a
local copy before it is read, and a run directory is written locally and published (every
file of it copied up) when the run ends; a resumed run fetches its directory first. Credentials
come from the standard AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``,
…), read by s3fs; offerflow never writes them anywhere.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

from offerflow.errors import InputError, OutputError

__all__ = [
    "expand",
    "fetch",
    "fetch_matching",
    "fetch_tree",
    "is_remote",
    "join",
    "occupied",
    "publish_tree",
    "read_bytes",
    "remove_tree",
]


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URL of an object store (``s3://…``), not a local path."""
    return "://" in str(location)


def join(location: str, *parts: str) -> str:
    """``location`` with ``parts`` appended, ``/`` between them."""
    return "/".join([location.rstrip("/"), *parts])


def expand(location: str) -> list[str]:
    """The files a location names: itself, or what its glob pattern matches, in name order."""
    if not is_remote(location):
        if not glob.has_magic(location):
            return [location]
        return sorted(glob.glob(location))
    fs, path = _filesystem(location)
    protocol = location.split("://", 1)[0]
    found = sorted(fs.glob(path)) if glob.has_magic(path) else [path]
    return [f"{protocol}://{name}" for name in found]


def fetch(url: str, into: Path) -> Path:
    """Copy the object at ``url`` into the directory ``into``; the local copy's path."""
    fs, path = _filesystem(url)
    target = into / Path(path).name
    try:
        fs.get(path, str(target))
    except FileNotFoundError:
        raise InputError("no such object", path=url) from None
    except OSError as exc:
        raise InputError(f"cannot fetch: {exc}", path=url) from exc
    return target


def occupied(url: str) -> bool:
    """Whether any object lies at or under ``url``."""
    fs, path = _filesystem(url)
    return bool(fs.exists(path))


def read_bytes(url: str) -> bytes | None:
    """The content of the object at ``url``; None when there is none."""
    fs, path = _filesystem(url)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def fetch_matching(url: str, into: Path, prefix: str) -> None:
    """Copy the objects directly under ``url`` whose names start with ``prefix`` into ``into``."""
    fs, path = _filesystem(url)
    if not fs.exists(path):
        return
    into.mkdir(parents=True, exist_ok=True)
    for found in fs.ls(path, detail=False):
        base = str(found).rstrip("/").rsplit("/", 1)[-1]
        if base.startswith(prefix):
            fs.get(str(found), str(into / base))


def fetch_tree(url: str, into: Path, *, skip: Collection[str] = ()) -> bool:
    """Copy every object under ``url`` into the directory ``into``, but for those under the
    top-level directories named in ``skip``; False when there is none."""
    fs, path = _filesystem(url)
    if not fs.exists(path):
        return False
    into.mkdir(parents=True, exist_ok=True)
    for name in fs.find(path, withdirs=False):
        relative = name[len(path.rstrip("/")) + 1 :]
        if relative.split("/", 1)[0] in skip:
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get(name, str(target))
    return True


def publish_tree(local: Path, url: str) -> None:
    """Copy every file under the directory ``local`` to ``url`` (each object written whole)."""
    fs, path = _filesystem(url)
    try:
        for directory, _, files in os.walk(local):
            for name in files:
                if name.endswith(".tmp"):
                    continue
                source = Path(directory) / name
                relative = source.relative_to(local).as_posix()
                fs.put_file(str(source), f"{path.rstrip('/')}/{relative}")
    except OSError as exc:
        raise OutputError(f"cannot publish: {exc}", path=url) from exc


def remove_tree(location: str) -> None:
    """Delete the directory ``location`` (a path or an object store URL) and all under it;
    nothing when there is none."""
    if not is_remote(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, path = _filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it.

    A new instance each time: fsspec's cache keys on arguments, not on the AWS variables a
    client reads, so a cached one would keep a rotated credential or an old endpoint.
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, str(path)
