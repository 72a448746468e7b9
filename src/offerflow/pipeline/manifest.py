"""The manifest of a run (``run.json``): what ``--resume`` needs to finish the run the same way."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from offerflow import __version__
from offerflow.config import PartnerConfig
from offerflow.errors import UsageError
from offerflow.pipeline.sinks import atomic_write

__all__ = ["MANIFEST", "RunManifest", "read_manifest", "write_manifest"]

MANIFEST = "run.json"


class RunManifest(BaseModel):
    """The config and as-of a run was started with; a resumed run uses exactly these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    partner: str
    as_of: datetime
    created_at: datetime
    offerflow: str
    config: PartnerConfig


def write_manifest(run_dir: Path, config: PartnerConfig, as_of: datetime) -> RunManifest:
    """Write ``run.json`` for a new run (``config`` as loaded: before bundled URLs resolve)."""
    manifest = RunManifest(
        run_id=run_dir.name,
        partner=config.partner,
        as_of=as_of,
        created_at=datetime.now(UTC),
        offerflow=__version__,
        config=config,
    )
    text = manifest.model_dump_json(indent=2) + "\n"
    atomic_write(run_dir / MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return manifest


def read_manifest(run_dir: Path) -> RunManifest:
    """The manifest of an existing run directory, or a UsageError naming what is wrong."""
    path = run_dir / MANIFEST
    try:
        return RunManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: not a run directory (no {MANIFEST})") from None
    except (OSError, ValidationError) as exc:
        raise UsageError(f"{path}: unreadable run manifest: {exc}") from exc
