"""Serve the bundled model endpoints: ``python -m offerflow.serving [--host H] [--port P] ...``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from offerflow.errors import OfferflowError
from offerflow.serving.server import serve

__all__ = ["main"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# how often an orphan checks for its parent: a killed run's server outlives it this long
_PARENT_POLL_S = 0.5


def _positive(text: str) -> int:
    """Parse a count of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    """Parse a TCP port, 0 meaning any free port."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 0..65535, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    """Build the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m offerflow.serving", description="Serve the bundled model endpoints."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=8000, help="port to bind, 0 for any free one (default: 8000)"
    )
    parser.add_argument(
        "--workers", type=_positive, default=1, help="worker processes (default: %(default)s)"
    )
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one dies (even by SIGKILL)",
    )
    return parser


def _exit_with_parent() -> None:
    """Stop this server (SIGTERM to itself) once its parent process is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until interrupted; return the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    if args.exit_with_parent:
        _exit_with_parent()
    try:
        serve(host=args.host, port=args.port, workers=args.workers, access_log=args.access_log)
    except OfferflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


# Worker processes are spawned and re-import this module under another name: serve only once.
if __name__ == "__main__":
    sys.exit(main())
