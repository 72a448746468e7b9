"""The feature registry: named polars expressions, and families of features named by a template.

A feature is a function of the run's :class:`FeatureContext` returning one aggregation
expression, evaluated per member over its usable transactions sorted by ``(ts, line)`` (see
:mod:`~offerflow.pipeline.features.compute`). A partner adds its own features to a copy of the
built-in registry (or, from a module file of its own, with
:func:`~offerflow.pipeline.features.modules.registry_with`)::

    registry = DEFAULT_REGISTRY.copy()
    registry.register("MAX_POINTS_BOUGHT", lambda ctx: pl.col("points").max())

Besides features with fixed names the registry knows *families*: features named by a template
such as ``LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT``, built from the numbers in the name.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

import polars as pl

__all__ = ["FeatureContext", "FeatureFamily", "FeatureFn", "FeatureRegistry"]


@dataclass(frozen=True, slots=True)
class FeatureContext:
    """What a feature may depend on besides the member's transactions."""

    #: the run's as-of instant (UTC)
    as_of: datetime

    @property
    def as_of_date(self) -> date:
        """The as-of instant's UTC calendar date."""
        return self.as_of.astimezone(UTC).date()


#: builds one aggregation expression, evaluated per member over rows sorted by (ts, line)
FeatureFn = Callable[[FeatureContext], pl.Expr]


@dataclass(frozen=True, slots=True)
class _Placeholder:
    """A parameter of a family's name: how it is written, and what ``build`` gets for it."""

    #: what a valid value looks like, and what an almost valid one does (for hints)
    pattern: str
    loose: str
    argument: str
    convert: Callable[[str], object]
    rule: str


_PLACEHOLDERS = {
    "N": _Placeholder(
        "[1-9][0-9]*", "[0-9]+", "n", int, "N is a whole number from 1, no leading zeros"
    ),
    "TYPE": _Placeholder(
        "BUY|GIFT|REDEEM", "[A-Za-z]+", "kind", str.lower, "TYPE is BUY, GIFT or REDEEM"
    ),
}
_PLACEHOLDER = re.compile(r"<([A-Z]+)>")


@dataclass(frozen=True, slots=True)
class FeatureFamily:
    """Features named by one template, e.g. ``LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT``.

    In a template ``<N>`` stands for a whole number from 1 written without leading zeros and
    ``<TYPE>`` for BUY, GIFT or REDEEM; ``build`` gets them as keyword arguments ``n`` (an int)
    and ``kind`` (the type in lower case, as in the ``type`` column).
    """

    template: str
    build: Callable[..., FeatureFn]

    def __post_init__(self) -> None:
        unknown = set(_PLACEHOLDER.findall(self.template)) - set(_PLACEHOLDERS)
        if unknown:
            raise ValueError(f"template {self.template!r} has unknown placeholders {unknown}")

    def resolve(self, name: str) -> FeatureFn | None:
        """The feature called ``name`` if the name fits the template, else None."""
        match = _regex(self.template, loose=False).fullmatch(name)
        if match is None:
            return None
        arguments = {
            _PLACEHOLDERS[key].argument: _PLACEHOLDERS[key].convert(value)
            for key, value in match.groupdict().items()
        }
        return self.build(**arguments)

    def rules(self) -> tuple[str, ...]:
        """What the template's placeholders stand for, e.g. "N is a whole number from 1"."""
        return tuple(_PLACEHOLDERS[key].rule for key in _PLACEHOLDER.findall(self.template))

    def correct(self, name: str) -> str | None:
        """The name fixed for case and leading zeros when it almost fits the template."""
        match = _regex(self.template, loose=True).fullmatch(name)
        if match is None:
            return None
        values = {key: value.upper().lstrip("0") for key, value in match.groupdict().items()}
        return _PLACEHOLDER.sub(lambda m: values[m[1]], self.template)


@functools.cache
def _regex(template: str, *, loose: bool) -> re.Pattern[str]:
    """The template as a regular expression; a loose one ignores case and takes any number."""
    parts = _PLACEHOLDER.split(template)
    for i in range(1, len(parts), 2):
        placeholder = _PLACEHOLDERS[parts[i]]
        parts[i] = f"(?P<{parts[i]}>{placeholder.loose if loose else placeholder.pattern})"
    for i in range(0, len(parts), 2):
        parts[i] = re.escape(parts[i])
    return re.compile("".join(parts), re.IGNORECASE if loose else 0)


