"""Endpoint protocols: the body each protocol sends, how answers are read, and whole runs on each.

The codec tests state the wire format of ``json``, ``json-batch``, ``mlflow`` and ``kserve-v2``
as README.md documents it; the run tests switch every endpoint of the default partner to a
batched protocol and expect exactly what the ``json`` run gives.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
import polars as pl
import pytest
from aiohttp import web
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from offerflow.config import (
    DEFAULT_FEATURES,
    PROTOCOLS,
    ModelConfig,
    OfferConfig,
    ProtocolName,
    load_config,
)
from offerflow.engine import ItemError
from offerflow.errors import CallInterrupted
from offerflow.pipeline import (
    Codec,
    Member,
    client_for,
    generate_transactions,
    new_run_dir,
    parse_as_of,
    run_pipeline,
    write_transactions,
)
from offerflow.pipeline.calls import endpoint_call as _stage
from offerflow.pipeline.endpoints.codec import compile_template, render
from offerflow.serving import BundledServer
from tests.local_http import serve_route
from tests.partner_files import ROUTES, default_document, write_partner

AS_OF = "2024-01-10"
BATCHED: tuple[ProtocolName, ...] = ("json-batch", "mlflow", "kserve-v2")
BATCH_SIZE = 50
# the columns of offers.parquet a protocol may change: latencies
_TIMINGS = pl.selectors.ends_with("_ms")


def _codec(
    protocol: ProtocolName,
    template: dict[str, Any] | None = None,
    *,
    response_field: str | None = None,
    features: tuple[str, ...] = ("A", "B"),
) -> Codec:
    endpoint = ModelConfig(
        name="model",
        url="http://127.0.0.1:9/model",
        protocol=protocol,
        request=template,
        response_field=response_field,
    )
    return Codec.for_endpoint(endpoint, features, "number")


def _offer_codec(protocol: ProtocolName) -> Codec:
    endpoint = OfferConfig(url="http://127.0.0.1:9/offer", protocol=protocol, request={"x": "m"})
    return Codec.for_endpoint(endpoint, (), "label")


def _answer(protocol: ProtocolName, values: Any, name: str = "prediction") -> Any:
    """A decoded answer carrying ``values`` where the protocol's default path puts them."""
    if protocol == "json":
        return {name: values}
    if protocol == "kserve-v2":
        shape = [len(values)] if isinstance(values, list) else [1]
        return {"outputs": [{"name": name, "datatype": "FP64", "shape": shape, "data": values}]}
    return {"predictions": values}


# --- request bodies ---------------------------------------------------------------------------

#: a flat template in an order that is not alphabetical, with every kind of leaf
FLAT = {"score_b": "B", "id": "member_id", "version": {"const": 7}, "score_a": "A"}
KNOWN = [
    {"A": 1.5, "B": 3, "member_id": "m1"},
    {"A": -0.25, "B": 4, "member_id": "m2"},
]


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        pytest.param(
            "json-batch",
            {
                "instances": [
                    {"score_b": 3, "id": "m1", "version": 7, "score_a": 1.5},
                    {"score_b": 4, "id": "m2", "version": 7, "score_a": -0.25},
                ]
            },
            id="json-batch",
        ),
        pytest.param(
            "mlflow",
            {
                "dataframe_split": {
                    "columns": ["score_b", "id", "version", "score_a"],
                    "data": [[3, "m1", 7, 1.5], [4, "m2", 7, -0.25]],
                }
            },
            id="mlflow",
        ),
        pytest.param(
            "kserve-v2",
            {
                "inputs": [
                    {"name": "score_b", "shape": [2], "datatype": "INT64", "data": [3, 4]},
                    {"name": "id", "shape": [2], "datatype": "BYTES", "data": ["m1", "m2"]},
                    {"name": "version", "shape": [2], "datatype": "INT64", "data": [7, 7]},
                    {"name": "score_a", "shape": [2], "datatype": "FP64", "data": [1.5, -0.25]},
                ]
            },
            id="kserve-v2",
        ),
    ],
)
def test_a_batched_body_carries_every_member_in_the_protocols_shape(
    protocol: ProtocolName, expected: dict[str, Any]
) -> None:
    body = orjson.loads(_codec(protocol, FLAT).body(KNOWN))
    assert body == expected


