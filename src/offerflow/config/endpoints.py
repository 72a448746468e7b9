"""Endpoint configs: where a model or the offer endpoint is, how to talk to it, how hard to try.

A request is a **template**: a mapping whose leaves are references (a feature name, a model name
for its prediction, or ``member_id``) or literals written ``{const: value}``. Nested mappings make
nested JSON; the ``mlflow`` and ``kserve-v2`` protocols, which send columns, need a flat one.

What goes on the wire is checked here, so that ``validate`` refuses what ``run`` could not send:
a URL holds no credentials (``user:password@``: they belong in ``headers``), no space, control
or non-ASCII character, and a port that is one; header names are tokens and values hold no
control character (CR, LF, NUL...). A message never shows a header's value, nor more of a URL
than :func:`~offerflow.errors.redact_url` does.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from offerflow.config.proxies import EnvironmentProxies
from offerflow.errors import ConfigError, redact_url

__all__ = [
    "BUNDLED_SCHEME",
    "MEMBER_ID",
    "NO_PROXY",
    "PROTOCOLS",
    "BreakerConfig",
    "EndpointConfig",
    "ModelConfig",
    "OfferConfig",
    "ProtocolName",
    "RetryBudgetConfig",
    "template_leaves",
]

#: a URL of the form ``bundled:/path`` names a route of the bundled model server, which the run
#: starts on 127.0.0.1 and stops afterwards
BUNDLED_SCHEME = "bundled:"
#: the reference in a request template to the member's id
MEMBER_ID = "member_id"

#: an endpoint's ``proxy`` that sends it direct, whatever the environment says
NO_PROXY = "none"

ProtocolName = Literal["json", "json-batch", "mlflow", "kserve-v2"]
PROTOCOLS: tuple[ProtocolName, ...] = ("json", "json-batch", "mlflow", "kserve-v2")
_COLUMNAR = ("mlflow", "kserve-v2")

# RFC 9110 token characters: what a header name may hold
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# what a header value may not hold: it would end the header, or the request's head, early
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# what a URL may not hold: a request line is ASCII without spaces
_UNSENDABLE = re.compile(r"[^\x21-\x7e]")
# the headers the transport writes itself: a second one would change how a request is framed
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_TLS_FILES = ("ca_file", "cert_file", "key_file")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BreakerConfig(_Strict):
    """When an endpoint's circuit breaker opens, and for how long before it probes."""

    failures: int = Field(default=20, ge=1)
    cooldown_s: float = Field(default=5.0, ge=0)


class RetryBudgetConfig(_Strict):
    """Run-wide cap on retries: at most ``ratio`` of calls, plus ``floor``."""

    ratio: float = Field(default=0.2, ge=0, le=10)
    floor: int = Field(default=20, ge=0)