class FeatureRegistry:
    """Features by name, in registration order, and families of features named by a template.

    A fixed name takes precedence over a family that would also resolve it.
    """

    def __init__(
        self,
        features: Mapping[str, FeatureFn] | None = None,
        families: Iterable[FeatureFamily] = (),
    ) -> None:
        self._features: dict[str, FeatureFn] = {}
        self._families: dict[str, FeatureFamily] = {}
        for name, fn in (features or {}).items():
            self.register(name, fn)
        for family in families:
            self.register_family(family)

    def register(self, name: str, fn: FeatureFn) -> None:
        """Add a feature; a name already registered, or one a family resolves, is a ValueError."""
        if not name or name == "member_id":
            raise ValueError(f"{name!r} cannot name a feature")
        if name in self._features:
            raise ValueError(f"feature {name!r} is already registered")
        family = self.family_of(name)
        if family is not None:
            raise ValueError(f"feature {name!r} is already one of the family {family.template}")
        self._features[name] = fn

    def register_family(self, family: FeatureFamily) -> None:
        """Add a family of features; a template already registered is a ValueError."""
        if family.template in self._families:
            raise ValueError(f"family {family.template!r} is already registered")
        self._families[family.template] = family

    def names(self) -> tuple[str, ...]:
        """The fixed names, in registration order (family members are not listed)."""
        return tuple(self._features)

    def families(self) -> tuple[FeatureFamily, ...]:
        """The families, in registration order."""
        return tuple(self._families.values())

    def patterns(self) -> tuple[str, ...]:
        """The families' templates, e.g. ``LAST_<N>_TRANSACTIONS_AVG_POINTS_BOUGHT``."""
        return tuple(self._families)

    def family_of(self, name: str) -> FeatureFamily | None:
        """The first family that resolves ``name``, if any."""
        return next((f for f in self._families.values() if f.resolve(name) is not None), None)

    def describe(self) -> str:
        """The known features in one line, for messages: the fixed names, then the families."""
        described = ", ".join(self._features) or "no fixed names"
        if self._families:
            rules = dict.fromkeys(rule for f in self._families.values() for rule in f.rules())
            described += f"; and the families {', '.join(self._families)} ({'; '.join(rules)})"
        return described

    def get(self, name: str) -> FeatureFn:
        """The feature called ``name``; an unknown name is a KeyError naming close matches."""
        if name in self._features:
            return self._features[name]
        for family in self._families.values():
            fn = family.resolve(name)
            if fn is not None:
                return fn
        raise KeyError(self._unknown(name))

    def _unknown(self, name: str) -> str:
        """Why ``name`` is unknown, and what was probably meant."""
        for family in self._families.values():
            corrected = family.correct(name)
            if corrected is not None:
                fits = corrected in self
                hint = f"did you mean {corrected!r}?" if fits else "; ".join(family.rules())
                return f"unknown feature {name!r}: it has the form {family.template}; {hint}"
        query = name.casefold()
        # Against a template, compare the name with its numbers written as the placeholder.
        generic = re.sub(r"[0-9]+", "<n>", query)
        scored = [(_similarity(query, known), known) for known in self._features]
        scored += [(_similarity(generic, known), known) for known in self._families]
        close = [known for score, known in sorted(scored, key=lambda s: -s[0]) if score >= 0.5]
        if close:
            return f"unknown feature {name!r}; did you mean {' or '.join(map(repr, close[:3]))}?"
        return f"unknown feature {name!r}; known: {self.describe()}"

    def exprs(self, names: Iterable[str], ctx: FeatureContext) -> list[pl.Expr]:
        """The aggregation expressions of ``names``, each aliased to its name."""
        return [self.get(name)(ctx).alias(name) for name in names]

    def copy(self) -> FeatureRegistry:
        """A new registry with the same features, to extend without touching this one."""
        return FeatureRegistry(self._features, self._families.values())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._features or self.family_of(name) is not None

    def __len__(self) -> int:
        """The number of fixed names."""
        return len(self._features)


def _similarity(name: str, known: str) -> float:
    return difflib.SequenceMatcher(None, name, known.casefold()).ratio()
