"""The figures of a comparison of two runs, and how they are shown: as JSON, and as text.

What a comparison holds is apart from how :mod:`~offerflow.pipeline.outputs.drift` computes it,
so that its readers (``offerflow compare``, ``report.html``) need only its fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from offerflow.config import DriftConfig
from offerflow.pipeline.outputs.console import aligned
from offerflow.pipeline.outputs.console import format_number as _num
from offerflow.pipeline.outputs.history import PastRun

__all__ = ["ColumnDrift", "Comparison", "LatencyChange", "LedgerChange", "OfferShareChange"]


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """A feature or a prediction in both runs."""

    name: str
    kind: str  # "feature" or "prediction"
    psi: float
    median_a: float | None
    median_b: float | None
    median_shift: float | None
    p90_a: float | None
    p90_b: float | None
    p90_shift: float | None
    drifted_by: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        """True when some figure of the column is past its limit."""
        return bool(self.drifted_by)


@dataclass(frozen=True, slots=True)
class OfferShareChange:
    """An offer type's share of the offers in both runs."""

    offer: str
    share_a: float
    share_b: float
    change: float
    drifted: bool


@dataclass(frozen=True, slots=True)
class LatencyChange:
    """An endpoint's attempt latency in both runs, in milliseconds."""

    endpoint: str
    p50_a_ms: float | None
    p50_b_ms: float | None
    p99_a_ms: float | None
    p99_b_ms: float | None
    p99_ratio: float | None
    drifted: bool


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """A ledger figure in both runs (reported, not judged)."""

    figure: str
    a: int | None
    b: int | None
    change: int | None
    drifted: bool = False


@dataclass(frozen=True, slots=True)
class Comparison:
    """Run B against baseline A: every figure, and which drifted past the limits."""

    baseline: PastRun
    run: PastRun
    limits: DriftConfig
    #: where the limits came from: B's run.json, its config file, or the defaults
    limits_from: str
    columns: tuple[ColumnDrift, ...]
    offers: tuple[OfferShareChange, ...]
    latency: tuple[LatencyChange, ...]
    ledger: tuple[LedgerChange, ...]
    #: columns in only one of the runs: not compared
    unmatched: tuple[str, ...] = field(default=())

    @property
    def drifted(self) -> tuple[str, ...]:
        """Each figure past its limit, e.g. ``psi DAYS_SINCE_LAST_TRANSACTION``."""
        return (
            *(f"{by} {c.name}" for c in self.columns for by in c.drifted_by),
            *(f"offer_share {o.offer}" for o in self.offers if o.drifted),
            *(f"latency_p99_ratio {e.endpoint}" for e in self.latency if e.drifted),
        )

    def as_dict(self) -> dict[str, Any]:
        """The comparison for machines: every figure with a ``drifted`` true/false."""

        def run(past: PastRun) -> dict[str, Any]:
            return {"dir": str(past.dir), "run_id": past.run_id, "as_of": past.as_of}

        columns = [{**asdict(c), "drifted": c.drifted} for c in self.columns]
        figures: dict[str, Any] = _finite(
            {
                "baseline": run(self.baseline),
                "run": run(self.run),
                "limits": self.limits.model_dump(),
                "limits_from": self.limits_from,
                "drifted": bool(self.drifted),
                "drifted_figures": list(self.drifted),
                "columns": columns,
                "offers": [asdict(o) for o in self.offers],
                "latency": [asdict(e) for e in self.latency],
                "ledger": [asdict(g) for g in self.ledger],
                "unmatched_columns": list(self.unmatched),
            }
        )
        return figures

    def tables(self) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
        """The comparison for people as tables, a header and rows of text each, drifted
        figures marked ``DRIFT`` in their last column: what ``compare`` prints and the report
        shows."""
        return [
            (
                ("feature / prediction", "psi", "median a → b", "shift", "p90 a → b", "shift", ""),
                [
                    (
                        c.name,
                        f"{c.psi:.3f}",
                        f"{_num(c.median_a)} → {_num(c.median_b)}",
                        _pct(c.median_shift),
                        f"{_num(c.p90_a)} → {_num(c.p90_b)}",
                        _pct(c.p90_shift),
                        "DRIFT " + ", ".join(c.drifted_by) if c.drifted else "",
                    )
                    for c in self.columns
                ],
            ),
            (
                ("offer", "share a → b", "change", ""),
                [
                    (
                        o.offer,
                        f"{o.share_a:.1%} → {o.share_b:.1%}",
                        f"{o.change * 100:+.1f} pts",
                        "DRIFT" if o.drifted else "",
                    )
                    for o in self.offers
                ],
            ),
            (
                ("endpoint", "p50 a → b (ms)", "p99 a → b (ms)", "p99 ratio", ""),
                [
                    (
                        e.endpoint,
                        f"{_num(e.p50_a_ms)} → {_num(e.p50_b_ms)}",
                        f"{_num(e.p99_a_ms)} → {_num(e.p99_b_ms)}",
                        _num(e.p99_ratio),
                        "DRIFT" if e.drifted else "",
                    )
                    for e in self.latency
                ],
            ),
            (
                ("ledger", "a", "b", "change"),
                [
                    (g.figure, _num(g.a), _num(g.b), "—" if g.change is None else f"{g.change:+,}")
                    for g in self.ledger
                ],
            ),
        ]

    @property
    def verdict(self) -> str:
        """One line: the figures beyond the limits, or that there are none."""
        if self.drifted:
            return f"drift: {len(self.drifted)} figure(s) beyond the limits: " + ", ".join(
                self.drifted
            )
        return "no drift beyond the limits"

    def as_text(self) -> str:
        """The comparison for people: aligned tables, drifted figures marked ``DRIFT``."""
        a, b = self.baseline, self.run
        limits = ", ".join(f"{k} {_num(v)}" for k, v in self.limits.model_dump().items())
        blocks = [
            f"baseline {a.run_id} (as of {a.as_of})\nrun      {b.run_id} (as of {b.as_of})\n"
            f"limits ({self.limits_from}): {limits}",
            *(aligned(header, rows) for header, rows in self.tables()),
        ]
        if self.unmatched:
            blocks.append(f"in one run only, not compared: {', '.join(self.unmatched)}")
        return "\n\n".join([*blocks, self.verdict]) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float as None: JSON has no infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pct(value: float | None) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "+∞" if value > 0 else "-∞"
    return f"{value:+.0%}"