@pytest.mark.parametrize("protocol", BATCHED)
def test_a_batched_body_keeps_the_template_order(protocol: ProtocolName) -> None:
    body = orjson.loads(_codec(protocol, FLAT).body(KNOWN))
    if protocol == "json-batch":
        names = [list(instance) for instance in body["instances"]]
        assert names == [list(FLAT), list(FLAT)]
    elif protocol == "mlflow":
        assert body["dataframe_split"]["columns"] == list(FLAT)
    else:
        assert [tensor["name"] for tensor in body["inputs"]] == list(FLAT)


def test_a_json_body_is_the_rendered_template_of_one_member() -> None:
    body = _codec("json", FLAT).body(KNOWN[:1])
    assert list(orjson.loads(body).items()) == [
        ("score_b", 3),
        ("id", "m1"),
        ("version", 7),
        ("score_a", 1.5),
    ]


@pytest.mark.parametrize(
    ("values", "datatype"),
    [
        pytest.param([0.5, 2.0], "FP64", id="floats"),
        pytest.param([1, 2], "INT64", id="integers"),
        pytest.param([1, 2.5], "FP64", id="integers-and-floats"),
        pytest.param(["a", "b"], "BYTES", id="strings"),
    ],
)
def test_a_kserve_tensor_takes_the_datatype_of_its_values(values: list[Any], datatype: str) -> None:
    known = [{"A": value} for value in values]
    (tensor,) = orjson.loads(_codec("kserve-v2", {"x": "A"}).body(known))["inputs"]
    assert tensor == {"name": "x", "shape": [len(values)], "datatype": datatype, "data": values}


#: a nested template: nested mappings make nested JSON, a const may be any JSON value
NESTED = {
    "member": "member_id",
    "features": {"a": "A", "more": {"b": "B", "source": {"const": "offerflow"}}},
    "options": {"const": {"explain": False}},
}
NESTED_ROW = {
    "member": "m1",
    "features": {"a": 1.5, "more": {"b": 3, "source": "offerflow"}},
    "options": {"explain": False},
}


def test_render_replaces_references_and_unwraps_literals_at_every_depth() -> None:
    assert render(NESTED, KNOWN[0]) == NESTED_ROW


@pytest.mark.parametrize("template", [FLAT, NESTED], ids=["flat", "nested"])
def test_a_compiled_template_renders_exactly_as_render(template: dict[str, Any]) -> None:
    compiled = compile_template(template)
    for known in KNOWN:
        row = compiled(known)
        assert row == render(template, known)
        assert list(row) == list(template)  # the fields keep the template's order


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        pytest.param("json", NESTED_ROW, id="json"),
        pytest.param("json-batch", {"instances": [NESTED_ROW]}, id="json-batch"),
    ],
)
def test_a_nested_template_sends_nested_json(protocol: ProtocolName, expected: Any) -> None:
    assert orjson.loads(_codec(protocol, NESTED).body(KNOWN[:1])) == expected


@pytest.mark.parametrize("protocol", ["mlflow", "kserve-v2"])
def test_a_columnar_protocol_refuses_a_nested_template(protocol: ProtocolName) -> None:
    with pytest.raises(ValidationError, match=r"sends columns.*features\.a"):
        _codec(protocol, NESTED)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_without_a_template_the_features_are_sent_by_name(protocol: ProtocolName) -> None:
    codec = _codec(protocol, None, features=("B", "A"))
    assert codec.template == {"B": "B", "A": "A"}
    assert codec.references == ["B", "A"]


# --- reading answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "response_field", "document"),
    [
        pytest.param("json", "result.score", {"result": {"score": 0.5}}, id="json"),
        pytest.param(
            "json-batch",
            "output.scores",
            {"output": {"scores": [0.5, 2.0]}, "model": "v1"},
            id="json-batch",
        ),
        pytest.param("mlflow", "out.predictions", {"out": {"predictions": [0.5, 2]}}, id="mlflow"),
        pytest.param(
            "kserve-v2",
            "score",
            {
                "outputs": [
                    {"name": "explanation", "datatype": "FP64", "shape": [2], "data": [9, 9]},
                    {"name": "score", "datatype": "FP64", "shape": [2], "data": [0.5, 2.0]},
                ]
            },
            id="kserve-v2-named-tensor",
        ),
    ],
)
def test_the_answer_is_read_where_response_field_points(
    protocol: ProtocolName, response_field: str, document: Any
) -> None:
    codec = _codec(protocol, response_field=response_field)
    members = 1 if protocol == "json" else 2
    assert codec.read(document, members) == [0.5, 2.0][:members]


