"""Partners: every example works, a broken copy of each fails clearly, a new one needs no code."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from offerflow.cli import main
from offerflow.config import DEFAULT_FEATURES as FEATURES
from offerflow.errors import ExitCode
from offerflow.pipeline import generate_transactions, write_transactions
from offerflow.serving import BundledServer

PARTNERS = Path(__file__).resolve().parents[1] / "partners"
EXAMPLES = sorted(p.stem for p in PARTNERS.glob("*.yaml"))


def _document(partner: str) -> tuple[dict[str, Any], Path]:
    """A partner's config as a dict with absolute paths, and the folder it came from."""
    path = (PARTNERS / f"{partner}.yaml").resolve()
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    document["input"]["path"] = str(path.parent / document["input"]["path"])
    document["feature_modules"] = [
        str(path.parent / module) for module in document.get("feature_modules", [])
    ]
    return document, path.parent


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "partner.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_there_are_several_example_partners() -> None:
    assert {"default", "acme", "globex", "vandelay"} <= set(EXAMPLES)


@pytest.mark.parametrize("partner", EXAMPLES)
def test_every_example_partner_validates_with_its_endpoint_contracts(
    partner: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(PARTNERS / f"{partner}.yaml"), "--check-endpoints"]) == 0
    assert "endpoints checked:" in capsys.readouterr().out


def _unknown_key(document: dict[str, Any]) -> str:
    document["models"][0]["timeout"] = 5
    return "did you mean 'timeout_s'?"


def _missing_url(document: dict[str, Any]) -> str:
    del document["offer"]["url"]
    return "key 'offer.url': Field required"


def _unknown_feature(document: dict[str, Any]) -> str:
    document["features"] = [*document.get("features", []), "AVG_POINTS_BOUGTH"]
    return "unknown feature 'AVG_POINTS_BOUGTH'"


def _field_the_endpoint_lacks(document: dict[str, Any]) -> str:
    model = document["models"][0]
    if model.get("request") is None:
        model["request"] = {name: name for name in document["features"]}
    model["request"]["LOYALTY_TIER"] = {"const": 3}
    return "sends field 'LOYALTY_TIER', the endpoint has none"


@pytest.mark.parametrize("partner", EXAMPLES)
@pytest.mark.parametrize(
    "break_it", [_unknown_key, _missing_url, _unknown_feature, _field_the_endpoint_lacks]
)
def test_a_broken_copy_of_every_partner_fails_validation_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], partner: str, break_it: Any
) -> None:
    document, _ = _document(partner)
    expected = break_it(document)
    path = _write(tmp_path, document)
    assert main(["validate", str(path), "--check-endpoints"]) == ExitCode.USAGE
    assert expected in capsys.readouterr().err


NEW_PARTNER = """
partner: initech
input:
  path: exports/*.csv
  columns: {member_id: account, ts: when, type: what, points: miles, revenue: spend}
  timestamp_format: "%Y/%m/%d %H:%M"
  type_aliases: {earn: buy, transfer: gift, burn: redeem}
features: [AVG_POINTS_BOUGHT, AVG_REVENUE_USD, LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT,
           LAST_3_TRANSACTIONS_AVG_REVENUE_USD, PCT_BUY_TRANSACTIONS, PCT_GIFT_TRANSACTIONS,
           PCT_REDEEM_TRANSACTIONS, DAYS_SINCE_LAST_TRANSACTION, BIGGEST_REDEMPTION]
feature_modules: [initech_features.py]
models:
  - name: spend
    url: {base}/ml/ats/predict/batch
    protocol: json-batch
    batch_size: 20
    request: &eight
      AVG_POINTS_BOUGHT: AVG_POINTS_BOUGHT
      AVG_REVENUE_USD: AVG_REVENUE_USD
      LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT: LAST_3_TRANSACTIONS_AVG_POINTS_BOUGHT
      LAST_3_TRANSACTIONS_AVG_REVENUE_USD: LAST_3_TRANSACTIONS_AVG_REVENUE_USD
      PCT_BUY_TRANSACTIONS: PCT_BUY_TRANSACTIONS
      PCT_GIFT_TRANSACTIONS: PCT_GIFT_TRANSACTIONS
      PCT_REDEEM_TRANSACTIONS: PCT_REDEEM_TRANSACTIONS
      DAYS_SINCE_LAST_TRANSACTION: DAYS_SINCE_LAST_TRANSACTION
  - name: respond
    url: {base}/v2/models/resp/infer
    protocol: kserve-v2
    batch_size: 20
    request: *eight
offer:
  url: {base}/offer/assign
  request: {ats_prediction: spend, resp_prediction: respond}
"""