def template_leaves(
    template: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (path, leaf) of a request template; a ``{const: v}`` leaf is yielded as a dict."""
    for key, value in template.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and set(value) != {"const"}:
            yield from template_leaves(value, path)
        else:
            yield path, value


class EndpointConfig(_Strict):
    """One HTTP endpoint: where it is, what it receives, where its answer is, and its limits."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    url: str
    protocol: ProtocolName = "json"
    #: members per request for the batched protocols (json-batch, mlflow, kserve-v2)
    batch_size: int = Field(default=64, ge=1, le=10_000)
    #: the request template; None sends every selected feature under its own name
    request: dict[str, Any] | None = None
    #: where the answer is: a dotted path in the JSON body (json), the list of answers
    #: (json-batch, mlflow) or the output tensor's name (kserve-v2); None: the protocol's usual
    response_field: str | None = None
    #: extra HTTP headers, e.g. ``Authorization: Bearer ${TOKEN}``; never printed or logged
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: TLS: the CA certificates (PEM) trusted instead of the system's bundle
    ca_file: Path | None = None
    #: TLS: our certificate (PEM) for a partner that requires one (mutual TLS)
    cert_file: Path | None = None
    #: TLS: the certificate's private key (PEM), unless ``cert_file`` holds it
    key_file: Path | None = None
    #: the HTTP proxy (``http://host:port``), or ``none``; unset: the environment's (HTTPS_PROXY,
    #: HTTP_PROXY, NO_PROXY), which ``load_config`` decides. Left out of the config's
    #: fingerprint: a run resumed behind another proxy computes the same offers.
    proxy: str | None = Field(default=None, exclude=True)
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=20)
    concurrency: int = Field(default=32, ge=1, le=4096)
    backoff_initial_s: float = Field(default=0.05, gt=0)
    backoff_max_s: float = Field(default=2.0, gt=0)
    retry_after_max_s: float = Field(default=30.0, ge=0)
    #: statuses worth another attempt: 429, 408 and 5xx only (other 4xx are never retried)
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    breaker: BreakerConfig = BreakerConfig()

    @property
    def batched(self) -> bool:
        """Whether a request carries several members."""
        return self.protocol != "json"

    @property
    def answer_path(self) -> str:
        """``response_field``, or the protocol's usual place for the answer."""
        return self.response_field or self._default_answer_path()

    def _default_answer_path(self) -> str:
        return {"json": "prediction", "kserve-v2": "prediction"}.get(self.protocol, "predictions")

    @field_validator("retry_statuses")
    @classmethod
    def _only_transient_statuses(cls, statuses: frozenset[int]) -> frozenset[int]:
        wrong = sorted(s for s in statuses if s not in (408, 429) and not 500 <= s <= 599)
        if wrong:
            raise ValueError(f"{wrong} cannot be retried: only 408, 429 and 5xx are transient")
        return statuses

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            shown = value
            if name in ("url", "proxy") and value and value != NO_PROXY:
                shown = redact_url(value)
            yield name, shown

    def resolved(
        self, *, base: Path, source: Path, key: str, environment: EnvironmentProxies
    ) -> Self:
        """This endpoint as a run uses it: its TLS files relative to ``base`` (the directory of
        the config file), each loaded once to check it, and its proxy decided (its own, or the
        environment's).

        ``source`` (the file the config is read from) and ``key`` (where the endpoint is in it,
        ``models.0``, ``offer``) name the place in errors.
        """
        update: dict[str, Any] = {}
        for name in _TLS_FILES:
            given: Path | None = getattr(self, name)
            if given is not None:
                update[name] = base / given
                if not update[name].is_file():
                    raise ConfigError(
                        f"no file at {update[name]}", path=source, key=f"{key}.{name}"
                    )
        if update:
            _check_tls_files(update, source, key)
        if self.proxy is None:
            proxy = None if self.url.startswith(BUNDLED_SCHEME) else environment.for_url(self.url)
            if proxy is None:
                update["proxy"] = NO_PROXY
            else:
                problem = _proxy_problem(proxy.url)
                if problem is not None:
                    raise ConfigError(
                        f"the environment's {proxy.variable} {problem}",
                        path=source,
                        key=f"{key}.proxy",
                    )
                update["proxy"] = proxy.url
        return self.model_copy(update=update)

    @field_validator("url")
    @classmethod
    def _url_is_usable(cls, url: str) -> str:
        shown = redact_url(url)
        if url.startswith(BUNDLED_SCHEME):
            if not url.removeprefix(BUNDLED_SCHEME).startswith("/"):
                raise ValueError(f"{shown}: a bundled URL is 'bundled:/route'")
        else:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError:
                raise ValueError(f"{shown}: not a URL with a port from 1 to 65535") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                where = f" ({shown})" if "://" in url else ""
                raise ValueError(f"not an http(s) URL (or 'bundled:/route'){where}")
            if "@" in parts.netloc:
                raise ValueError(
                    f"{shown}: credentials in a URL (user:password@) are refused; send them "
                    "in headers, e.g. Authorization: Basic ${CREDENTIALS}"
                )
            if port == 0:
                raise ValueError(f"{shown}: port 0 cannot be called")
        if _UNSENDABLE.search(url):
            raise ValueError(
                f"{shown}: a URL cannot hold a space, a control or a non-ASCII character; "
                "percent-encode it (a space is %20)"
            )
        return url

    @field_validator("headers")
    @classmethod
    def _headers_are_sendable(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} is not an HTTP token (letters, digits and "
                    "!#$%&'*+-.^_`|~)"
                )
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"header {name!r} is written by offerflow itself")
            if _CONTROL.search(value.get_secret_value()):
                raise ValueError(
                    f"the value of header {name!r} holds a control character (CR, LF, NUL, ...), "
                    "which would end the header early"
                )
        return headers

    @field_validator("proxy")
    @classmethod
    def _proxy_is_usable(cls, proxy: str | None) -> str | None:
        if proxy is None or proxy == NO_PROXY:
            return proxy
        problem = _proxy_problem(proxy)
        if problem is not None:
            raise ValueError(f"the proxy {problem} (or 'none')")
        return proxy

    @field_validator("request")
    @classmethod
    def _template_is_well_formed(cls, template: dict[str, Any] | None) -> dict[str, Any] | None:
        if template is None:
            return None
        if not template:
            raise ValueError("an empty request template sends nothing")
        for path, leaf in template_leaves(template):
            if isinstance(leaf, Mapping):
                continue  # a {const: value} literal
            if not isinstance(leaf, str) or not leaf:
                where = ".".join(path)
                raise ValueError(
                    f"{where}: {leaf!r} is neither a reference (a feature, a model or "
                    "member_id) nor a literal written {const: value}"
                )
        return template

    @model_validator(mode="after")
    def _consistent(self) -> EndpointConfig:
        tls = [name for name in _TLS_FILES if getattr(self, name) is not None]
        if tls and not self.url.startswith("https:"):
            raise ValueError(f"{', '.join(tls)}: TLS settings apply to https URLs only")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is the key of cert_file, which is not given")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s ({self.backoff_max_s}) is below backoff_initial_s "
                f"({self.backoff_initial_s})"
            )
        if self.protocol in _COLUMNAR and self.request is not None:
            nested = [".".join(p) for p, _ in template_leaves(self.request) if len(p) > 1]
            if nested:
                raise ValueError(
                    f"the {self.protocol} protocol sends columns: its request cannot nest "
                    f"({', '.join(nested)})"
                )
        return self


