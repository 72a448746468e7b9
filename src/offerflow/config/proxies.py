"""The proxies of the environment: ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``.

Read as curl, urllib and other HTTP tools read them: a lowercase name wins over the uppercase one
and an empty value is no value; ``HTTP_PROXY`` (uppercase) is ignored in a CGI environment
(``REQUEST_METHOD`` set), where a client's ``Proxy:`` header would set it. ``NO_PROXY`` is a
comma-separated list of hosts, each matching itself and its subdomains (a leading dot is
ignored), optionally with a port (``host:8080``), or ``*`` for every host — the semantics of
:func:`urllib.request.proxy_bypass_environment`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["EnvironmentProxies", "Proxy"]


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy from the environment, with the variable it came from (for messages)."""

    variable: str
    url: str


@dataclass(frozen=True, slots=True)
class EnvironmentProxies:
    """The proxies an environment asks for; :meth:`for_url` picks the one a URL goes through."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EnvironmentProxies:
        """The proxies of ``environ`` (the process's, when the loader is given none)."""

        def variable(name: str) -> Proxy | None:
            for key in (name.lower(), name.upper()):
                if key in environ:
                    if key == "HTTP_PROXY" and "REQUEST_METHOD" in environ:
                        return None
                    return Proxy(key, environ[key]) if environ[key].strip() else None
            return None

        no_proxy = variable("no_proxy")
        return cls(
            http=variable("http_proxy"),
            https=variable("https_proxy"),
            no_proxy="" if no_proxy is None else no_proxy.url,
        )

    def for_url(self, url: str) -> Proxy | None:
        """The proxy ``url`` goes through, or None: none set for its scheme, or NO_PROXY."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme.lower() == "https" else self.http
        if proxy is None or self.bypasses(parts.hostname or "", parts.port):
            return None
        return proxy

    def bypasses(self, host: str, port: int | None) -> bool:
        """Whether NO_PROXY sends ``host`` (and ``port``) direct."""
        if self.no_proxy.strip() == "*":
            return True
        host = host.lower().strip("[]")
        with_port = host if port is None else f"{host}:{port}"
        for entry in self.no_proxy.split(","):
            name = entry.strip().lstrip(".").lower()
            if name.startswith("["):  # [::1] or [::1]:8080
                address, _, rest = name[1:].partition("]")
                name = address + rest
            if not name:
                continue
            for candidate in (host, with_port):
                if candidate == name or candidate.endswith("." + name):
                    return True
        return False
