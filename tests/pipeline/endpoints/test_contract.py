"""Contract checks: what the config would send, against each endpoint's published request schema.

Against the bundled server, which documents its json and json-batch routes at ``/openapi.json``
and its KServe v2 models at ``/v2/models/{name}``; the fault server stands for an endpoint that
publishes no schema, a closed port for one that cannot be asked.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from offerflow.cli import main
from offerflow.config import DEFAULT_FEATURES, ProtocolName, load_config
from offerflow.errors import ContractError
from offerflow.pipeline import (
    ContractReport,
    check_contracts,
    client_for,
    new_run_dir,
    parse_as_of,
    run_pipeline,
)
from offerflow.serving import BundledServer
from offerflow.serving.app import app
from tests.faults import POST_ROUTES, FaultServer
from tests.partner_files import ROUTES, default_document, write_partner

pytestmark = pytest.mark.anyio

ENDPOINTS = ["ats", "resp", "offer"]
CHECKED: list[ProtocolName] = ["json", "json-batch", "kserve-v2"]
FEATURES = {name: name for name in DEFAULT_FEATURES}


@pytest.fixture(scope="module")
def no_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    """The fault server, faultless: the bundled routes, no ``/openapi.json``."""
    with FaultServer({}, tmp_path_factory.mktemp("no-schema")) as server:
        yield server


def _document(server: BundledServer, protocol: ProtocolName = "json") -> dict[str, Any]:
    """The default partner with every endpoint on ``protocol`` at the bundled server."""
    document = default_document(server.base_url)
    for endpoint in [*document["models"], document["offer"]]:
        endpoint["url"] = server.base_url + ROUTES[protocol][endpoint["name"]]
        endpoint["protocol"] = protocol
        endpoint.pop("response_field", None)
    return document


def _endpoint(document: dict[str, Any], name: str) -> dict[str, Any]:
    endpoints: list[dict[str, Any]] = [*document["models"], document["offer"]]
    (endpoint,) = [e for e in endpoints if e["name"] == name]
    return endpoint


async def _check(document: dict[str, Any], tmp_path: Path) -> ContractReport:
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    async with client_for(config) as client:
        return await check_contracts(config, client)


@pytest.mark.parametrize("protocol", CHECKED)
async def test_the_default_partner_matches_every_endpoint(
    tmp_path: Path, bundled: BundledServer, protocol: ProtocolName
) -> None:
    report = await _check(_document(bundled, protocol), tmp_path)
    assert report.mismatches == []
    assert report.unreachable == []
    assert report.checked == ENDPOINTS


#: (endpoint, its request template, the field the mismatch names, what the mismatch says)
MISMATCHES = [
    pytest.param(
        "ats",
        {k: v for k, v in FEATURES.items() if k != "PCT_GIFT_TRANSACTIONS"},
        "PCT_GIFT_TRANSACTIONS",
        "requires field",
        id="missing-field",
    ),
    pytest.param(
        "resp",
        FEATURES | {"CHANNEL": {"const": 1.0}},
        "CHANNEL",
        "sends field",
        id="extra-field",
    ),
    pytest.param(
        "ats",
        FEATURES | {"AVG_REVENUE_USD": {"const": "x"}},
        "AVG_REVENUE_USD",
        "sent as a string",
        id="const-string-for-a-number",
    ),
    pytest.param(
        "offer",
        {"ats_prediction": "ats", "resp_prediction": "member_id"},
        "resp_prediction",
        "sent as a string",
        id="member-id-for-a-number",
    ),
]


@pytest.mark.parametrize("protocol", CHECKED)
@pytest.mark.parametrize(("endpoint", "template", "field", "says"), MISMATCHES)
async def test_a_template_the_endpoint_refuses_is_one_mismatch_naming_endpoint_and_field(
    tmp_path: Path,
    bundled: BundledServer,
    protocol: ProtocolName,
    endpoint: str,
    template: dict[str, Any],
    field: str,
    says: str,
) -> None:
    document = _document(bundled, protocol)
    _endpoint(document, endpoint)["request"] = template
    report = await _check(document, tmp_path)
    (mismatch,) = report.mismatches
    assert mismatch.startswith(f"{endpoint}: ")
    assert f"'{field}'" in mismatch
    assert says in mismatch
    assert report.checked == ENDPOINTS


async def test_a_mismatch_inside_a_nested_template_names_the_nested_field(
    tmp_path: Path, bundled: BundledServer
) -> None:
    document = _document(bundled, "json")
    _endpoint(document, "ats")["request"] = {"features": FEATURES}
    report = await _check(document, tmp_path)
    assert "ats: the config sends field 'features', the endpoint has none" in report.mismatches
    assert len(report.mismatches) == 1 + len(FEATURES)  # and every feature it then misses


async def test_mlflow_endpoints_are_not_checked(tmp_path: Path, bundled: BundledServer) -> None:
    document = _document(bundled, "mlflow")
    # a template the model would refuse: not checked, so not a mismatch
    _endpoint(document, "ats")["request"] = FEATURES | {"AVG_REVENUE_USD": {"const": "x"}}
    report = await _check(document, tmp_path)
    assert report.checked == []
    assert report.mismatches == []
    assert report.unreachable == []


async def test_an_endpoint_that_publishes_no_schema_is_not_checked(
    tmp_path: Path, bundled: BundledServer, no_schema: FaultServer
) -> None:
    document = _document(bundled)
    ats = _endpoint(document, "ats")
    ats["url"] = no_schema.base_url + "/ml/ats/predict"
    ats["request"] = FEATURES | {"CHANNEL": {"const": 1.0}}
    report = await _check(document, tmp_path)
    assert report.checked == ["resp", "offer"]
    assert report.mismatches == []
    assert report.unreachable == []


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("protocol", CHECKED)
async def test_an_endpoint_that_cannot_be_asked_is_unreachable_not_a_mismatch(
    tmp_path: Path, bundled: BundledServer, closed_port: int, protocol: ProtocolName
) -> None:
    document = _document(bundled, protocol)
    resp = _endpoint(document, "resp")
    resp["url"] = f"http://127.0.0.1:{closed_port}" + ROUTES[protocol]["resp"]
    report = await _check(document, tmp_path)
    (unreachable,) = report.unreachable
    assert unreachable.startswith(f"resp: cannot ask http://127.0.0.1:{closed_port}")
    assert report.mismatches == []
    assert report.checked == ["ats", "offer"]


async def test_a_run_with_a_mismatch_stops_before_any_model_call(
    tmp_path: Path, bundled: BundledServer, no_schema: FaultServer
) -> None:
    document = _document(bundled)
    # the models on a server that logs every call; the offer, checked, sends a string
    for model in document["models"]:
        model["url"] = no_schema.base_url + ROUTES["json"][model["name"]]
    document["offer"]["request"] = {"ats_prediction": "ats", "resp_prediction": "member_id"}
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    run_dir = new_run_dir(config, tmp_path / "runs", "test")

    with pytest.raises(ContractError, match="offer: field 'resp_prediction'"):
        await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of("2024-01-10"))

    assert [call for call in no_schema.requests() if call["path"] in POST_ROUTES] == []
    assert not (run_dir / "requests.parquet").exists()
    parts = sorted((run_dir / ".parts").glob("requests-*.parquet"))
    assert sum(pl.read_parquet(part).height for part in parts) == 0


TOKEN = "t0ken-for-the-schema"


@pytest.fixture(scope="module")
def behind_auth() -> Iterator[str]:
    """A server on 127.0.0.1 publishing the bundled app's OpenAPI document (and its KServe
    models' metadata) only to requests with ``Authorization: Bearer TOKEN``; 401 otherwise."""
    documents = {"/openapi.json": orjson.dumps(app.openapi())}
    for model in ENDPOINTS:
        inputs = [{"name": name, "datatype": "FP64", "shape": [-1]} for name in DEFAULT_FEATURES]
        documents[f"/v2/models/{model}"] = orjson.dumps({"name": model, "inputs": inputs})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = documents.get(self.path)
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                body = b""
            elif body is None:
                self.send_response(404)
                body = b""
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _authorized(base_url: str, tmp_path: Path, protocol: ProtocolName = "json") -> Path:
    document = default_document(base_url)
    for endpoint in [*document["models"], document["offer"]]:
        endpoint["url"] = base_url + ROUTES[protocol][endpoint["name"]]
        endpoint["protocol"] = protocol
        endpoint.pop("response_field", None)
        endpoint["headers"] = {"Authorization": "Bearer ${TOKEN}"}
    return write_partner(tmp_path / "partner.yaml", document)


@pytest.mark.parametrize("protocol", ["json", "kserve-v2"])
async def test_schemas_are_asked_for_with_the_endpoints_headers(
    behind_auth: str, tmp_path: Path, protocol: ProtocolName
) -> None:
    config = load_config(_authorized(behind_auth, tmp_path, protocol), environ={"TOKEN": TOKEN})
    async with client_for(config) as client:
        report = await check_contracts(config, client)
    assert report.checked == ENDPOINTS
    assert report.unreachable == []


def test_validate_check_endpoints_checks_an_endpoint_behind_authentication(
    behind_auth: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TOKEN", TOKEN)
    assert main(["validate", str(_authorized(behind_auth, tmp_path)), "--check-endpoints"]) == 0
    assert "endpoints checked: ats, resp, offer\n" in capsys.readouterr().out
