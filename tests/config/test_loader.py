"""Partner configs: loading, interpolation, and errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from offerflow.config import DEFAULT_CONFIG, DEFAULT_FEATURES, PartnerConfig, load_config
from offerflow.errors import ConfigError, ExitCode


def _default_document() -> dict[str, object]:
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert isinstance(document, dict)
    return document


def _write(tmp_path: Path, document: object, name: str = "partner.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_default_config_loads_with_the_eight_features_and_bundled_endpoints() -> None:
    config = load_config()
    assert config.partner == "default"
    assert config.features == DEFAULT_FEATURES
    assert [m.name for m in config.models] == ["ats", "resp"]
    assert config.uses_bundled_server


def test_default_input_ships_inside_the_package() -> None:
    config = load_config()
    assert config.input.path.is_file()
    assert config.input.path.parent == DEFAULT_CONFIG.resolve().parent


def test_relative_input_path_is_taken_relative_to_the_config_file(tmp_path: Path) -> None:
    document = _default_document()
    document["input"] = {"path": "data/members.csv"}
    config = load_config(_write(tmp_path, document))
    assert config.input.path == tmp_path / "data" / "members.csv"


def test_bundled_urls_are_pointed_at_the_running_server() -> None:
    config = load_config().with_bundled_base("http://127.0.0.1:9999/")
    assert [e.url for e in config.endpoints] == [
        "http://127.0.0.1:9999/ml/ats/predict",
        "http://127.0.0.1:9999/ml/resp/predict",
        "http://127.0.0.1:9999/offer/assign",
    ]
    assert not config.uses_bundled_server


def test_environment_variables_are_interpolated(tmp_path: Path) -> None:
    document = _default_document()
    document["models"][0]["url"] = "${ATS_URL}/predict"  # type: ignore[index]
    config = load_config(_write(tmp_path, document), environ={"ATS_URL": "http://models:8080"})
    assert config.models[0].url == "http://models:8080/predict"


def test_a_missing_environment_variable_names_the_variable_and_key(tmp_path: Path) -> None:
    document = _default_document()
    document["models"][0]["url"] = "${ATS_URL}/predict"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"ATS_URL is not set") as caught:
        load_config(_write(tmp_path, document), environ={})
    assert caught.value.key == "models.0.url"


def test_an_unknown_key_is_named_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    document = _default_document()
    document["models"][1]["timeout"] = 3  # type: ignore[index]
    path = _write(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "models.1.timeout" in message
    assert "did you mean 'timeout_s'?" in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "timeout:" in text)
    assert f"line {line}" in message
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("models", 0, "url"), "not a url", "not an http"),
        (("models", 0, "url"), "ftp://host/x", "not an http"),
        (("models", 0, "timeout_s"), -1, "greater than 0"),
        (("models", 0, "retries"), -2, "greater than or equal to 0"),
        (("models", 0, "concurrency"), 0, "greater than or equal to 1"),
        (("offer", "request", "ats_prediction"), "nope", "'nope' is not a selected feature"),
        (("failure_budget",), 1.5, "less than or equal to 1"),
        (("models", 0, "backoff_max_s"), 0.01, "backoff_max_s .* is below backoff_initial_s"),
        (("models", 0, "retry_statuses"), [503, 404], r"\[404\] cannot be retried"),
        (("models", 1, "breaker", "failures"), 0, "greater than or equal to 1"),
        (("offer", "timeout_s"), 120, "exceeds member_deadline_s"),
        (("retry_budget", "ratio"), -0.1, "greater than or equal to 0"),
        (("shutdown_grace_s",), -1, "greater than or equal to 0"),
        (("drift", "psi"), 0, "greater than 0"),
        (("drift", "offer_share"), 1.5, "less than or equal to 1"),
        (("drift", "latency_p99_ratio"), 0.5, "greater than 1"),
    ],
)
def test_invalid_values_are_rejected_naming_the_key(
    tmp_path: Path, path: tuple[str | int, ...], value: object, expected: str
) -> None:
    document = _default_document()
    target: object = document
    for part in path[:-1]:
        target = target.setdefault(part, {}) if isinstance(target, dict) else target[part]  # type: ignore[index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, document))


def test_a_missing_url_is_named(tmp_path: Path) -> None:
    document = _default_document()
    del document["offer"]["url"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"key 'offer.url': Field required"):
        load_config(_write(tmp_path, document))


@pytest.mark.parametrize("text", ["", "- a list\n", "partner: [unclosed\n"])
def test_a_file_that_is_not_a_yaml_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "partner.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_config_is_frozen() -> None:
    config = load_config()
    with pytest.raises(ValueError, match="frozen"):
        config.partner = "other"  # type: ignore[misc]


def test_drift_limits_default_to_psi_and_offer_share_only() -> None:
    drift = load_config().drift
    assert (drift.psi, drift.offer_share) == (0.2, 0.10)
    assert (drift.median_shift, drift.p90_shift, drift.latency_p99_ratio) == (None, None, None)


def test_an_unknown_drift_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    document = _default_document()
    document["drift"] = {"pis": 0.1}
    with pytest.raises(ConfigError, match=r"drift.pis.*did you mean 'psi'\?"):
        load_config(_write(tmp_path, document))


def test_drift_limits_leave_the_fingerprint_alone(tmp_path: Path) -> None:
    document = _default_document()
    plain = load_config(_write(tmp_path, document, "plain.yaml"))
    document["drift"] = {"psi": 0.1, "median_shift": 0.5}
    config = load_config(_write(tmp_path, document))
    assert config.drift.psi == 0.1
    assert config.fingerprint() == plain.fingerprint()


def test_fingerprint_changes_with_content() -> None:
    config = load_config()
    other = config.model_copy(update={"failure_budget": 0.5})
    assert isinstance(other, PartnerConfig)
    assert config.fingerprint() == load_config().fingerprint()
    assert config.fingerprint() != other.fingerprint()
