"""run.json: the effective config (references, not secrets), module hashes, one fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from offerflow.config import PartnerConfig, load_config
from offerflow.errors import ConfigError, UsageError
from offerflow.pipeline.outputs.manifest import MANIFEST, read_manifest, write_manifest
from tests.partner_files import default_document, write_partner

AS_OF = datetime(2024, 1, 10, 23, 59, 59, tzinfo=UTC)
TOKEN = "s3cr3t-t0ken-value"
MODULE = """\
import polars as pl


def features(ctx):
    return {"MAX_POINTS_BOUGHT": pl.col("points").max()}
"""


@pytest.fixture
def partner_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A partner whose URLs and offer header come from the environment, with a feature module."""
    monkeypatch.setenv("OFFERFLOW_TEST_MODELS", "http://127.0.0.1:9")
    monkeypatch.setenv("OFFERFLOW_TEST_TOKEN", TOKEN)
    document = default_document("${OFFERFLOW_TEST_MODELS}")
    document["offer"]["headers"] = {"Authorization": "Bearer ${OFFERFLOW_TEST_TOKEN}"}
    document["feature_modules"] = ["features.py"]
    (tmp_path / "features.py").write_text(MODULE)
    return write_partner(tmp_path / "partner.yaml", document)


def _written(tmp_path: Path, partner_file: Path) -> tuple[Path, PartnerConfig]:
    config = load_config(partner_file)
    run_dir = tmp_path / "runs" / "default" / "r"
    run_dir.mkdir(parents=True)
    write_manifest(run_dir, config, partner_file, AS_OF)
    return run_dir, config


def _edit(run_dir: Path, change: Any) -> None:
    document = json.loads((run_dir / MANIFEST).read_text())
    change(document)
    (run_dir / MANIFEST).write_text(json.dumps(document))


def test_run_json_holds_every_field_of_the_config_with_references_not_their_values(
    tmp_path: Path, partner_file: Path
) -> None:
    run_dir, config = _written(tmp_path, partner_file)
    text = (run_dir / MANIFEST).read_text()
    assert TOKEN not in text
    assert "http://127.0.0.1:9" not in text
    stored = json.loads(text)
    assert stored["config"]["offer"]["headers"] == {
        "Authorization": "Bearer ${OFFERFLOW_TEST_TOKEN}"
    }
    assert stored["config"]["models"][0]["url"] == "${OFFERFLOW_TEST_MODELS}/ml/ats/predict"
    assert stored["config"]["models"][0]["retry_statuses"] == [429, 500, 502, 503, 504]
    assert stored["config"]["output"]["file_mode"] == "0600"
    module = str(tmp_path / "features.py")
    assert stored["config"]["feature_modules"] == [module]
    assert list(stored["feature_modules"]) == [module]
    assert stored["fingerprint"] == config.fingerprint()
    assert "config_path" not in stored


def test_the_config_read_back_is_the_one_written(tmp_path: Path, partner_file: Path) -> None:
    run_dir, config = _written(tmp_path, partner_file)
    again = read_manifest(run_dir).partner_config(run_dir)
    assert again.model_dump() == config.model_dump()
    assert again.offer.headers["Authorization"].get_secret_value() == f"Bearer {TOKEN}"
    assert again.fingerprint() == config.fingerprint()