NEW_FEATURES = """
import polars as pl


def features(ctx):
    return {"BIGGEST_REDEMPTION": -pl.col("points").min().clip(upper_bound=0)}
"""


def test_a_brand_new_partner_runs_end_to_end_with_no_code_change(
    tmp_path: Path, bundled: BundledServer
) -> None:
    folder = tmp_path / "initech"
    (folder / "exports").mkdir(parents=True)
    config = folder / "initech.yaml"
    config.write_text(NEW_PARTNER.replace("{base}", bundled.base_url))
    (folder / "initech_features.py").write_text(NEW_FEATURES)
    for month, seed in (("2023-11", 1), ("2023-12", 2)):
        out = folder / "exports" / f"{month}.csv"
        args = ["generate-data", "--members", "120", "--seed", str(seed), "--config", str(config)]
        assert main([*args, "--out", str(out)]) == 0
    assert "earn" in (folder / "exports" / "2023-11.csv").read_text()

    assert main(["validate", str(config), "--check-endpoints"]) == 0
    out = tmp_path / "runs"
    args = ["run", "--config", str(config), "--out", str(out), "--run-id", "r"]
    assert main([*args, "--as-of", "2024-01-10"]) == ExitCode.OK

    offers = pl.read_parquet(out / "initech" / "r" / "offers.parquet")
    scored = offers.filter(pl.col("status") == "ok")
    assert scored.height > 150
    assert offers.filter(pl.col("status") != "ok").get_column("status").unique().to_list() in (
        [],
        ["no_transactions"],
    )
    assert scored.get_column("spend_prediction").null_count() == 0
    assert scored.get_column("respond_prediction").null_count() == 0
    assert set(scored.get_column("offer")) <= {"OFFER_1", "OFFER_2"}
    assert (scored.get_column("BIGGEST_REDEMPTION") >= 0).all()


def test_an_export_in_another_format_gives_the_offers_of_the_standard_file(
    tmp_path: Path,
) -> None:
    # partners/vandelay/transactions.csv came from the generator with this seed and size, in
    # Vandelay's format: ';', a decimal comma, cp1252, epoch milliseconds, its own words; here
    # it comes gzipped, as exports often do
    theirs = (PARTNERS / "vandelay" / "transactions.csv").read_bytes()
    assert b";" in theirs
    assert b"l\xf6sung" in theirs  # "einlösung" in cp1252
    packed = tmp_path / "transactions.csv.gz"
    packed.write_bytes(gzip.compress(theirs))
    standard = tmp_path / "members.csv"
    write_transactions(generate_transactions(300, seed=41), standard)
    out = tmp_path / "runs"
    common = ["run", "--out", str(out), "--as-of", "2024-01-10"]
    assert main([*common, "--input", str(standard), "--run-id", "standard"]) == ExitCode.OK
    config = ["--config", str(PARTNERS / "vandelay.yaml"), "--input", str(packed)]
    assert main([*common, *config, "--run-id", "theirs"]) == ExitCode.OK
    columns = ["member_id", "status", "offer", "ats_prediction", "resp_prediction", *FEATURES]
    mine = pl.read_parquet(out / "default" / "standard" / "offers.parquet").select(columns)
    vandelay = pl.read_parquet(out / "vandelay" / "theirs" / "offers.parquet").select(columns)
    assert vandelay.sort("member_id").equals(mine.sort("member_id"))
    assert vandelay.filter(pl.col("status") == "ok").height > 250
