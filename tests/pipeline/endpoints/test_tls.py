"""The model client over TLS, against real TLS servers on 127.0.0.1 with a throwaway CA."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from offerflow.config import load_config
from offerflow.errors import EndpointConnectionError, EndpointTLSError, ExitCode
from offerflow.pipeline import (
    generate_transactions,
    new_run_dir,
    parse_as_of,
    run_pipeline,
    write_transactions,
)
from offerflow.pipeline.endpoints import Endpoint, ModelClient, Tls
from tests.partner_files import default_document, write_partner
from tests.tls import Pki, make_pki, refuse_without_client_cert, serve_https

pytestmark = pytest.mark.anyio

ROUTE = "/ml/ats/predict"
FEATURES = {
    "AVG_POINTS_BOUGHT": 1000.0,
    "AVG_REVENUE_USD": 10.0,
    "LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT": 2000.0,
    "LAST_3_TRANSACTIONS_AVG_REVENUE_USD": 20.0,
    "PCT_BUY_TRANSACTIONS": 0.5,
    "PCT_GIFT_TRANSACTIONS": 0.25,
    "PCT_REDEEM_TRANSACTIONS": 0.25,
    "DAYS_SINCE_LAST_TRANSACTION": 3,
}
BODY = orjson.dumps(FEATURES)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https(pki: Pki) -> Iterator[str]:
    """The bundled app over TLS, its certificate for 127.0.0.1 signed by ``pki``'s CA."""
    with serve_https(pki.cert_file, pki.key_file) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def other_name(pki: Pki) -> Iterator[str]:
    """The bundled app over TLS on 127.0.0.1, its certificate (same CA) for another name."""
    with serve_https(pki.other_name_cert_file, pki.other_name_key_file) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[str]:
    """The bundled app over TLS, letting in only clients with a certificate from ``pki``'s CA."""
    with serve_https(pki.cert_file, pki.key_file, client_ca=pki.ca_file) as base_url:
        yield base_url


def _client(url: str, *, tls: Tls | None = None, **options: Any) -> ModelClient:
    endpoint = Endpoint("ats", url, "prediction", tls=tls, backoff_initial_s=0.001, **options)
    return ModelClient([endpoint])


async def test_a_server_whose_ca_is_the_configured_ca_file_is_trusted(pki: Pki, https: str) -> None:
    async with _client(https + ROUTE, tls=Tls(ca_file=pki.ca_file)) as client:
        result = await client.call("ats", "m1", BODY)
    assert result.attempts == 1
    assert isinstance(result.value, float)


async def test_an_untrusted_certificate_is_a_final_tls_error_the_breaker_does_not_count(
    https: str,
) -> None:
    # the system's CA bundle does not know the throwaway CA
    async with _client(https + ROUTE, retries=2, breaker_failures=2) as client:
        for member in ("m1", "m2", "m3"):
            with pytest.raises(EndpointTLSError) as caught:
                await client.call("ats", member, BODY)
            assert caught.value.attempt == 1  # not retried
        assert client.breakers["ats"].state == "closed"  # a certificate is not an outage
    assert caught.value.status == "tls_error"
    assert "certificate is not trusted" in str(caught.value)
    assert "unable to get local issuer certificate" in str(caught.value)


async def test_a_certificate_from_another_ca_than_ca_file_is_refused(pki: Pki, https: str) -> None:
    async with _client(https + ROUTE, tls=Tls(ca_file=pki.stranger_ca_file)) as client:
        with pytest.raises(EndpointTLSError, match="not trusted"):
            await client.call("ats", "m1", BODY)


async def test_a_certificate_for_another_name_is_refused(pki: Pki, other_name: str) -> None:
    async with _client(other_name + ROUTE, tls=Tls(ca_file=pki.ca_file)) as client:
        with pytest.raises(EndpointTLSError, match="mismatch") as caught:
            await client.call("ats", "m1", BODY)
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)


async def test_a_client_certificate_lets_the_client_into_a_mutual_tls_server(
    pki: Pki, mutual: str
) -> None:
    tls = Tls(ca_file=pki.ca_file, cert_file=pki.client_file)
    async with _client(mutual + ROUTE, tls=tls) as client:
        result = await client.call("ats", "m1", BODY)
    assert isinstance(result.value, float)


async def test_without_a_client_certificate_a_silent_mutual_tls_server_gets_a_hint(
    pki: Pki, mutual: str
) -> None:
    # uvicorn (asyncio) closes the connection without telling why: a connection error, with
    # the likely cause named
    async with _client(mutual + ROUTE, tls=Tls(ca_file=pki.ca_file), retries=0) as client:
        with pytest.raises(EndpointConnectionError, match="requires a client certificate"):
            await client.call("ats", "m1", BODY)


async def test_a_server_that_says_it_requires_a_client_certificate_is_a_tls_error(
    pki: Pki,
) -> None:
    with refuse_without_client_cert(pki) as base_url:
        async with _client(base_url + ROUTE, tls=Tls(ca_file=pki.ca_file), retries=2) as client:
            with pytest.raises(EndpointTLSError, match="certificate required") as caught:
                await client.call("ats", "m1", BODY)
    assert caught.value.attempt == 1


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [True, False], ids=["ca_file", "system-bundle"])
async def test_a_run_over_tls_scores_with_ca_file_and_records_tls_error_without(
    pki: Pki, https: str, tmp_path: Path, trusted: bool
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(30, seed=5), data)
    document = default_document(https, data)
    if trusted:
        shutil.copy(pki.ca_file, tmp_path / "partner-ca.pem")
        for endpoint in [*document["models"], document["offer"]]:
            endpoint["ca_file"] = "partner-ca.pem"  # relative to the config file
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    run_dir = new_run_dir(config, tmp_path / "runs", "tls")
    report = await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of("2024-01-10"))

    by_status = report.summary["ledger"]["members_by_status"]
    scored = sum(n for status, n in by_status.items() if status != "no_transactions")
    if trusted:
        assert by_status.get("ok") == scored
        assert report.exit_code == ExitCode.OK
        return
    assert by_status.get("tls_error") == scored
    assert report.exit_code == ExitCode.MEMBER_FAILURES  # above the failure budget of 0
    offers = pl.read_parquet(run_dir / "offers.parquet").filter(pl.col("status") == "tls_error")
    attempts = offers.select(pl.sum_horizontal("ats_attempts", "resp_attempts", "offer_attempts"))
    assert attempts.to_series().unique().to_list() == [1]  # the failing one, never retried
    assert offers.get_column("error").str.contains("certificate is not trusted").all()