def test_references_take_the_environment_of_the_session_that_reads_them(
    tmp_path: Path, partner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, config = _written(tmp_path, partner_file)
    monkeypatch.setenv("OFFERFLOW_TEST_TOKEN", "rotated")
    again = read_manifest(run_dir).partner_config(run_dir)
    assert again.offer.headers["Authorization"].get_secret_value() == "Bearer rotated"
    assert again.fingerprint() == config.fingerprint()  # a secret is not part of the config


def test_a_reference_whose_variable_is_gone_is_named_with_run_json(
    tmp_path: Path, partner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, _config = _written(tmp_path, partner_file)
    monkeypatch.delenv("OFFERFLOW_TEST_TOKEN")
    with pytest.raises(ConfigError) as caught:
        read_manifest(run_dir).partner_config(run_dir)
    assert str(caught.value) == (
        f"{run_dir / MANIFEST}, key 'offer.headers.Authorization': "
        "environment variable OFFERFLOW_TEST_TOKEN is not set"
    )


def test_the_partner_file_is_not_read_again(tmp_path: Path, partner_file: Path) -> None:
    run_dir, config = _written(tmp_path, partner_file)
    partner_file.write_text("partner: [this is not a config\n")
    assert read_manifest(run_dir).partner_config(run_dir).model_dump() == config.model_dump()


def test_a_feature_module_changed_since_the_run_started_is_refused_naming_it(
    tmp_path: Path, partner_file: Path
) -> None:
    run_dir, _config = _written(tmp_path, partner_file)
    module = tmp_path / "features.py"
    module.write_text(MODULE + "\nimport os  # anything could be here now\n")
    with pytest.raises(ConfigError) as caught:
        read_manifest(run_dir).partner_config(run_dir)
    assert str(caught.value).startswith(f"{module}: feature module changed since run r started")
    assert (caught.value.path, caught.value.exit_code) == (module, 2)


def test_a_run_json_edited_to_import_another_module_is_refused(
    tmp_path: Path, partner_file: Path
) -> None:
    run_dir, _config = _written(tmp_path, partner_file)
    other = tmp_path / "other.py"
    other.write_text(MODULE)
    module = str(tmp_path / "features.py")

    def only_the_config(document: dict[str, Any]) -> None:
        document["config"]["feature_modules"] = [str(other)]

    _edit(run_dir, only_the_config)
    with pytest.raises(UsageError, match="are not the ones recorded"):
        read_manifest(run_dir).partner_config(run_dir)

    def with_its_hash(document: dict[str, Any]) -> None:
        document["feature_modules"] = {str(other): document["feature_modules"][module]}

    _edit(run_dir, with_its_hash)
    with pytest.raises(
        UsageError, match="does not match the run's fingerprint: the file was edited"
    ):
        read_manifest(run_dir).partner_config(run_dir)


def test_a_run_json_whose_config_was_edited_is_refused(tmp_path: Path, partner_file: Path) -> None:
    run_dir, _config = _written(tmp_path, partner_file)

    def lenient(document: dict[str, Any]) -> None:
        document["config"]["failure_budget"] = 1.0

    _edit(run_dir, lenient)
    with pytest.raises(UsageError) as caught:
        read_manifest(run_dir).partner_config(run_dir)
    assert str(caught.value) == (
        f"{run_dir / MANIFEST}: the config does not match the run's fingerprint: the file was "
        "edited"
    )


def test_a_run_json_of_another_run_is_refused(tmp_path: Path, partner_file: Path) -> None:
    run_dir, _config = _written(tmp_path, partner_file)
    moved = run_dir.rename(run_dir.with_name("other"))
    with pytest.raises(UsageError) as caught:
        read_manifest(moved)
    assert str(caught.value) == (f"{moved / MANIFEST}: names run 'r', but its directory is 'other'")


def test_the_fingerprint_covers_the_config_and_the_modules_content_not_secrets(
    tmp_path: Path, partner_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(partner_file)
    fingerprint = config.fingerprint()
    assert len(fingerprint) == 64
    assert load_config(partner_file).fingerprint() == fingerprint
    assert config.model_copy(update={"failure_budget": 0.5}).fingerprint() != fingerprint
    monkeypatch.setenv("OFFERFLOW_TEST_TOKEN", "another")
    assert load_config(partner_file).fingerprint() == fingerprint
    (tmp_path / "features.py").write_text(MODULE + "# one more line\n")
    assert config.fingerprint() != fingerprint
