"""The floor's request bodies: serialized once, before any clock starts, in a file it loads.

The file is one JSON header line, then one line per member with transactions::

    {"paths": {"ats": "/ml/ats/predict", ...}, "models": ["ats", "resp"], "offer": "offer"}
    <member_id> TAB <the models' body> TAB <the offer's body>

Bodies are compact orjson documents, which hold no tab or newline, so a line splits on tabs
into the exact bytes to send. This module imports only the standard library and orjson, so
that the floor pays for nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = ["Bodies", "read_bodies", "write_bodies"]


@dataclass(frozen=True, slots=True)
class Bodies:
    """Every request the floor sends, and where it sends them."""

    #: endpoint name -> URL path on the model server
    paths: dict[str, str]
    #: the models, called concurrently with the same body
    models: tuple[str, ...]
    #: the offer endpoint, called after the models
    offer: str
    #: (member_id, the models' body, the offer's body), in the pipeline's member order
    members: list[tuple[str, bytes, bytes]]


def write_bodies(
    path: Path,
    *,
    paths: dict[str, str],
    models: Iterable[str],
    offer: str,
    members: Iterable[tuple[str, bytes, bytes]],
) -> int:
    """Write the bodies file (atomically); returns the number of members written."""
    header = {"paths": paths, "models": list(models), "offer": offer}
    count = 0
    temp = path.with_name(path.name + ".tmp")
    with temp.open("wb") as out:
        out.write(orjson.dumps(header) + b"\n")
        for member_id, features, offer_body in members:
            out.write(b"\t".join((member_id.encode(), features, offer_body)) + b"\n")
            count += 1
    temp.replace(path)
    return count


def read_bodies(path: Path) -> Bodies:
    """Load a bodies file written by :func:`write_bodies`."""
    first, _, rest = path.read_bytes().partition(b"\n")
    header = orjson.loads(first)
    members: list[tuple[str, bytes, bytes]] = []
    for line in rest.split(b"\n"):
        if line:
            member_id, features, offer_body = line.split(b"\t")
            members.append((member_id.decode(), features, offer_body))
    return Bodies(
        paths=dict(header["paths"]),
        models=tuple(header["models"]),
        offer=str(header["offer"]),
        members=members,
    )
