"""What the benchmark runs on: generated inputs, a partner config for a live server, bodies.

Inputs are generated once per size and seed and cached under ``bench/.work/inputs``; the
partner config is the default partner's with its ``bundled:`` URLs pointed at the server the
harness started; the floor's bodies come from the ``offers.parquet`` of a pipeline run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import yaml

from bench.bodies import write_bodies
from offerflow.config import BUNDLED_SCHEME, DEFAULT_CONFIG
from offerflow.pipeline import generate_transactions, write_transactions

__all__ = ["AS_OF", "REPO", "WORK", "Partner", "input_file", "prepare_bodies", "write_partner"]

#: the repository root: children run here, so that ``-m bench.floor`` imports this package
REPO = Path(__file__).resolve().parent.parent
#: generated inputs, configs, bodies and run directories (gitignored)
WORK = REPO / "bench" / ".work"
#: the as-of date of every run: after the generator's last timestamp, so no row is in the future
AS_OF = "2024-01-10"


@dataclass(frozen=True, slots=True)
class Partner:
    """A partner config written for one input and one server, and what the floor needs of it."""

    path: Path
    name: str
    features: tuple[str, ...]
    models: tuple[str, ...]
    offer: str
    #: offer request field -> the model whose prediction it carries
    offer_request: dict[str, str]
    #: endpoint name -> URL path on the server
    paths: dict[str, str]


def input_file(members: int, *, seed: int, work: Path = WORK) -> Path:
    """The transactions of ``members`` generated members as CSV, generated on first use."""
    path = work / "inputs" / f"members-{members}-seed{seed}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.partial.csv")
        write_transactions(generate_transactions(members, seed=seed), partial)
        partial.replace(path)
    return path


def write_partner(path: Path, *, base_url: str, input_path: Path) -> Partner:
    """Write the default partner's config, pointed at ``base_url`` and ``input_path``."""
    document: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    endpoints = [*document["models"], document["offer"]]
    paths: dict[str, str] = {}
    for endpoint in endpoints:
        url = str(endpoint["url"])
        if not url.startswith(BUNDLED_SCHEME):
            raise ValueError(f"the default partner's {endpoint['name']!r} is not bundled: {url}")
        paths[endpoint["name"]] = url.removeprefix(BUNDLED_SCHEME)
        endpoint["url"] = base_url.rstrip("/") + paths[endpoint["name"]]
    if any(model.get("request") for model in document["models"]):
        raise ValueError("the floor sends every feature to every model; a model maps its request")
    document["input"]["path"] = str(input_path.resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return Partner(
        path=path,
        name=str(document["partner"]),
        features=tuple(document["features"]),
        models=tuple(model["name"] for model in document["models"]),
        offer=str(document["offer"]["name"]),
        offer_request=dict(document["offer"]["request"]),
        paths=paths,
    )


def prepare_bodies(offers: Path, partner: Partner, out: Path) -> int:
    """Write the floor's bodies from a run's offers.parquet; returns the number of members.

    The bodies are the bytes the pipeline sent: its features in config order, then the
    predictions mapped into the offer request, all serialized by orjson as the pipeline does.
    Every member with transactions must have been scored: a failed member has no offer body.
    """
    table = pl.read_parquet(offers).filter(pl.col("status") != "no_transactions")
    failed = table.filter(pl.col("status") != "ok")
    if failed.height:
        raise RuntimeError(f"{failed.height} members of {offers} were not scored: no bodies")
    fields = list(partner.offer_request)
    columns = [f"{partner.offer_request[f]}_prediction" for f in fields]
    rows = table.sort("member_id").select("member_id", *partner.features, *columns).iter_rows()
    width = len(partner.features)

    def members() -> Iterator[tuple[str, bytes, bytes]]:
        for row in rows:
            features = dict(zip(partner.features, row[1 : 1 + width], strict=True))
            offer = dict(zip(fields, row[1 + width :], strict=True))
            yield row[0], orjson.dumps(features), orjson.dumps(offer)

    out.parent.mkdir(parents=True, exist_ok=True)
    return write_bodies(
        out, paths=partner.paths, models=partner.models, offer=partner.offer, members=members()
    )
