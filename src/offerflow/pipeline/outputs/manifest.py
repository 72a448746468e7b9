"""The manifest of a run (``run.json``): what ``--resume`` needs to finish the run the same way.

It holds the run's effective config, validated, as data (:meth:`PartnerConfig.document`): every
value that came from a ``${VAR}`` reference is written as that reference, never as the variable's
value, and is taken from the environment again when the config is read back. Beside it, the
sha256 of each feature module file, and one fingerprint of both, which is also the summary's
``config_hash``. A session of the run, the first included, runs the config read back from here
(:meth:`RunManifest.partner_config`), so an edited partner file does not change a run once
started, and a changed feature module or an edited manifest stops a resume instead of running
something else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from offerflow import __version__
from offerflow.config import PartnerConfig, config_from_document
from offerflow.errors import ConfigError, UsageError
from offerflow.pipeline.outputs.sinks import atomic_write

__all__ = ["MANIFEST", "RunManifest", "read_manifest", "write_manifest"]

MANIFEST = "run.json"


class RunManifest(BaseModel):
    """The config, feature modules and as-of a run was started with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    partner: str
    as_of: datetime
    created_at: datetime
    offerflow: str
    #: the file the config was read from: a relative path in ``config`` (one that came from a
    #: ``${VAR}`` reference) is relative to its directory, as it was there
    config_file: Path
    #: the effective config (every field), with ``${VAR}`` references instead of their values
    config: dict[str, Any]
    #: the sha256 of each feature module file's content, by absolute path
    feature_modules: dict[str, str | None]
    #: the sha256 of ``config`` and the modules' contents (:meth:`PartnerConfig.fingerprint`)
    fingerprint: str

    def partner_config(self, run_dir: Path) -> PartnerConfig:
        """The run's config as this manifest says, ``${VAR}`` taken from the environment again.

        A ConfigError (exit 2) names what changed since the run started: a feature module file
        (its content), or this file (its config, modules or fingerprint no longer agree).
        """
        path = run_dir / MANIFEST
        config = config_from_document(self.config, base=self.config_file.parent, source=path)
        if config.partner != self.partner:
            raise ConfigError(
                f"the config is partner {config.partner!r}, the run {self.partner!r}",
                path=path,
                key="partner",
            )
        digests = config.module_digests()
        if set(digests) != set(self.feature_modules):
            raise ConfigError(
                f"the config's feature modules {sorted(digests)} are not the ones recorded "
                f"{sorted(self.feature_modules)}",
                path=path,
            )
        for module, recorded in self.feature_modules.items():
            if digests[module] != recorded:
                raise ConfigError(
                    f"feature module changed since run {self.run_id} started (sha256 "
                    f"{_short(recorded)} then, {_short(digests[module])} now): a resumed run "
                    "runs the code it started with; restore the file or start a new run",
                    path=module,
                )
        if config.fingerprint() != self.fingerprint:
            raise ConfigError(
                "the config does not match the run's fingerprint: the file was edited", path=path
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
        config_file=config_path.resolve(),
        config=config.document(),
        feature_modules=config.module_digests(),
        fingerprint=config.fingerprint(),
    )
    text = manifest.model_dump_json(indent=2) + "\n"
    atomic_write(
        run_dir / MANIFEST,
        lambda tmp: tmp.write_text(text, encoding="utf-8"),
        mode=config.output.file_mode,
    )
    return manifest


def read_manifest(run_dir: Path) -> RunManifest:
    """The manifest of an existing run directory, or a UsageError naming what is wrong.

    The run id it names must be the directory's name: a manifest copied or moved into another
    run's directory is refused.
    """
    path = run_dir / MANIFEST
    try:
        manifest = RunManifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: not a run directory (no {MANIFEST})") from None
    except (OSError, ValidationError) as exc:
        raise UsageError(f"{path}: unreadable run manifest: {exc}") from exc
    directory = run_dir.resolve().name
    if manifest.run_id != directory:
        raise UsageError(
            f"{path}: names run {manifest.run_id!r}, but its directory is {directory!r}"
        )
    return manifest


def _short(digest: str | None) -> str:
    return "none (unreadable)" if digest is None else digest[:12]
