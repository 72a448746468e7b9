"""Partner feature modules: features defined in a Python file of the partner's own.

A feature module defines one function, ``features(ctx)``, returning the partner's features as
named polars aggregation expressions over the canonical table (:data:`CANONICAL_SCHEMA`)::

    from __future__ import annotations

    from collections.abc import Mapping

    import polars as pl

    from offerflow.pipeline.features import FeatureContext


    def features(ctx: FeatureContext) -> Mapping[str, pl.Expr]:
        return {"MAX_POINTS_BOUGHT": pl.col("points").max()}

Each expression is evaluated like a built-in feature: per member, inside
``group_by("member_id").agg(...)``, over the member's rows sorted by ``(ts, line)``, and must
give one value per member. ``features`` must be cheap and pure: it is called once when the
module is loaded, with a sample context, to check the names and expressions, and again for
each as-of a run computes features at; it must return the same names every time.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from offerflow.errors import ConfigError
from offerflow.pipeline.features.builtin import DEFAULT_REGISTRY
from offerflow.pipeline.features.compute import CANONICAL_SCHEMA, compute_features
from offerflow.pipeline.features.registry import FeatureContext, FeatureFn, FeatureRegistry

__all__ = ["load_feature_module", "registry_with"]

#: what the name of a feature defined by a module looks like
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

_module_numbers = itertools.count(1)
_NESTED = (pl.List, pl.Array, pl.Struct, pl.Object)


def load_feature_module(path: Path) -> Mapping[str, FeatureFn]:
    """The features that the module file at ``path`` defines, by name, in its order.

    The file is imported under a fresh module name (``sys.path`` is left alone), its
    ``features`` function called once with a sample context, and every expression evaluated
    once on a canonical table with no rows. Anything wrong is a :class:`ConfigError` naming the
    file and, where there is one, the feature.
    """
    path = Path(path)
    module = _FeatureModule(path, _import(path))
    sample = FeatureContext(as_of=datetime.now(UTC))
    exprs = module.exprs(sample)
    if not exprs:
        raise ConfigError("features(ctx) returned no features", path=path)
    loaded = {name: module.feature(name) for name in exprs}
    for name, fn in loaded.items():
        _check_evaluates(path, name, fn, sample)
    return loaded


def registry_with(
    modules: Sequence[Path], base: FeatureRegistry = DEFAULT_REGISTRY
) -> FeatureRegistry:
    """A copy of ``base`` with the features of each module added, in order.

    A module's feature may not have the name of a feature of ``base`` (fixed, or resolved by one
    of its families) nor of another module's: either is a :class:`ConfigError`.
    """
    registry = base.copy()
    defined_by: dict[str, Path] = {}
    seen: dict[Path, Path] = {}
    for path in modules:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ConfigError(f"feature module listed twice (as {seen[resolved]})", path=path)
        seen[resolved] = path
        for name, fn in load_feature_module(path).items():
            if name in defined_by:
                raise ConfigError(
                    f"feature {name!r} is also defined by the feature module {defined_by[name]}",
                    path=path,
                    key=name,
                )
            if name in base:
                family = base.family_of(name) if name not in base.names() else None
                what = f"the built-in family {family.template}" if family else "a built-in feature"
                raise ConfigError(f"feature {name!r} clashes with {what}", path=path, key=name)
            registry.register(name, fn)
            defined_by[name] = path
    return registry


def _import(path: Path) -> Callable[[FeatureContext], object]:
    """The ``features`` function of the module file at ``path``."""
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"feature module {problem}", path=path)
    name = f"_offerflow_feature_module_{next(_module_numbers)}_{_identifier(path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("feature module is not a Python source file (.py)", path=path)
    module = importlib.util.module_from_spec(spec)
    # Registered like any imported module, under its own name: dataclasses, pickle and typing
    # look a class's module up in sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        del sys.modules[name]
        raise ConfigError(
            f"importing the feature module raised {type(error).__name__}: {error}", path=path
        ) from error
    features: object = getattr(module, "features", None)
    if features is None:
        raise ConfigError("feature module defines no function `features(ctx)`", path=path)
    if not callable(features):
        raise ConfigError(
            f"`features` is of type {type(features).__name__}, not a function `features(ctx)`",
            path=path,
        )
    return features


class _FeatureModule:
    """A loaded module's ``features`` function, checked, its result kept for the last context."""

    def __init__(self, path: Path, features: Callable[[FeatureContext], object]) -> None:
        self._path = path
        self._features = features
        self._last: tuple[FeatureContext, dict[str, pl.Expr]] | None = None

    def exprs(self, ctx: FeatureContext) -> dict[str, pl.Expr]:
        """What ``features(ctx)`` returns, once checked to be names and polars expressions."""
        last = self._last
        if last is not None and last[0] == ctx:
            return last[1]
        try:
            result = self._features(ctx)
        except Exception as error:
            raise ConfigError(
                f"features(ctx) raised {type(error).__name__}: {error}", path=self._path
            ) from error
        exprs = self._checked(result)
        self._last = (ctx, exprs)
        return exprs

    def feature(self, name: str) -> FeatureFn:
        """The feature called ``name``, as the registry takes it."""

        def expr(ctx: FeatureContext) -> pl.Expr:
            exprs = self.exprs(ctx)
            if name not in exprs:
                raise ConfigError(
                    f"features(ctx) returned no {name!r} for as-of {ctx.as_of.isoformat()}, "
                    f"though it did when the module was loaded",
                    path=self._path,
                    key=name,
                )
            return exprs[name]

        return expr

    def _checked(self, result: object) -> dict[str, pl.Expr]:
        if not isinstance(result, Mapping):
            raise ConfigError(
                f"features(ctx) returned an object of type {type(result).__name__}, not a "
                f"mapping of feature names to polars expressions",
                path=self._path,
            )
        exprs: dict[str, pl.Expr] = {}
        for name, expr in result.items():
            if not isinstance(name, str):
                raise ConfigError(
                    f"features(ctx) returned the key {name!r} of type {type(name).__name__}, "
                    f"not a feature name (str)",
                    path=self._path,
                )
            if not _NAME.fullmatch(name):
                raise ConfigError(
                    f"invalid feature name {name!r}: use upper-case letters, digits and "
                    f"underscores, starting with a letter",
                    path=self._path,
                    key=name,
                )
            if not isinstance(expr, pl.Expr):
                hint = (
                    " (return the expression, not a function making it)" if callable(expr) else ""
                )
                raise ConfigError(
                    f"feature {name!r} is of type {type(expr).__name__}, not a polars "
                    f"expression (pl.Expr){hint}",
                    path=self._path,
                    key=name,
                )
            exprs[name] = expr
        return exprs


def _check_evaluates(path: Path, name: str, fn: FeatureFn, sample: FeatureContext) -> None:
    """Evaluate one feature on a table with no rows: unknown columns and types show there."""
    empty = pl.DataFrame(schema=CANONICAL_SCHEMA)
    registry = FeatureRegistry({name: fn})
    try:
        result = compute_features(empty, [name], as_of=sample.as_of, registry=registry)
    except ConfigError:
        raise
    except Exception as error:
        # polars appends the plan it failed in; its first line says what failed
        message = str(error).strip().split("\n", 1)[0]
        raise ConfigError(
            f"feature {name!r} cannot be computed on the transactions table "
            f"(columns {', '.join(CANONICAL_SCHEMA)}): {type(error).__name__}: {message}",
            path=path,
            key=name,
        ) from error
    dtype = result.schema[name]
    if isinstance(dtype, _NESTED):
        raise ConfigError(
            f"feature {name!r} gives a {dtype} per member, not one value: aggregate it "
            f"(e.g. .max(), .mean() or .last())",
            path=path,
            key=name,
        )


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text)
