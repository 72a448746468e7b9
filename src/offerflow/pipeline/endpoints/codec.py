"""Endpoint protocols: how members become a request body and how an answer becomes values.

- ``json``: one member per request; the rendered template is the body; the answer is found at a
  dotted path (``prediction``, ``result.score``).
- ``json-batch``: ``{"instances": [<rendered template>, ...]}``; the answer is a list, one entry
  per member, at a dotted path (``predictions``).
- ``mlflow``: an MLflow scoring server's ``/invocations``:
  ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`` → ``{"predictions": [...]}``.
- ``kserve-v2``: the Open Inference Protocol's ``/v2/models/{name}/infer``: one input tensor per
  request field, the answer is the output tensor named by ``response_field``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import orjson

from offerflow.config import MEMBER_ID, EndpointConfig, ProtocolName, template_leaves

__all__ = ["Answer", "Codec", "Reads", "compile_template", "render"]

#: what one member's answer became: a finite number, a label, or why it is not usable
Answer = float | str | ValueError


def render(template: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """The template with every reference replaced by its value and ``{const: v}`` by ``v``."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, str):
            out[key] = known[value]
        elif set(value) == {"const"}:
            out[key] = value["const"]
        else:
            out[key] = render(value, known)
    return out


def compile_template(template: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """:func:`render` for one template, made once: a flat template (every field a reference or
    a constant, the common case) becomes one dict comprehension, the hot path of every call."""
    if not all(isinstance(v, str) or set(v) == {"const"} for v in template.values()):
        return partial(render, template)
    fields = tuple(
        (key, value, None) if isinstance(value, str) else (key, None, value["const"])
        for key, value in template.items()
    )

    def flat(known: Mapping[str, Any]) -> dict[str, Any]:
        return {key: const if ref is None else known[ref] for key, ref, const in fields}

    return flat


#: what a template references: only features, only other models' predictions, or anything
Reads = Literal["features", "predictions", "any"]


@dataclass(frozen=True, slots=True)
class Codec:
    """Builds request bodies for one endpoint and reads its answers.

    ``reads`` says what the values given to :meth:`body` must hold, so that a caller can pass a
    member's features (or predictions) as they are instead of merging them; ``verbatim``: a
    ``json`` body is those values as given (the features by name, in order), rendered as is.
    """

    protocol: ProtocolName
    template: Mapping[str, Any]
    path: str
    answer: Literal["number", "label"]
    reads: Reads = "any"
    verbatim: bool = False
    _render: Callable[[Mapping[str, Any]], dict[str, Any]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_render", compile_template(self.template))

    @classmethod
    def for_endpoint(
        cls, endpoint: EndpointConfig, features: Sequence[str], answer: Literal["number", "label"]
    ) -> Codec:
        """The codec of an endpoint; without a template it sends the features by name."""
        template = endpoint.request or {name: name for name in features}
        references = {leaf for _, leaf in template_leaves(template) if isinstance(leaf, str)}
        reads: Reads = "any"
        if references <= set(features):
            reads = "features"
        elif not references & {*features, MEMBER_ID}:
            reads = "predictions"
        verbatim = endpoint.protocol == "json" and endpoint.request is None
        return cls(endpoint.protocol, template, endpoint.answer_path, answer, reads, verbatim)

    @property
    def references(self) -> list[str]:
        """Every reference the template makes, in order."""
        return [leaf for _, leaf in template_leaves(self.template) if isinstance(leaf, str)]

    def body(self, members: Sequence[Mapping[str, Any]]) -> bytes:
        """The request body for these members' known values (exactly one for ``json``)."""
        if self.protocol == "json":
            (known,) = members
            return orjson.dumps(known if self.verbatim else self._render(known))
        rows = [self._render(known) for known in members]
        if self.protocol == "json-batch":
            return orjson.dumps({"instances": rows})
        columns = list(self.template)
        if self.protocol == "mlflow":
            data = [[row[c] for c in columns] for row in rows]
            return orjson.dumps({"dataframe_split": {"columns": columns, "data": data}})
        inputs = [
            {
                "name": column,
                "shape": [len(rows)],
                "datatype": _datatype([row[column] for row in rows]),
                "data": [row[column] for row in rows],
            }
            for column in columns
        ]
        return orjson.dumps({"inputs": inputs})

    def read(self, document: Any, members: int) -> list[Answer]:
        """One answer per member from a decoded body; ValueError when the body as a whole is
        unusable, a ValueError in the list when only that member's answer is."""
        if self.protocol == "json" and "." not in self.path and isinstance(document, dict):
            # the common answer, {"prediction": 1.5}: one lookup, no path to walk
            value = document.get(self.path, _ABSENT)
            if value is not _ABSENT:
                return [self._one(value)]
        if self.protocol == "json":
            return [self._one(_at(document, self.path))]
        if self.protocol == "kserve-v2":
            values = _tensor(document, self.path)
        else:
            values = _at(document, self.path)
        if not isinstance(values, list):
            raise ValueError(f"{self.path!r} is not a list: {_short(values)}")
        if len(values) != members:
            raise ValueError(f"{len(values)} answers for {members} members")
        return [self._checked(value) for value in values]

    def _checked(self, value: Any) -> Answer:
        try:
            return self._one(value)
        except ValueError as error:
            return error

    def _one(self, value: Any) -> float | str:
        if self.answer == "label":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{self.path!r} is not a label: {_short(value)}")
            return value
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # MLflow models may answer [[x], ...]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{self.path!r} is not a finite number: {_short(value)}")
        return float(value)


_ABSENT: Any = object()


def _at(document: Any, path: str) -> Any:
    """The value at a dotted path of a JSON document, or ValueError naming the missing part."""
    value = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"expected field {path!r} missing: {_short(document)}")
        value = value[part]
    return value


def _tensor(document: Any, name: str) -> Any:
    """The data of the output tensor called ``name`` (or the only one) of a KServe v2 answer."""
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"no outputs in the answer: {_short(document)}")
    named = [o for o in outputs if isinstance(o, dict) and o.get("name") == name]
    if not named and len(outputs) == 1 and isinstance(outputs[0], dict):
        named = outputs
    if not named:
        raise ValueError(f"no output tensor {name!r}: {_short(document)}")
    return named[0].get("data")


def _datatype(values: Sequence[Any]) -> str:
    if all(isinstance(v, str) for v in values):
        return "BYTES"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    return "FP64"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"
