"""Partner feature modules: loading, computing their features, and every way they can be wrong."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from offerflow.errors import ConfigError
from offerflow.pipeline.features import DEFAULT_REGISTRY, FeatureRegistry, compute_features
from offerflow.pipeline.features.modules import load_feature_module, registry_with
from offerflow.pipeline.inputs.reader import read_transactions

WriteCsv = Callable[..., Path]
WriteModule = Callable[..., Path]

LOYALTY = Path(__file__).parent / "modules" / "loyalty.py"
LOYALTY_FEATURES = ("MAX_POINTS_BOUGHT", "SHARE_OF_REVENUE_FROM_GIFTS", "REVENUE_LAST_30_DAYS")


@pytest.fixture
def write_module(tmp_path: Path) -> WriteModule:
    """Write a feature module's source, dedented, after ``prelude``; returns its path."""

    def write(
        source: str, name: str = "partner.py", prelude: str = "import polars as pl\n"
    ) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prelude + textwrap.dedent(source), encoding="utf-8")
        return path

    return write


# --- a good module -----------------------------------------------------------------------------


def test_module_features_are_loaded_in_the_modules_order() -> None:
    assert tuple(load_feature_module(LOYALTY)) == LOYALTY_FEATURES


def test_module_features_equal_hand_computed_values(write_csv: WriteCsv, as_of: datetime) -> None:
    path = write_csv(
        "A,2024-01-05 00:00:00,gift,300,3.0",
        "A,2023-12-12 00:00:00,buy,700,5.0",
        "A,2023-12-11 23:59:59,gift,100,2.0",
        "A,2024-01-10 12:00:00,redeem,-500,0.0",
        "B,2023-06-01 00:00:00,redeem,-200,0.0",
    )
    transactions = read_transactions(path, as_of=as_of).transactions
    registry = registry_with([LOYALTY])

    result = compute_features(transactions, LOYALTY_FEATURES, as_of=as_of, registry=registry)

    # A: 3 + 2 of its 10 USD came with gifts; Dec 12 is the first of the 30 days up to Jan 10
    assert result.rows() == [("A", 700.0, 0.5, 8.0), ("B", -200.0, 0.0, 0.0)]


def test_registry_with_adds_module_features_to_a_copy_of_the_base(
    write_module: WriteModule,
) -> None:
    other = write_module('def features(ctx):\n    return {"POINTS_RANGE": pl.col("points").max()}')
    base = FeatureRegistry({"ONE": lambda ctx: pl.lit(1)})

    registry = registry_with([LOYALTY, other], base)

    assert registry.names() == ("ONE", *LOYALTY_FEATURES, "POINTS_RANGE")
    assert base.names() == ("ONE",)
    assert registry_with([]).names() == DEFAULT_REGISTRY.names()
    assert "LAST_9_TRANSACTIONS_AVG_POINTS_BOUGHT" in registry_with([LOYALTY])
    assert "MAX_POINTS_BOUGHT" not in DEFAULT_REGISTRY


def test_module_builtins_and_families_compute_together(as_of: datetime) -> None:
    frame = pl.DataFrame(
        {
            "line": [2, 3, 4],
            "member_id": ["A"] * 3,
            "ts": [datetime(2024, 1, day, tzinfo=UTC) for day in (1, 3, 2)],
            "type": ["buy", "gift", "buy"],
            "points": [100.0, 300.0, 200.0],
            "revenue": [1.0, 3.0, 2.0],
        }
    )
    names = ["MAX_POINTS_BOUGHT", "TRANSACTION_COUNT", "LAST_2_TRANSACTIONS_AVG_REVENUE_USD"]
    result = compute_features(frame, names, as_of=as_of, registry=registry_with([LOYALTY]))
    assert result.rows() == [("A", 300.0, 3, 2.5)]