@pytest.mark.parametrize(
    ("protocol", "document"),
    [
        pytest.param("json", {"prediction": 0.5}, id="json"),
        pytest.param("json-batch", {"predictions": [0.5, 2.0]}, id="json-batch"),
        pytest.param("mlflow", {"predictions": [[0.5], [2.0]]}, id="mlflow-one-column-rows"),
        pytest.param(
            "kserve-v2",
            {"outputs": [{"name": "prediction", "datatype": "FP64", "data": [0.5, 2]}]},
            id="kserve-v2",
        ),
    ],
)
def test_the_answer_is_read_at_the_protocols_usual_place(
    protocol: ProtocolName, document: Any
) -> None:
    members = 1 if protocol == "json" else 2
    assert _codec(protocol).read(document, members) == [0.5, 2.0][:members]


@pytest.mark.parametrize(
    ("protocol", "document", "members", "message"),
    [
        pytest.param("json", {"score": 0.5}, 1, "'prediction' missing", id="json-missing-field"),
        pytest.param("json", [0.5], 1, "'prediction' missing", id="json-not-an-object"),
        pytest.param(
            "json-batch", {"prediction": [1.0]}, 1, "'predictions' missing", id="batch-missing"
        ),
        pytest.param("json-batch", {"predictions": 1.0}, 1, "is not a list", id="batch-not-a-list"),
        pytest.param(
            "json-batch", {"predictions": [1.0]}, 2, "1 answers for 2", id="batch-too-few"
        ),
        pytest.param(
            "json-batch", {"predictions": [1.0, 2.0, 3.0]}, 2, "3 answers", id="batch-too-many"
        ),
        pytest.param("mlflow", {"predictions": "1.0"}, 1, "is not a list", id="mlflow-string"),
        pytest.param("mlflow", {"predictions": []}, 2, "0 answers for 2", id="mlflow-empty"),
        pytest.param("kserve-v2", {"outputs": []}, 1, "no outputs", id="kserve-no-outputs"),
        pytest.param("kserve-v2", {"error": "boom"}, 1, "no outputs", id="kserve-error-body"),
        pytest.param(
            "kserve-v2",
            {"outputs": [{"name": "a", "data": [1.0]}, {"name": "b", "data": [2.0]}]},
            1,
            "no output tensor 'prediction'",
            id="kserve-missing-tensor",
        ),
        pytest.param(
            "kserve-v2",
            {"outputs": [{"name": "prediction", "shape": [1]}]},
            1,
            "is not a list",
            id="kserve-tensor-without-data",
        ),
        pytest.param(
            "kserve-v2",
            {"outputs": [{"name": "prediction", "data": [1.0]}]},
            3,
            "1 answers for 3",
            id="kserve-wrong-count",
        ),
    ],
)
def test_an_unusable_body_is_a_value_error_for_the_whole_call(
    protocol: ProtocolName, document: Any, members: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _codec(protocol).read(document, members)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(math.inf, id="infinity"),
        pytest.param(-math.inf, id="minus-infinity"),
        pytest.param("0.5", id="string"),
        pytest.param(None, id="null"),
        pytest.param(True, id="boolean"),
        pytest.param([1.0, 2.0], id="two-numbers"),
        pytest.param({"value": 1.0}, id="object"),
    ],
)
@pytest.mark.parametrize("protocol", BATCHED)
def test_an_unusable_element_is_a_value_error_in_that_members_place_only(
    protocol: ProtocolName, bad: Any
) -> None:
    answers = _codec(protocol).read(_answer(protocol, [1.0, bad, 3]), 3)
    assert answers[0] == 1.0
    assert isinstance(answers[1], ValueError)
    assert "not a finite number" in str(answers[1])
    assert answers[2] == 3.0


@pytest.mark.parametrize("bad", [math.nan, "0.5", None, True])
def test_an_unusable_json_answer_is_a_value_error_for_the_call(bad: Any) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        _codec("json").read({"prediction": bad}, 1)


@pytest.mark.parametrize(
    ("protocol", "document"),
    [
        pytest.param("json", {"offer": "OFFER_2"}, id="json"),
        pytest.param("json-batch", {"offers": ["OFFER_2", "OFFER_1"]}, id="json-batch"),
        pytest.param("mlflow", {"predictions": ["OFFER_2", "OFFER_1"]}, id="mlflow"),
        pytest.param(
            "kserve-v2",
            {"outputs": [{"name": "offer", "datatype": "BYTES", "data": ["OFFER_2", "OFFER_1"]}]},
            id="kserve-v2",
        ),
    ],
)
def test_the_offer_is_read_as_a_label(protocol: ProtocolName, document: Any) -> None:
    members = 1 if protocol == "json" else 2
    assert _offer_codec(protocol).read(document, members) == ["OFFER_2", "OFFER_1"][:members]


