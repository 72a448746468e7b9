"""``python -m offerflow``: the same as the ``offerflow`` command."""

from __future__ import annotations

import sys

from offerflow.cli import main

sys.exit(main())