def _proxy_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a proxy, or None: an ``http://`` URL (credentials allowed:
    they become ``Proxy-Authorization``), or ``host:port`` alone."""
    if _UNSENDABLE.search(url):
        return "holds a space, a control or a non-ASCII character"
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port
    except ValueError:
        return f"is not a URL with a port from 1 to 65535: {redact_url(url)}"
    if parts.scheme.lower() != "http" or not parts.hostname or port == 0:
        return f"is not an http://host:port proxy URL: {redact_url(url)}"
    return None


def _no_password() -> str:
    """The password of an encrypted key: none, so that loading it fails instead of prompting."""
    return ""


def _check_tls_files(files: Mapping[str, Path], config_file: Path, key: str) -> None:
    """Load the TLS files as a run will, so that one it cannot use is a config error now."""
    try:
        context = ssl.create_default_context(cafile=files.get("ca_file"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"not a PEM file of CA certificates: {exc}", path=config_file, key=f"{key}.ca_file"
        ) from None
    if "cert_file" in files:
        try:
            context.load_cert_chain(files["cert_file"], files.get("key_file"), _no_password)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the certificate and its key (PEM; an encrypted key is not "
                f"supported): {exc}",
                path=config_file,
                key=f"{key}.cert_file",
            ) from None


class ModelConfig(EndpointConfig):
    """A model endpoint; its prediction is a finite number."""


class OfferConfig(EndpointConfig):
    """The offer endpoint; its request template takes model predictions, its answer is a label."""

    name: str = Field(default="offer", pattern=r"^[a-z][a-z0-9_]*$")
    request: dict[str, Any]

    def _default_answer_path(self) -> str:
        return {"json": "offer", "json-batch": "offers", "kserve-v2": "offer"}.get(
            self.protocol, "predictions"
        )
