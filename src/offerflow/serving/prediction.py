"""The partner's models: request and response bodies, and the pure formulas behind them.

The formulas are those of the job (``docs/architecture.md``, "The bundled models"), written
term for term in the order given there, so that an
independent computation of the same expressions yields equal floats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "OFFER_THRESHOLD",
    "Features",
    "Offer",
    "OfferResponse",
    "PingResponse",
    "Prediction",
    "PredictionResponse",
    "assign_offer",
    "predict_ats",
    "predict_resp",
]

Offer = Literal["OFFER_1", "OFFER_2"]

#: ats_prediction · resp_prediction at or above this earns OFFER_2
OFFER_THRESHOLD = 200


class _Body(BaseModel):
    """A JSON body of the bundled endpoints: immutable, floats must be finite."""

    # JSON parsers accept NaN and Infinity literals; a model input must not.
    model_config = ConfigDict(frozen=True, allow_inf_nan=False)


class Features(_Body):
    """The 8 default features of one member, the body of both model endpoints."""

    AVG_POINTS_BOUGHT: float
    AVG_REVENUE_USD: float
    LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT: float
    LAST_3_TRANSACTIONS_AVG_REVENUE_USD: float
    PCT_BUY_TRANSACTIONS: float
    PCT_GIFT_TRANSACTIONS: float
    PCT_REDEEM_TRANSACTIONS: float
    DAYS_SINCE_LAST_TRANSACTION: float


class Prediction(_Body):
    """Both model predictions of one member, the body of the offer endpoint."""

    ats_prediction: float
    resp_prediction: float


class PredictionResponse(_Body):
    """The answer of a model endpoint."""

    prediction: float


class OfferResponse(_Body):
    """The answer of the offer endpoint."""

    offer: Offer


class PingResponse(_Body):
    """The answer of the health check."""

    msg: str


def predict_ats(f: Features) -> float:
    """Return the average transaction size prediction x: |volume · weight|."""
    volume = 0.7 * f.LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT + 0.3 * f.AVG_POINTS_BOUGHT
    weight = max(0, f.PCT_BUY_TRANSACTIONS + f.PCT_GIFT_TRANSACTIONS - f.PCT_REDEEM_TRANSACTIONS)
    return abs(volume * weight)


def predict_resp(f: Features) -> float:
    """Return the probability-to-respond prediction y: min(0.9, 1000 · product · revenue · day).

    Raises ZeroDivisionError when DAYS_SINCE_LAST_TRANSACTION is -1, where the formula is undefined.
    """
    buy, gift, redeem = f.PCT_BUY_TRANSACTIONS, f.PCT_GIFT_TRANSACTIONS, f.PCT_REDEEM_TRANSACTIONS
    product = 0.4 * buy + 0.3 * gift + 0.3 * redeem
    revenue = (0.3 * f.AVG_REVENUE_USD + 0.7 * f.LAST_3_TRANSACTIONS_AVG_REVENUE_USD) / 100
    day = 1 / (f.DAYS_SINCE_LAST_TRANSACTION + 1)
    return min(0.9, 1000 * product * revenue * day)


def assign_offer(p: Prediction) -> Offer:
    """Return the offer the partner's rule assigns to a member's predictions."""
    return "OFFER_2" if p.ats_prediction * p.resp_prediction >= OFFER_THRESHOLD else "OFFER_1"
