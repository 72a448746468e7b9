"""Sample request bodies shared by tests of the endpoints and the client."""

from __future__ import annotations

#: the features of a plain member, in the job's order: ATS 85.0 (volume 170 · weight 0.5)
PLAIN_FEATURES: dict[str, float] = {
    "AVG_POINTS_BOUGHT": 100.0,
    "AVG_REVENUE_USD": 10.0,
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 200.0,
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 20.0,
    "PCT_BUY_TRANSACTIONS": 0.5,
    "PCT_GIFT_TRANSACTIONS": 0.25,
    "PCT_REDEEM_TRANSACTIONS": 0.25,
    "DAYS_SINCE_LAST_TRANSACTION": 3.0,
}
