"""The manifest of a run (``run.json``): what ``--resume`` needs to finish the run the same way.

It names the config file rather than copying the config, so that secrets the config takes from
the environment are never written to the run directory; a resumed run loads the file again and
refuses to go on if the config it gives is not the one the run started with.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from offerflow import __version__
from offerflow.config import PartnerConfig, load_config
from offerflow.errors import UsageError
from offerflow.pipeline.outputs.sinks import atomic_write

__all__ = ["MANIFEST", "RunManifest", "read_manifest", "write_manifest"]

MANIFEST = "run.json"


class RunManifest(BaseModel):
    """The config file, input and as-of a run was started with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    partner: str
    as_of: datetime
    created_at: datetime
    offerflow: str
    config_path: Path
    config_fingerprint: str
    input_path: Path

    def config(self) -> PartnerConfig:
        """The run's config, loaded again; a UsageError when it changed since the run started."""
        config = load_config(self.config_path)
        config = config.model_copy(
            update={"input": config.input.model_copy(update={"path": self.input_path})}
        )
        if config.fingerprint() != self.config_fingerprint:
            raise UsageError(
                f"{self.config_path} changed since run {self.run_id} started: a resumed run "
                "must use the config it started with"
            )
        return config


def write_manifest(
    run_dir: Path, config: PartnerConfig, config_path: Path, as_of: datetime
) -> RunManifest:
    """Write ``run.json`` for a new run of ``config``, loaded from ``config_path``."""
    manifest = RunManifest(
        run_id=run_dir.name,
        partner=config.partner,
        as_of=as_of,
        created_at=datetime.now(UTC),
        offerflow=__version__,
        config_path=config_path.resolve(),
        config_fingerprint=config.fingerprint(),
        input_path=config.input.path,
    )
    text = manifest.model_dump_json(indent=2) + "\n"
    atomic_write(
        run_dir / MANIFEST,
        lambda tmp: tmp.write_text(text, encoding="utf-8"),
        mode=config.output.file_mode,
    )
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