@pytest.mark.parametrize("bad", ["", 2.0, None, ["OFFER_1"]])
@pytest.mark.parametrize("protocol", BATCHED)
def test_an_offer_that_is_not_a_label_fails_that_member_only(
    protocol: ProtocolName, bad: Any
) -> None:
    name = {"json-batch": "offers", "mlflow": "predictions", "kserve-v2": "offer"}[protocol]
    values = ["OFFER_1", bad]
    document = (
        {"outputs": [{"name": name, "data": values}]} if protocol == "kserve-v2" else {name: values}
    )
    answers = _offer_codec(protocol).read(document, 2)
    assert answers[0] == "OFFER_1"
    assert isinstance(answers[1], ValueError)
    assert "not a label" in str(answers[1])


# --- whole runs ---------------------------------------------------------------------------------


def _switch(document: dict[str, Any], base_url: str, protocol: ProtocolName) -> dict[str, Any]:
    """Every endpoint of the default partner on ``protocol``, its answer at the usual place."""
    for endpoint in [*document["models"], document["offer"]]:
        endpoint["url"] = base_url + ROUTES[protocol][endpoint["name"]]
        endpoint["protocol"] = protocol
        endpoint["batch_size"] = BATCH_SIZE
        endpoint.pop("response_field", None)
    return document


def _run(document: dict[str, Any], directory: Path) -> Path:
    """Run a partner document to the end (outside any event loop); returns the run directory."""
    config = load_config(write_partner(directory / "partner.yaml", document))
    run_dir = new_run_dir(config, directory / "runs", "test")
    anyio.run(lambda: run_pipeline(config, run_dir=run_dir, as_of=parse_as_of(AS_OF)))
    return run_dir


@pytest.fixture(scope="module")
def members_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocols") / "members.csv"
    write_transactions(generate_transactions(500, seed=23), path)
    return path


@pytest.fixture(scope="module")
def json_offers(
    tmp_path_factory: pytest.TempPathFactory, bundled: BundledServer, members_csv: Path
) -> pl.DataFrame:
    """offers.parquet of the default partner over ``json``, one member per request."""
    directory = tmp_path_factory.mktemp("json")
    document = _switch(default_document(input_path=members_csv), bundled.base_url, "json")
    return pl.read_parquet(_run(document, directory) / "offers.parquet")


@pytest.fixture(scope="module", params=BATCHED)
def batched_run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    bundled: BundledServer,
    members_csv: Path,
) -> Path:
    """The run directory of the default partner with every endpoint on one batched protocol."""
    protocol: ProtocolName = request.param
    directory = tmp_path_factory.mktemp(protocol)
    document = _switch(default_document(input_path=members_csv), bundled.base_url, protocol)
    return _run(document, directory)


def test_a_batched_run_gives_the_offers_of_the_json_run(
    batched_run: Path, json_offers: pl.DataFrame
) -> None:
    offers = pl.read_parquet(batched_run / "offers.parquet")
    assert json_offers.get_column("status").value_counts().sort("status").rows() == [
        ("no_transactions", json_offers.height - _scored(json_offers)),
        ("ok", _scored(json_offers)),
    ]
    assert_frame_equal(offers.drop(_TIMINGS), json_offers.drop(_TIMINGS), check_exact=True)


def test_a_batched_run_sends_members_in_full_batches(batched_run: Path) -> None:
    offers = pl.read_parquet(batched_run / "offers.parquet")
    scored = _scored(offers)
    requests = pl.read_parquet(batched_run / "requests.parquet")
    per_endpoint = {
        endpoint: (count, sent)
        for endpoint, count, sent in requests.group_by("endpoint")
        .agg(pl.len(), pl.col("members").sum())
        .iter_rows()
    }
    full = math.ceil(scored / BATCH_SIZE)
    # the models take their members from the features table, all there at once: full batches;
    # the offer takes them as both models answer, and a batch that lingers goes out part full
    assert per_endpoint["ats"] == per_endpoint["resp"] == (full, scored)
    offer_requests, offer_members = per_endpoint["offer"]
    assert offer_members == scored
    assert full <= offer_requests <= scored / 2


def _scored(offers: pl.DataFrame) -> int:
    return offers.filter(pl.col("status") != "no_transactions").height