def test_loading_leaves_sys_path_alone_and_modules_with_one_stem_apart(
    write_module: WriteModule,
) -> None:
    path = list(sys.path)
    first = write_module('def features(ctx):\n    return {"FIRST": pl.len()}', "a/loyalty.py")
    second = write_module('def features(ctx):\n    return {"SECOND": pl.len()}', "b/loyalty.py")

    registry = registry_with([first, second, LOYALTY])

    assert registry.names()[-5:] == ("FIRST", "SECOND", *LOYALTY_FEATURES)
    assert sys.path == path


def test_module_may_define_dataclasses(write_module: WriteModule) -> None:
    # dataclasses look their class's module up in sys.modules
    path = write_module(
        """
        from __future__ import annotations

        from dataclasses import dataclass

        import polars as pl

        @dataclass(frozen=True)
        class Threshold:
            points: float

        def features(ctx):
            return {"BIG_BUYS": (pl.col("points") > Threshold(500).points).sum()}
        """,
        prelude="",
    )
    assert list(load_feature_module(path)) == ["BIG_BUYS"]


def test_features_is_called_once_per_context(write_module: WriteModule) -> None:
    path = write_module(
        """
        CALLS = []

        def features(ctx):
            CALLS.append(ctx)
            return {"CALLS": pl.lit(len(CALLS))}
        """
    )
    registry = registry_with([path])
    frame = pl.DataFrame(
        {"member_id": ["A"], "ts": [datetime(2024, 1, 1)], "type": ["buy"], "points": [1.0]}
    )

    def calls(day: int) -> object:
        as_of = datetime(2024, 1, day, tzinfo=UTC)
        return compute_features(frame, ["CALLS"], as_of=as_of, registry=registry).item(0, 1)

    # once when loaded, then once for each new as-of
    assert [calls(2), calls(2), calls(3)] == [2, 2, 3]


# --- a module that is wrong --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "key", "message"),
    [
        ("raise RuntimeError('no database here')", None, "raised RuntimeError: no database here"),
        ("def features(ctx) return {}", None, "raised SyntaxError: "),
        ("import sys\nsys.exit(3)", None, "raised SystemExit: 3"),
        ("FEATURES = {}", None, "defines no function `features(ctx)`"),
        ("features = {'A': pl.len()}", None, "`features` is of type dict, not a function"),
        (
            "def features(ctx):\n    raise ValueError('bad as-of')",
            None,
            "features(ctx) raised ValueError: bad as-of",
        ),
        (
            "def features(ctx):\n    return [pl.len()]",
            None,
            "features(ctx) returned an object of type list, not a mapping",
        ),
        (
            "def features(ctx):\n    return {1: pl.len()}",
            None,
            "features(ctx) returned the key 1 of type int, not a feature name (str)",
        ),
        ("def features(ctx):\n    return {}", None, "features(ctx) returned no features"),
        (
            "def features(ctx):\n    return {'A': 1}",
            "A",
            "feature 'A' is of type int, not a polars expression (pl.Expr)",
        ),
        (
            "def features(ctx):\n    return {'A': lambda ctx: pl.len()}",
            "A",
            "(return the expression, not a function making it)",
        ),
        (
            "def features(ctx):\n    return {'A': pl.col('nope').max()}",
            "A",
            "feature 'A' cannot be computed on the transactions table (columns line, member_id, "
            'ts, type, points, revenue): ColumnNotFoundError: unable to find column "nope"',
        ),
        (
            "def features(ctx):\n    return {'A': pl.col('type').sum()}",
            "A",
            "InvalidOperationError: `sum` operation not supported for dtype `str`",
        ),
        (
            "def features(ctx):\n    return {'A': pl.col('points')}",
            "A",
            "feature 'A' gives a List(Float64) per member, not one value: aggregate it",
        ),
    ],
    ids=[
        "import raises",
        "syntax error",
        "exits on import",
        "no features",
        "features not callable",
        "features raises",
        "not a mapping",
        "name not a str",
        "no names",
        "expression not an expr",
        "expression a function",
        "unknown column",
        "wrong column type",
        "not an aggregation",
    ],
)
def test_wrong_module_is_a_config_error_naming_file_and_feature(
    write_module: WriteModule, source: str, key: str | None, message: str
) -> None:
    path = write_module(source)
    with pytest.raises(ConfigError) as raised:
        load_feature_module(path)
    assert (raised.value.path, raised.value.key) == (path, key)
    assert message in str(raised.value)


