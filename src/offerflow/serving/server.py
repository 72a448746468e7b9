"""Run the bundled app with uvicorn, on a socket bound here so that port 0 works."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from offerflow.errors import UsageError, WorldError
from offerflow.serving.process import READY_PREFIX

__all__ = ["APP", "is_loopback", "serve"]

logger = logging.getLogger(__name__)

#: the import string of the app, so that uvicorn can load it in each worker process
APP = "offerflow.serving.app:app"

# How long a worker of a multi-worker server may take to import the app and start serving.
_WORKER_START_TIMEOUT = 60.0
# How long a shutdown waits for in-flight requests before closing their connections.
_GRACEFUL_SHUTDOWN_S = 5


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    access_log: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the bundled endpoints until interrupted; announce the base URL once they answer.

    ``port=0`` picks a free port. By default the announcement is the line
    ``offerflow serving on http://HOST:PORT`` on stdout; ``on_ready`` replaces it. A ``host``
    that is not a loopback address is logged as a WARNING: the endpoints have no authentication.
    Raises UsageError when the address cannot be listened on (a port in use, a host that is
    not this machine's), WorldError when the server fails to start.
    """
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    if not is_loopback(host):
        logger.warning(
            "serving on %s, not a loopback address: any host that can reach it may call the "
            "bundled endpoints (no authentication, no TLS); bind 127.0.0.1 unless that is meant",
            host,
        )
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{url_host}:{bound_port}"
    announce = _print_ready if on_ready is None else on_ready
    config = uvicorn.Config(
        APP,
        host=host,
        port=bound_port,
        workers=workers,
        loop="auto",
        http="auto",
        ws="none",
        # Served locally with no proxy in front: spare every request the X-Forwarded parsing.
        proxy_headers=False,
        access_log=access_log,
        log_config=_access_log_config() if access_log else None,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    try:
        if workers == 1:
            started = _run_single(config, sock, lambda: announce(base_url))
        else:
            started = _run_supervised(config, sock, lambda: announce(base_url))
    finally:
        sock.close()
    if not started:
        raise WorldError(f"the server on {base_url} failed to start; its log says why")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: 127.0.0.0/8, ::1 or localhost."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False  # another name: it may resolve to anything
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening-ready TCP socket; translate failure into a UsageError: the address
    was asked for."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restart on the same port must not wait out TIME_WAIT connections of the last run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot bind {host}:{port}: {reason} (port 0 picks a free one)") from exc
    # Worker processes receive the socket from this one.
    sock.set_inheritable(True)
    return sock


def _print_ready(base_url: str) -> None:
    """Announce the base URL on stdout, the line BundledServer waits for."""
    print(f"{READY_PREFIX}{base_url}", flush=True)


def _access_log_config() -> dict[str, Any]:
    """Return the uvicorn logging config that writes access lines to stderr in every process."""
    # Applied by uvicorn in the parent and again in each spawned worker, which start without
    # handlers; stderr keeps stdout to the one announcement line.
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


class _Server(uvicorn.Server):
    """A uvicorn server that calls back once it listens."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then call back."""
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _run_single(
    config: uvicorn.Config, sock: socket.socket, on_started: Callable[[], None]
) -> bool:
    """Serve in this process until a signal; return whether the server started."""
    server = _Server(config, on_started)
    server.run(sockets=[sock])
    return server.started


class _Supervisor(Multiprocess):
    """uvicorn's multi-worker supervisor that calls back once every worker serves."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], on_started: Callable[[], None]
    ) -> None:
        super().__init__(config, sockets=sockets)
        self._on_started = on_started
        self.started = False

    def init_processes(self) -> None:
        """Start the workers, wait until each serves, then call back (or give up)."""
        super().init_processes()
        # Announcing after the first worker only would let a client's connection pool land
        # entirely on it.
        if all(
            process.wait_until_ready(_WORKER_START_TIMEOUT, self.should_exit)
            for process in self.processes
        ):
            self.started = True
            self._on_started()
        elif not self.should_exit.is_set():
            logger.error("a worker exited or did not serve within %.0f s", _WORKER_START_TIMEOUT)
            self.should_exit.set()


def _run_supervised(
    config: uvicorn.Config, sock: socket.socket, on_started: Callable[[], None]
) -> bool:
    """Serve with worker processes until a signal; return whether all workers started."""
    supervisor = _Supervisor(config, [sock], on_started)
    supervisor.run()
    return supervisor.started
