"""TLS for tests: throwaway CAs (trustme) and real TLS servers on 127.0.0.1 (port 0).

- :func:`serve_https`: the bundled app under uvicorn, over TLS, in a thread; optionally
  requiring a client certificate (mutual TLS).
- :func:`refuse_without_client_cert`: a bare OpenSSL server (the standard library's ``ssl``)
  that requires a client certificate and, unlike an asyncio server, tells a client without one
  so with TLS's "certificate required" alert, as nginx and most servers do.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme
import uvicorn

__all__ = ["Pki", "make_pki", "refuse_without_client_cert", "serve_https"]

#: how long a server may take to start before the test fails
_START_S = 20.0


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the server's certificates, a client's, and a CA that signed none."""

    ca_file: Path
    #: the server's certificate for 127.0.0.1 and localhost, and its key
    cert_file: Path
    key_file: Path
    #: a certificate signed by the same CA for another name only, and its key
    other_name_cert_file: Path
    other_name_key_file: Path
    #: a client certificate signed by the CA, its key in the same file
    client_file: Path
    #: a client certificate and key signed by ``stranger_ca_file``, not by ``ca_file``
    stranger_client_file: Path
    stranger_ca_file: Path


def make_pki(directory: Path) -> Pki:
    """Issue every certificate of a :class:`Pki` into ``directory``."""
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    other = ca.issue_cert("other.example")
    client = ca.issue_cert("partner-client.example")
    stranger_client = stranger.issue_cert("partner-client.example")

    def write(name: str, blob: trustme.Blob) -> Path:
        path = directory / name
        blob.write_to_path(path)
        return path

    return Pki(
        ca_file=write("ca.pem", ca.cert_pem),
        cert_file=write("server.pem", server.cert_chain_pems[0]),
        key_file=write("server.key", server.private_key_pem),
        other_name_cert_file=write("other.pem", other.cert_chain_pems[0]),
        other_name_key_file=write("other.key", other.private_key_pem),
        client_file=write("client.pem", client.private_key_and_cert_chain_pem),
        stranger_client_file=write(
            "stranger-client.pem", stranger_client.private_key_and_cert_chain_pem
        ),
        stranger_ca_file=write("stranger-ca.pem", stranger.cert_pem),
    )


@contextlib.contextmanager
def serve_https(cert_file: Path, key_file: Path, *, client_ca: Path | None = None) -> Iterator[str]:
    """The bundled app at ``https://127.0.0.1:<port>``, yielded; with ``client_ca``, only
    clients showing a certificate signed by it are let in."""
    config = uvicorn.Config(
        "offerflow.serving.app:app",
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_cert_reqs=ssl.CERT_NONE if client_ca is None else ssl.CERT_REQUIRED,
        ssl_ca_certs=None if client_ca is None else str(client_ca),
        log_level="critical",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="https-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the https server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_S)


@contextlib.contextmanager
def refuse_without_client_cert(pki: Pki) -> Iterator[str]:
    """An https origin on 127.0.0.1 that requires a client certificate signed by ``pki``'s CA
    and answers nothing: each connection ends at the handshake. Yields its base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_file)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(_START_S)
            tls = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
            with contextlib.suppress(ssl.SSLError):
                tls.do_handshake()  # fails on a client without a certificate, sending the alert
            # then read what the client sent until it closes, so that closing sends no reset,
            # which could overtake the alert
            with socket.socket(fileno=tls.detach()) as raw, contextlib.suppress(OSError):
                while raw.recv(65536):
                    pass

    thread = threading.Thread(target=serve, name="mtls-refuser", daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        done.set()
        thread.join(timeout=_START_S)
        listener.close()
