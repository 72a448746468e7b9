"""``python -m offerflow``: the same as the ``offerflow`` command."""

from __future__ import annotations

from offerflow.cli import entry

entry()
