"""An independent reference of the job in plain Python, for checking runs.

The job and the bundled models are described in docs/architecture.md.

It shares no code with offerflow: the csv module, datetime and the formulas written out again.
A row whose five columns hold exactly the text of an earlier usable row is a duplicate: skipped.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

COLUMNS = ("memberId", "lastTransactionUtcTs", "lastTransactionType")
POINTS, REVENUE = "lastTransactionPointsBought", "lastTransactionRevenueUSD"


@dataclass(frozen=True)
class Expected:
    """What one member must end with."""

    features: dict[str, float]
    ats: float
    resp: float
    offer: str


def _parse_ts(text: str) -> datetime | None:
    text = text.strip()
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(text.replace("Z", "+0000"), form)
        except ValueError:
            continue
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def expected_results(path: Path, as_of_day: date) -> tuple[int, dict[str, Expected | None]]:
    """Rows in the file, and per member id its expected result (None: no usable transaction)."""
    as_of = datetime(as_of_day.year, as_of_day.month, as_of_day.day, 23, 59, 59, 999999, UTC)
    usable: dict[str, list[tuple[datetime, int, str, float, float]]] = {}
    seen: set[tuple[str, ...]] = set()
    rows = 0
    with path.open(newline="", encoding="utf-8") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            rows += 1
            member = (row["memberId"] or "").strip()
            if not member:
                continue
            usable.setdefault(member, [])
            ts = _parse_ts(row["lastTransactionUtcTs"] or "")
            kind = (row["lastTransactionType"] or "").strip().lower()
            points, revenue = _number(row[POINTS] or ""), _number(row[REVENUE] or "")
            if ts is None or ts > as_of or kind not in ("buy", "gift", "redeem"):
                continue
            if points is None or revenue is None:
                continue
            raw = tuple(row[column] for column in (*COLUMNS, POINTS, REVENUE))
            if raw in seen:
                continue
            seen.add(raw)
            usable[member].append((ts, index, kind, points, revenue))
    return rows, {m: _expected(t, as_of_day) if t else None for m, t in usable.items()}


def _expected(transactions: list[tuple[datetime, int, str, float, float]], day: date) -> Expected:
    n = len(transactions)
    ordered = sorted(transactions, key=lambda t: (t[0], t[1]))
    last3 = ordered[-3:]
    features = {
        "AVG_POINTS_BOUGHT": sum(t[3] for t in transactions) / n,
        "AVG_REVENUE_USD": sum(t[4] for t in transactions) / n,
        "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": sum(t[3] for t in last3) / len(last3),
        "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": sum(t[4] for t in last3) / len(last3),
        "PCT_BUY_TRANSACTIONS": sum(t[2] == "buy" for t in transactions) / n,
        "PCT_GIFT_TRANSACTIONS": sum(t[2] == "gift" for t in transactions) / n,
        "PCT_REDEEM_TRANSACTIONS": sum(t[2] == "redeem" for t in transactions) / n,
        "DAYS_SINCE_LAST_TRANSACTION": float((day - ordered[-1][0].date()).days),
    }
    f = features
    volume = 0.7 * f["LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT"] + 0.3 * f["AVG_POINTS_BOUGHT"]
    weight = max(
        0.0, f["PCT_BUY_TRANSACTIONS"] + f["PCT_GIFT_TRANSACTIONS"] - f["PCT_REDEEM_TRANSACTIONS"]
    )
    ats = abs(volume * weight)
    product = (
        0.4 * f["PCT_BUY_TRANSACTIONS"]
        + 0.3 * f["PCT_GIFT_TRANSACTIONS"]
        + 0.3 * f["PCT_REDEEM_TRANSACTIONS"]
    )
    revenue = (0.3 * f["AVG_REVENUE_USD"] + 0.7 * f["LAST_3_TRANSACTIONS_AVG_REVENUE_USD"]) / 100
    recency = 1 / (f["DAYS_SINCE_LAST_TRANSACTION"] + 1)
    resp = min(0.9, 1000 * product * revenue * recency)
    offer = "OFFER_2" if ats * resp >= 200 else "OFFER_1"
    return Expected(features, ats, resp, offer)
