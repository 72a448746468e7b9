"""Secrets at the edges: a URL's query and credentials and a header's value are never shown.

Not in an error, a log line, a repr, nor any file of a run; the query is still sent.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import polars as pl
import pytest
from pydantic import SecretStr

from offerflow.config import load_config
from offerflow.errors import (
    CircuitOpenError,
    EndpointConnectionError,
    EndpointError,
    EndpointStatusError,
    EndpointTimeout,
    EndpointTLSError,
    InvalidResponseError,
    redact_url,
)
from offerflow.pipeline import (
    generate_transactions,
    new_run_dir,
    parse_as_of,
    run_pipeline,
    write_transactions,
)
from offerflow.pipeline.endpoints import Endpoint, ModelClient
from offerflow.pipeline.endpoints.transport import HttpClient, header_lines
from offerflow.pipeline.outputs.sinks import RequestLog
from offerflow.serving import BundledServer
from tests.partner_files import default_document, write_partner

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-k3y"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@models.example/ml/ats?api_key=K#frag", "http://models.example/ml/ats"),
        ("https://models.example:8443/ml/ats?api_key=K", "https://models.example:8443/ml/ats"),
        ("https://[::1]:8443/a?k=v", "https://[::1]:8443/a"),
        ("https://models.example", "https://models.example"),
        ("bundled:/ml/ats?k=v", "bundled:/ml/ats"),
        # a password with an unencoded '/', '?' or '#' hides where the host starts
        ("http://user:pa/ss@models.example/ml", "http://…"),
        ("http://user:pa?ss@models.example/ml", "http://…"),
        ("http://user:pa#ss@models.example/ml", "http://…"),
        ("user:pass@models.example/ml", "(not a URL)"),
        ("http://[::1/a", "(a malformed URL)"),
    ],
)
def test_a_url_is_shown_as_scheme_host_port_and_path_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "error",
    [
        EndpointError,
        EndpointTimeout,
        EndpointConnectionError,
        EndpointTLSError,
        CircuitOpenError,
        InvalidResponseError,
    ],
)
def test_every_endpoint_error_shows_its_url_redacted(error: type[EndpointError]) -> None:
    raised = error("boom", endpoint="ats", url=f"http://u:{SECRET}@h:81/p?api_key={SECRET}")
    assert str(raised) == "endpoint 'ats' (http://h:81/p): boom"
    assert raised.url == "http://h:81/p"
    assert raised.reason == "boom"


def test_a_status_error_shows_its_url_redacted() -> None:
    raised = EndpointStatusError(
        "HTTP 500", status_code=500, endpoint="ats", url=f"https://h/p?key={SECRET}"
    )
    assert SECRET not in str(raised)


def test_an_endpoint_shows_header_names_but_no_value_and_no_query() -> None:
    endpoint = Endpoint(
        "ats",
        f"https://models.example/ml/ats?api_key={SECRET}",
        "prediction",
        headers={"Authorization": SecretStr(f"Bearer {SECRET}")},
        proxy=f"http://user:{SECRET}@proxy.example:3128",
    )
    shown = repr(endpoint)
    assert SECRET not in shown
    assert "'Authorization'" in shown
    assert "https://models.example/ml/ats" in shown
    assert "proxy.example:3128" in shown


def test_a_route_shows_neither_its_head_nor_its_query() -> None:
    route = HttpClient().route(
        f"https://models.example/ml/ats?api_key={SECRET}",
        headers=header_lines([("Authorization", f"Bearer {SECRET}")]),
    )
    assert SECRET not in repr(route)
    assert SECRET.encode() in route.head  # but it is sent


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_errors_log_lines_and_the_request_log_never_show_the_query(
    closed_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{closed_port}/ml/ats/predict?api_key={SECRET}"
    requests = RequestLog(tmp_path / ".parts")
    endpoint = Endpoint("ats", url, "prediction", retries=1, backoff_initial_s=0.001)
    with caplog.at_level(logging.DEBUG, logger="offerflow"):
        async with ModelClient([endpoint], attempts=requests) as client:
            with pytest.raises(EndpointConnectionError) as caught:
                await client.call("ats", "m1", b"{}")
    requests.finish(tmp_path / "requests.parquet")
    assert f"(http://127.0.0.1:{closed_port}/ml/ats/predict)" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert "ats attempt 1 for member m1 failed" in caplog.text
    assert SECRET not in caplog.text
    errors = pl.read_parquet(tmp_path / "requests.parquet").get_column("error").to_list()
    assert len(errors) == 2
    assert not any(SECRET in error for error in errors)


@pytest.mark.slow
async def test_no_file_of_a_run_holds_the_query_of_a_failing_endpoint(
    closed_port: int, bundled: BundledServer, tmp_path: Path
) -> None:
    data = tmp_path / "members.csv"
    write_transactions(generate_transactions(20, seed=3), data)
    document = default_document(bundled.base_url, data)
    ats = document["models"][0]
    ats.update(url=f"http://127.0.0.1:{closed_port}/ml/ats/predict?api_key=${{KEY}}", retries=0)
    config = load_config(write_partner(tmp_path / "p.yaml", document), environ={"KEY": SECRET})
    run_dir = new_run_dir(config, tmp_path / "runs", "secret")
    report = await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of("2024-01-10"))

    assert report.summary["ledger"]["members_by_status"].get("endpoint_unavailable", 0) > 0
    offers = pl.read_parquet(run_dir / "offers.parquet")
    errors = offers.get_column("error").drop_nulls().to_list()
    assert errors
    assert all(f"(http://127.0.0.1:{closed_port}/ml/ats/predict)" in e for e in errors)
    tables = [
        offers,
        pl.read_csv(run_dir / "offers.csv"),
        pl.read_parquet(run_dir / "requests.parquet"),
    ]
    for table in tables:
        for column in table.select(pl.col(pl.String)).iter_columns():
            assert not column.str.contains(SECRET, literal=True).any()
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".log"):
            assert SECRET not in path.read_text(), path