@dataclass
class Instances:
    """What the fake json-batch endpoint received: one list of member ids per request."""

    batches: list[list[str]] = field(default_factory=list)


@pytest.fixture
async def fake_ats(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Instances]]:
    """A json-batch ATS model on 127.0.0.1: predicts each member's AVG_POINTS_BOUGHT, except
    ``request.param`` for the member ``m-bad``; it publishes no OpenAPI document."""
    bad: Any = request.param
    seen = Instances()

    async def predict(http: web.Request) -> web.Response:
        instances = orjson.loads(await http.read())["instances"]
        seen.batches.append([instance["member_id"] for instance in instances])
        predictions = [
            bad if instance["member_id"] == "m-bad" else instance["AVG_POINTS_BOUGHT"]
            for instance in instances
        ]
        return web.Response(body=orjson.dumps({"predictions": predictions}))

    async with serve_route("/ats/batch", predict) as url:
        yield url, seen


BAD_PREDICTIONS = [
    pytest.param("1.5", id="string"),
    pytest.param(None, id="null"),
    pytest.param(False, id="boolean"),
    pytest.param([1.0, 2.0], id="list"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("fake_ats", BAD_PREDICTIONS, indirect=True)
async def test_one_unusable_prediction_in_a_batch_fails_that_member_only(
    tmp_path: Path,
    bundled: BundledServer,
    fake_ats: tuple[str, Instances],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, seen = fake_ats
    data = generate_transactions(40, seed=31)
    member_column = data.columns[0]
    busiest = data.get_column(member_column).mode().sort()[0]  # surely has a usable row
    data = data.with_columns(pl.col(member_column).replace(busiest, "m-bad"))
    write_transactions(data, tmp_path / "members.csv")
    document = default_document(bundled.base_url, tmp_path / "members.csv")
    ats = document["models"][0]
    ats.update(url=url, protocol="json-batch", batch_size=8, response_field="predictions")
    ats["request"] = {name: name for name in DEFAULT_FEATURES} | {"member_id": "member_id"}
    config = load_config(write_partner(tmp_path / "partner.yaml", document))
    run_dir = new_run_dir(config, tmp_path / "runs", "test")

    with caplog.at_level(logging.WARNING):
        await run_pipeline(config, run_dir=run_dir, as_of=parse_as_of(AS_OF))

    # the call answered, so only this member's line says it failed, with its batch's request id
    (logged,) = [vars(r) for r in caplog.records if getattr(r, "member_id", None) == "m-bad"]
    fields = ("levelname", "endpoint", "attempt", "outcome")
    assert [logged[f] for f in fields] == ["ERROR", "ats", 1, "InvalidResponseError"]
    assert re.fullmatch(r"test:[^:]+\+\d+:ats:1", logged["request_id"])
    offers = pl.read_parquet(run_dir / "offers.parquet")
    (failed,) = offers.filter(pl.col("member_id") == "m-bad").iter_rows(named=True)
    assert failed["status"] == "invalid_response"
    assert "ats: InvalidResponseError" in failed["error"]
    assert failed["ats_prediction"] is None
    (batch,) = [batch for batch in seen.batches if "m-bad" in batch]
    assert len(batch) > 1
    others = offers.filter(pl.col("member_id").is_in(batch) & (pl.col("member_id") != "m-bad"))
    assert others.height == len(batch) - 1
    assert others.get_column("status").to_list() == ["ok"] * others.height
    assert (others.get_column("ats_prediction") == others.get_column("AVG_POINTS_BOUGHT")).all()
    assert offers.filter(pl.col("status") == "ok").height == _scored(offers) - 1


@pytest.mark.anyio
async def test_a_stop_interrupts_the_members_of_a_batch_one_by_one(
    tmp_path: Path, bundled: BundledServer
) -> None:
    # the stop comes while the batch is being started: its first member still goes out
    document = _switch(default_document(), bundled.base_url, "json-batch")
    config = load_config(write_partner(tmp_path / "p.yaml", document))
    features = {name: 1.0 for name in DEFAULT_FEATURES}
    asked = itertools.count()
    async with client_for(config) as client:
        stage = _stage(client, config.models[0], 60.0, stop=lambda: next(asked) > 0)
        first, second = await stage([Member("before", features), Member("after", features)])
    assert isinstance(first, Member)
    assert "ats" in first.predictions
    assert first.deadline < time.monotonic() + 60  # its call started its clock
    assert isinstance(second, ItemError)
    assert isinstance(second.error, CallInterrupted)
    assert second.error.status == "interrupted"
