"""Contract checks before traffic: what we will send, against what each endpoint says it takes.

An endpoint that serves an OpenAPI document (``/openapi.json`` at its origin) has the request
schema of its route compared with the fields of the config's request template: fields the schema
requires that we do not send, fields we send that it does not know, and wrong types. A
``kserve-v2`` endpoint's model metadata (``/v2/models/{name}``) names its input tensors and their
datatypes, compared the same way. An endpoint that publishes neither is not checked.

Each document is asked for as its endpoint is called: with its headers (an endpoint behind
authentication publishes its schema to those who may call it), its TLS settings and its proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from offerflow.config import MEMBER_ID, EndpointConfig, PartnerConfig
from offerflow.errors import EndpointError, redact_url
from offerflow.pipeline.endpoints.client import Endpoint, ModelClient

__all__ = ["ContractReport", "check_contracts"]

log = logging.getLogger(__name__)

_JSON_TYPES = {"number": "number", "integer": "number", "string": "string", "boolean": "boolean"}


class ContractReport:
    """What the checks found: mismatches (fatal) and endpoints that could not be asked."""

    def __init__(self) -> None:
        self.mismatches: list[str] = []
        self.unreachable: list[str] = []
        self.checked: list[str] = []


async def check_contracts(config: PartnerConfig, client: ModelClient) -> ContractReport:
    """Compare every endpoint's published request schema with what the config sends."""
    report = ContractReport()
    documents: dict[tuple[Any, ...], Any] = {}
    models = {m.name for m in config.models}
    for endpoint in config.endpoints:
        parts = urlsplit(endpoint.url)
        sent = _sent_types(endpoint, config.features, models)
        try:
            if endpoint.protocol == "kserve-v2":
                found = await _kserve_inputs(client, endpoint.name, parts.path)
            else:
                # one document per origin and way of asking it (endpoints may differ in headers)
                key = _asked_as(client.endpoints[endpoint.name], parts.netloc)
                if key not in documents:
                    documents[key] = await client.get_json(endpoint.name, "/openapi.json")
                found = _openapi_fields(documents[key], parts.path, endpoint.protocol)
        except EndpointError as error:
            origin = redact_url(f"{parts.scheme}://{parts.netloc}")
            report.unreachable.append(f"{endpoint.name}: cannot ask {origin}: {error.reason}")
            continue
        if found is None:
            log.info("endpoint %s publishes no request schema: not checked", endpoint.name)
            continue
        report.checked.append(endpoint.name)
        report.mismatches += _compare(endpoint.name, sent, *found)
    return report


def _sent_types(
    endpoint: EndpointConfig, features: tuple[str, ...], models: set[str]
) -> dict[str, Any]:
    """The JSON type of every field we send (nested templates give nested dicts)."""

    def types(template: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in template.items():
            if isinstance(value, str):
                out[key] = "string" if value == MEMBER_ID else "number"
            elif set(value) == {"const"}:
                const = value["const"]
                out[key] = (
                    "string"
                    if isinstance(const, str)
                    else "boolean"
                    if isinstance(const, bool)
                    else "number"
                )
            else:
                out[key] = types(value)
        return out

    return types(endpoint.request or {name: name for name in features})


def _openapi_fields(
    document: Any, path: str, protocol: str
) -> tuple[dict[str, Any], set[str], bool] | None:
    """(properties, required, open) of the JSON body the route takes, or None if not described."""
    if not isinstance(document, dict):
        return None
    operation = document.get("paths", {}).get(path, {}).get("post")
    if not isinstance(operation, dict):
        return None
    schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema")
    )
    schema = _resolve(document, schema)
    if protocol == "json-batch":
        instances = _resolve(document, (schema or {}).get("properties", {}).get("instances"))
        schema = _resolve(document, (instances or {}).get("items"))
    if protocol == "mlflow" or not isinstance(schema, dict) or "properties" not in schema:
        return None
    properties = {name: _resolve(document, prop) for name, prop in schema["properties"].items()}
    open_ = schema.get("additionalProperties") not in (None, False)
    return properties, set(schema.get("required", [])), open_


def _asked_as(spec: Endpoint, netloc: str) -> tuple[Any, ...]:
    """What a document's answer depends on: the origin and how the endpoint asks it."""
    headers = tuple(sorted((k.lower(), v.get_secret_value()) for k, v in spec.headers.items()))
    return (spec.url.split(":", 1)[0], netloc, headers, spec.tls, spec.proxy)


async def _kserve_inputs(
    client: ModelClient, endpoint: str, path: str
) -> tuple[dict[str, Any], set[str], bool] | None:
    """The input tensors a KServe v2 model's metadata declares, as fields."""
    segments = path.strip("/").split("/")
    if len(segments) < 3 or segments[:2] != ["v2", "models"]:
        return None
    metadata = await client.get_json(endpoint, f"/v2/models/{segments[2]}")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("inputs"), list):
        return None
    tensors = [i for i in metadata["inputs"] if isinstance(i, dict) and "name" in i]
    fields = {i["name"]: _tensor_schema(i.get("datatype")) for i in tensors}
    return fields, set(fields), False


def _tensor_schema(datatype: Any) -> dict[str, str]:
    """The JSON type of a KServe v2 tensor's elements as a property schema; {} when unknown."""
    if datatype == "BYTES":
        return {"type": "string"}
    if datatype == "BOOL":
        return {"type": "boolean"}
    if isinstance(datatype, str) and datatype.startswith(("INT", "UINT", "FP")):
        return {"type": "number"}
    return {}


def _resolve(document: Mapping[str, Any], schema: Any) -> Any:
    """A schema with its ``$ref`` (and a single-entry ``allOf``/``anyOf``) followed."""
    for _ in range(10):
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            target: Any = document
            for part in schema["$ref"].lstrip("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = target
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    return schema


def _compare(
    name: str,
    sent: Mapping[str, Any],
    properties: Mapping[str, Any],
    required: set[str],
    open_: bool,
    prefix: str = "",
) -> list[str]:
    problems = [
        f"{name}: the endpoint requires field {prefix}{field!r}, the config does not send it"
        for field in sorted(required - set(sent))
    ]
    for field, ours in sent.items():
        where = f"{prefix}{field}"
        schema = properties.get(field)
        if schema is None:
            if not open_:
                problems.append(f"{name}: the config sends field {where!r}, the endpoint has none")
            continue
        if isinstance(ours, dict):
            if isinstance(schema, dict) and "properties" in schema:
                problems += _compare(
                    name,
                    ours,
                    schema["properties"],
                    set(schema.get("required", [])),
                    schema.get("additionalProperties") not in (None, False),
                    f"{where}.",
                )
            continue
        expected = _json_type(schema)
        if expected is not None and expected != ours:
            problems.append(
                f"{name}: field {where!r} is sent as a {ours}, the endpoint expects {expected}"
            )
    return problems


def _json_type(schema: Any) -> str | None:
    """The JSON type a property schema asks for, when it asks for exactly one."""
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        return _JSON_TYPES.get(schema["type"])
    options = {_json_type(option) for option in schema.get("anyOf", [])} - {None}
    return options.pop() if len(options) == 1 else None