@pytest.mark.parametrize("name", ["max_points", "1X", "A-B", "_A", "A\n", "É"])
def test_invalid_feature_name_is_a_config_error(write_module: WriteModule, name: str) -> None:
    path = write_module(f"def features(ctx):\n    return {{{name!r}: pl.len()}}")
    with pytest.raises(ConfigError) as raised:
        load_feature_module(path)
    assert (raised.value.path, raised.value.key) == (path, name)
    assert f"invalid feature name {name!r}: use upper-case letters" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "clash"),
    [
        ("AVG_POINTS_BOUGHT", "a built-in feature"),
        ("TRANSACTION_COUNT", "a built-in feature"),
        ("LAST_7_TRANSACTIONS_AVG_REVENUE_USD", "the built-in family LAST_<N>_TRANSACTIONS_AVG"),
        ("PCT_GIFT_TRANSACTIONS_LAST_3_DAYS", "the built-in family PCT_<TYPE>_TRANSACTIONS"),
    ],
)
def test_name_of_a_builtin_is_a_config_error(
    write_module: WriteModule, name: str, clash: str
) -> None:
    path = write_module(f"def features(ctx):\n    return {{{name!r}: pl.len()}}")
    with pytest.raises(ConfigError) as raised:
        registry_with([path])
    assert (raised.value.path, raised.value.key) == (path, name)
    assert f"feature {name!r} clashes with {clash}" in str(raised.value)


def test_name_of_another_modules_feature_is_a_config_error(write_module: WriteModule) -> None:
    path = write_module("def features(ctx):\n    return {'MAX_POINTS_BOUGHT': pl.len()}")
    with pytest.raises(ConfigError) as raised:
        registry_with([LOYALTY, path])
    assert (raised.value.path, raised.value.key) == (path, "MAX_POINTS_BOUGHT")
    assert f"'MAX_POINTS_BOUGHT' is also defined by the feature module {LOYALTY}" in str(
        raised.value
    )


def test_module_listed_twice_is_a_config_error() -> None:
    again = LOYALTY.parent / ".." / "modules" / "loyalty.py"
    with pytest.raises(ConfigError) as raised:
        registry_with([LOYALTY, again])
    assert (raised.value.path, raised.value.key) == (again, None)
    assert f"feature module listed twice (as {LOYALTY})" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("absent.py", "feature module does not exist"),
        ("", "feature module is not a file"),
        ("features.txt", "feature module is not a Python source file (.py)"),
    ],
    ids=["missing", "a directory", "not .py"],
)
def test_module_file_that_cannot_be_imported_is_a_config_error(
    tmp_path: Path, name: str, message: str
) -> None:
    path = tmp_path / name
    if name.endswith(".txt"):
        path.write_text("def features(ctx):\n    return {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_feature_module(path)
    assert (raised.value.path, raised.value.key) == (path, None)
    assert str(raised.value) == f"{path}: {message}"


def test_names_that_change_with_the_context_are_a_config_error_when_computed(
    write_module: WriteModule,
) -> None:
    path = write_module(
        """
        def features(ctx):
            return {"RECENT" if ctx.as_of.year > 2000 else "OLD": pl.len()}
        """
    )
    registry = registry_with([path])
    frame = pl.DataFrame(
        {"member_id": ["A"], "ts": [datetime(1999, 1, 1)], "type": ["buy"], "points": [1.0]}
    )
    with pytest.raises(ConfigError) as raised:
        compute_features(frame, ["RECENT"], as_of=datetime(1999, 12, 31), registry=registry)
    assert (raised.value.path, raised.value.key) == (path, "RECENT")
    assert "features(ctx) returned no 'RECENT' for as-of 1999-12-31T00:00:00+00:00" in str(
        raised.value
    )
