"""The partner config: what differs from one partner to the next, validated and frozen."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from offerflow.config.endpoints import (
    BUNDLED_SCHEME,
    MEMBER_ID,
    EndpointConfig,
    ModelConfig,
    OfferConfig,
    RetryBudgetConfig,
    template_leaves,
)
from offerflow.config.inputs import InputConfig, PathOrUrl
from offerflow.config.inputs import Strict as _Strict

__all__ = [
    "DEFAULT_FEATURES",
    "DriftConfig",
    "OutputConfig",
    "PartnerConfig",
]


DEFAULT_FEATURES: tuple[str, ...] = (
    "AVG_POINTS_BOUGHT",
    "AVG_REVENUE_USD",
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT",
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD",
    "PCT_BUY_TRANSACTIONS",
    "PCT_GIFT_TRANSACTIONS",
    "PCT_REDEEM_TRANSACTIONS",
    "DAYS_SINCE_LAST_TRANSACTION",
)


def _octal_mode(value: object) -> int:
    """A permission mode written as an octal string (``"0600"``, ``"600"`` or ``"0o600"``)."""
    if not isinstance(value, str):
        # YAML reads an unquoted 0600 as the number 384 and 600 as six hundred: never guess
        raise ValueError(
            f"{value!r}: write a mode as an octal string in quotes, e.g. '0600' (unquoted, "
            "YAML reads 0600 as the number 384 and 600 as six hundred)"
        )
    digits = value.strip().lower().removeprefix("0o")
    if not re.fullmatch(r"0?[0-7]{3}", digits):
        raise ValueError(f"{value!r} is not a permission mode of three octal digits, e.g. '0600'")
    return int(digits, 8)


#: permission bits, validated from an octal string and written back as one (``"0600"``)
Mode = Annotated[
    int, BeforeValidator(_octal_mode), PlainSerializer(lambda mode: f"0{mode:03o}", return_type=str)
]


class OutputConfig(_Strict):
    """Where runs are written, in which formats offers are kept, and who may read them."""

    #: a local directory, or an object store URL (``s3://bucket/runs``)
    dir: PathOrUrl = Path("runs")
    formats: tuple[Literal["parquet", "csv"], ...] = ("parquet", "csv")
    #: rows per committed chunk of a result table (a chunk is also committed every 2 s)
    chunk_rows: int = Field(default=16384, ge=1)
    #: permission bits of a run directory and of the directories in it: member data is
    #: personal data, so only its owner may enter by default
    dir_mode: Mode = 0o700
    #: permission bits of every file a run writes, whatever the process's umask
    file_mode: Mode = 0o600

    @field_validator("dir_mode")
    @classmethod
    def _owner_can_use_the_directory(cls, mode: int) -> int:
        if mode & 0o700 != 0o700:
            raise ValueError(f"0{mode:03o}: the owner needs rwx (0700) on a run directory")
        return _no_write_for_others(mode)

    @field_validator("file_mode")
    @classmethod
    def _owner_can_rewrite_the_file(cls, mode: int) -> int:
        if mode & 0o600 != 0o600:
            raise ValueError(f"0{mode:03o}: the owner needs rw (0600) on a run's files")
        if mode & 0o111:
            raise ValueError(f"0{mode:03o}: a run's files are data, not programs: no x bits")
        return _no_write_for_others(mode)


def _no_write_for_others(mode: int) -> int:
    if mode & 0o022:
        # whoever may write in a run directory may rewrite its run.json, which says what code
        # a resumed run imports
        raise ValueError(f"0{mode:03o}: only the owner may write (no 0020 or 0002 bits)")
    return mode


#: where a value is in a config's data: keys, and list indexes as digits
Location = tuple[str, ...]


class DriftConfig(_Strict):
    """How far a run may drift from a baseline run before ``compare --fail-on-drift`` exits 5.

    A limit of ``None`` leaves that figure reported but never judged.
    """

    #: population stability index of a feature or a prediction (10 quantile bins of the baseline)
    psi: float = Field(default=0.2, gt=0)
    #: change of an offer type's share of the offers, in absolute terms (0.10: ten points)
    offer_share: float = Field(default=0.10, gt=0, le=1)
    #: relative change of a feature's or prediction's median, ``|b - a| / |a|``
    median_shift: float | None = Field(default=None, gt=0)
    #: relative change of a feature's or prediction's 90th percentile, ``|b - a| / |a|``
    p90_shift: float | None = Field(default=None, gt=0)
    #: an endpoint's p99 attempt latency over the baseline's
    latency_p99_ratio: float | None = Field(default=None, gt=1)


class PartnerConfig(_Strict):
    """Everything that differs from one partner to the next.

    A config the loader made remembers which of its values came from ``${VAR}`` references
    (:meth:`with_env_templates`), so that :meth:`document` can write it down without them.
    """

    partner: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    input: InputConfig
    features: tuple[str, ...] = DEFAULT_FEATURES
    #: Python files (relative to the config file) that add features: see offerflow.pipeline
    feature_modules: tuple[Path, ...] = ()
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    offer: OfferConfig
    output: OutputConfig = OutputConfig()
    #: the fraction of scored members that may fail before the run exits 3
    failure_budget: float = Field(default=0.0, ge=0, le=1)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: a member's scoring, all endpoints, attempts and waits included, ends by this deadline
    member_deadline_s: float = Field(default=60.0, gt=0)
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
    #: after SIGINT/SIGTERM, how long in-flight calls may take to finish
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    #: the limits ``offerflow compare`` judges a run against (this config's run as the newer)
    drift: DriftConfig = DriftConfig()

    #: per location of a value that came from ``${VAR}`` references: the template as written and
    #: the value it gave, validated, in :meth:`document`'s terms
    _env_templates: dict[Location, tuple[str, Any]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _references_resolve(self) -> PartnerConfig:
        names = [m.name for m in self.models] + [self.offer.name]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique, repeated: {duplicates}")
        clash = sorted(set(names) & {*self.features, MEMBER_ID})
        if clash:
            raise ValueError(f"endpoint names clash with feature names or member_id: {clash}")
        models = {m.name for m in self.models}
        for endpoint in self.endpoints:
            where = "offer" if endpoint is self.offer else f"models.{endpoint.name}"
            for path, leaf in template_leaves(endpoint.request or {}):
                if isinstance(leaf, str) and leaf not in {*self.features, *models, MEMBER_ID}:
                    raise ValueError(
                        f"{where}.request.{'.'.join(path)}: {leaf!r} is not a selected feature, "
                        "a model or member_id"
                    )
        if not any(
            isinstance(leaf, str) and leaf in models
            for _, leaf in template_leaves(self.offer.request)
        ):
            raise ValueError("offer.request takes no model's prediction")
        slow = [e.name for e in self.endpoints if e.timeout_s > self.member_deadline_s]
        if slow:
            raise ValueError(
                f"timeout_s of {slow} exceeds member_deadline_s ({self.member_deadline_s}): "
                "no attempt could ever use its whole timeout"
            )
        return self

    @property
    def endpoints(self) -> tuple[EndpointConfig, ...]:
        """Every endpoint the run calls: the models, then the offer."""
        return (*self.models, self.offer)

    @property
    def uses_bundled_server(self) -> bool:
        """True when some endpoint is a route of the bundled model server."""
        return any(e.url.startswith(BUNDLED_SCHEME) for e in self.endpoints)

    def with_bundled_base(self, base_url: str) -> PartnerConfig:
        """This config with every ``bundled:/route`` URL pointed at ``base_url``."""

        def resolve(url: str) -> str:
            route = url.removeprefix(BUNDLED_SCHEME)
            return base_url.rstrip("/") + route if url.startswith(BUNDLED_SCHEME) else url

        models = tuple(m.model_copy(update={"url": resolve(m.url)}) for m in self.models)
        offer = self.offer.model_copy(update={"url": resolve(self.offer.url)})
        return self.model_copy(update={"models": models, "offer": offer})

    def with_concurrency(self, concurrency: int | None) -> PartnerConfig:
        """This config with every endpoint's concurrency set to ``concurrency`` (None: as is)."""
        if concurrency is None:
            return self
        models = tuple(m.model_copy(update={"concurrency": concurrency}) for m in self.models)
        offer = self.offer.model_copy(update={"concurrency": concurrency})
        return self.model_copy(update={"models": models, "offer": offer})

    def with_env_templates(self, templates: Mapping[Location, str]) -> PartnerConfig:
        """This config, remembering that the value at each location came from its template.

        A ValueError names a location this config has no value at: its template could not be
        written back, and the variable's value would be written instead.
        """
        data = _plain(self)
        recorded: dict[Location, tuple[str, Any]] = {}
        for location, template in templates.items():
            found, value = _at(data, location)
            if not found:
                raise ValueError(".".join(location))
            recorded[location] = (template, value)
        copy = self.model_copy()
        copy._env_templates = recorded
        return copy

    def document(self) -> dict[str, Any]:
        """The config as JSON data, every field included, as a partner file would say it.

        A value that came from ``${VAR}`` references, and still is the value they gave, is its
        template again (``"Bearer ${TOKEN}"``), never the variable's value; a value changed since
        (``--input``, the bundled server's URL) is what it is now. Header values are plain text.
        """
        data = _plain(self)
        for location, (template, value) in self._env_templates.items():
            if _at(data, location) == (True, value):
                _put(data, location, template)
        return data

    def module_digests(self) -> dict[str, str | None]:
        """The sha256 of each feature module file's content, by path (None: unreadable)."""
        digests: dict[str, str | None] = {}
        for module in self.feature_modules:
            try:
                digests[str(module)] = hashlib.sha256(module.read_bytes()).hexdigest()
            except OSError:
                digests[str(module)] = None
        return digests

    def fingerprint(self) -> str:
        """The sha256 of the config's :meth:`document` and its feature modules' contents.

        Stable: a canonical JSON of both (sorted keys, no spaces), so the same config and the
        same module files give the same hash in any process; secrets are not in it, only the
        references to them.
        """
        config = self.document()
        # the drift limits judge runs afterwards and change nothing a run computes: changing
        # them neither changes the hash nor stops a run from resuming
        config.pop("drift", None)
        # a key added since v1 is left out while it holds its default: a config that does not
        # use it hashes as before it existed, so the runs begun then can still be resumed
        for key in _INPUT_KEYS_SINCE_V1:
            default = InputConfig.model_fields[key].get_default(call_default_factory=True)
            if config["input"][key] == (
                _plain(default) if isinstance(default, BaseModel) else default
            ):
                del config["input"][key]
        content = {
            "fingerprint": "offerflow config v1",
            "config": config,
            "feature_modules": self.module_digests(),
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


#: the ``input`` keys added after the fingerprint's v1 (left out of it while at their defaults)
_INPUT_KEYS_SINCE_V1 = ("csv", "timezone")


def _plain(config: BaseModel) -> dict[str, Any]:
    """A model as JSON data: secrets in plain text, sets sorted (a stable order)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        if isinstance(value, set | frozenset):
            return sorted(plain(item) for item in value)
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return pydantic_core.to_jsonable_python(value)

    data: dict[str, Any] = plain(config.model_dump(mode="python"))
    return data


def _at(data: Any, location: Location) -> tuple[bool, Any]:
    """``(True, value)`` at ``location`` in JSON data, or ``(False, None)`` when there is none."""
    for part in location:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False, None
    return True, data


def _put(data: Any, location: Location, value: Any) -> None:
    """Replace the value at ``location`` (which :func:`_at` found) in JSON data."""
    *path, last = location
    for part in path:
        data = data[int(part)] if isinstance(data, list) else data[part]
    if isinstance(data, list):
        data[int(last)] = value
    else:
        data[last] = value
