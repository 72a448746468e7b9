"""Stopping a run: a request to stop, the signals that ask for it, and the grace it gives.

The first SIGINT or SIGTERM asks the run to stop: no new member is taken, in-flight calls get
the partner's ``shutdown_grace_s`` to finish, then whatever is still running is cancelled, and
the run commits what it has. A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

__all__ = ["Shutdown", "cancel_after_grace", "watch_signals"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Shutdown:
    """A request to stop a run early, e.g. from a signal: no new members, then commit."""

    stopping: anyio.Event = field(default_factory=anyio.Event)
    signal: int | None = None

    def request(self, signal: int) -> None:
        """Ask the run to stop: it takes no new member and lets in-flight calls finish."""
        self.signal = signal
        self.stopping.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.stopping.is_set()

    @property
    def exit_code(self) -> int:
        """The conventional exit code of a process stopped by the signal: 128 + its number."""
        return 128 + (self.signal or 2)


async def watch_signals(shutdown: Shutdown, *, before_exit: Callable[[], None]) -> None:
    """Turn the first SIGINT/SIGTERM into a stop request; at a second, ``before_exit()`` and
    leave the process at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if shutdown.requested:
                log.warning("second signal: exiting now")
                before_exit()
                os._exit(128 + signum)
            log.warning(
                "%s: finishing in-flight calls, then committing; send it again to exit now",
                signal.Signals(signum).name,
            )
            shutdown.request(signum)


async def cancel_after_grace(shutdown: Shutdown, scope: anyio.CancelScope, grace_s: float) -> None:
    """Once a stop is asked for, give in-flight calls ``grace_s`` seconds, then cancel them."""
    await shutdown.stopping.wait()
    log.warning("stopping: no new members; in-flight calls have %.1f s to finish", grace_s)
    await anyio.sleep(grace_s)
    if not scope.cancel_called:
        log.warning("stopping: grace period over, cancelling in-flight calls")
        scope.cancel()
