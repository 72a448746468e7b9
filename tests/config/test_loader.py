"""Partner configs: loading, interpolation, and errors that name the file, the line and the key."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from offerflow.config import (
    DEFAULT_CONFIG,
    DEFAULT_FEATURES,
    PartnerConfig,
    config_from_document,
    load_config,
)
from offerflow.config.loader import MAX_YAML_NODES
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
    path = load_config().input.path
    assert isinstance(path, Path)
    assert path.is_file()
    assert path.parent == DEFAULT_CONFIG.resolve().parent


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


def test_a_standard_csv_file_in_utc_hashes_as_before_input_csv_and_timezone_existed(
    tmp_path: Path,
) -> None:
    # the fingerprint as README documents it, of the config as run.json stored it before
    # input.csv and input.timezone existed: runs begun then must keep their hash and stay
    # resumable
    config = load_config()
    stored = config.document()
    del stored["input"]["csv"], stored["input"]["timezone"], stored["drift"]
    content = {"fingerprint": "offerflow config v1", "config": stored, "feature_modules": {}}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert config.fingerprint() == hashlib.sha256(text.encode()).hexdigest()
    document = _default_document()
    document["input"]["csv"] = {"delimiter": ";"}  # type: ignore[index]
    assert load_config(_write(tmp_path, document)).fingerprint() != config.fingerprint()
    document = _default_document()
    document["input"]["timezone"] = "Europe/Berlin"  # type: ignore[index]
    assert load_config(_write(tmp_path, document)).fingerprint() != config.fingerprint()


def test_fingerprint_changes_with_content() -> None:
    config = load_config()
    other = config.model_copy(update={"failure_budget": 0.5})
    assert isinstance(other, PartnerConfig)
    assert config.fingerprint() == load_config().fingerprint()
    assert config.fingerprint() != other.fingerprint()


# YAML: parsed once, safely, with aliases capped ----------------------------------------------


def _bomb(levels: int, width: int = 10) -> str:
    """A "billion laughs": each level a list of ``width`` aliases of the level below."""
    lines = [f"partner: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_aliases_expanding_past_the_cap_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(6))  # 10**6 values from 300 bytes; ten more levels would be 10**16
    assert len(path.read_bytes()) < 400
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: refused: its YAML aliases expand to more than {MAX_YAML_NODES:,} values "
        "(a partner config has a few hundred)"
    )
    assert caught.value.exit_code == ExitCode.USAGE


def test_an_alias_inside_the_node_it_names_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text("partner: &self [*self]\n")
    with pytest.raises(ConfigError, match="a YAML alias refers to a node that contains it"):
        load_config(path)


def test_yaml_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("partner: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="YAML nested too deeply"):
        load_config(path)


def test_aliases_and_merge_keys_within_the_cap_load_and_keep_their_lines(tmp_path: Path) -> None:
    document = _default_document()
    text = yaml.safe_dump(document, sort_keys=False)
    text = text.replace("models:\n- name: ats\n", "models:\n- &first\n  name: ats\n", 1)
    text = text.replace("- name: resp\n", "- <<: *first\n  name: resp\n  timeout: 3\n", 1)
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip() == "timeout: 3")
    assert f"line {line}, key 'models.1.timeout': unknown key" in str(caught.value)
    path.write_text(text.replace("  timeout: 3\n", ""))
    assert load_config(path).models[1].name == "resp"


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text("partner: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML: could not determine a constructor"):
        load_config(path)


# Output modes ---------------------------------------------------------------------------------


def test_run_files_are_their_owners_only_by_default() -> None:
    output = load_config().output
    assert (output.dir_mode, output.file_mode) == (0o700, 0o600)


@pytest.mark.parametrize(
    ("dir_mode", "file_mode"), [("0750", "0640"), ("750", "640"), ("0o700", "0o600")]
)
def test_output_modes_are_octal_strings(tmp_path: Path, dir_mode: str, file_mode: str) -> None:
    document = _default_document()
    document["output"].update(dir_mode=dir_mode, file_mode=file_mode)  # type: ignore[attr-defined]
    output = load_config(_write(tmp_path, document)).output
    assert (output.dir_mode, output.file_mode) == (int(dir_mode[-3:], 8), int(file_mode[-3:], 8))
    assert output.model_dump(include={"dir_mode", "file_mode"}) == {
        "dir_mode": f"0{dir_mode[-3:]}",
        "file_mode": f"0{file_mode[-3:]}",
    }


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("file_mode", 384, "write a mode as an octal string in quotes, e.g. '0600'"),
        ("file_mode", 600, "write a mode as an octal string in quotes"),
        ("file_mode", "rw-------", "is not a permission mode of three octal digits"),
        ("file_mode", "4600", "is not a permission mode of three octal digits"),
        ("file_mode", "0400", r"the owner needs rw \(0600\) on a run's files"),
        ("file_mode", "0700", "a run's files are data, not programs: no x bits"),
        ("file_mode", "0664", r"only the owner may write \(no 0020 or 0002 bits\)"),
        ("dir_mode", "0600", r"the owner needs rwx \(0700\) on a run directory"),
        ("dir_mode", "0777", "only the owner may write"),
    ],
)
def test_an_output_mode_that_is_ambiguous_or_unsafe_is_refused_naming_the_key(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    document = _default_document()
    document["output"][key] = value  # type: ignore[index]
    with pytest.raises(ConfigError, match=rf"key 'output\.{key}': Value error, .*{expected}"):
        load_config(_write(tmp_path, document))


@pytest.mark.parametrize(
    ("csv", "key", "expected"),
    [
        ({"delimiter": ";;"}, "input.csv.delimiter", "';;': give one ASCII character"),
        ({"quote": ""}, "input.csv.quote", "'': give one ASCII character"),
        ({"decimal": ","}, "input.csv", "decimal ',' needs another delimiter"),
        ({"delimiter": "'", "quote": "'"}, "input.csv", "delimiter and quote are both"),
        ({"encoding": "klingon"}, "input.csv.encoding", "'klingon' is not a text encoding"),
        ({"decimal": ";"}, "input.csv.decimal", r"Input should be '\.' or ','"),
        ({"format": "parquet", "delimiter": ";"}, "input", "a Parquet input has none"),
        ({"thousands": "."}, "input.csv", "thousands and decimal are both '.'"),
    ],
)
def test_a_csv_format_that_cannot_be_read_is_refused_naming_the_key(
    tmp_path: Path, csv: dict[str, str], key: str, expected: str
) -> None:
    document = _default_document()
    if "format" in csv:
        document["input"]["format"] = csv.pop("format")  # type: ignore[index]
    document["input"]["csv"] = csv  # type: ignore[index]
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}': .*{expected}"):
        load_config(_write(tmp_path, document))


@pytest.mark.parametrize(
    ("settings", "key", "expected"),
    [
        ({"timezone": "Mars/Olympus"}, "input.timezone", "'Mars/Olympus' is not an IANA time"),
        ({"timezone": "../etc/passwd"}, "input.timezone", "is not an IANA time zone"),
        (
            {"timezone": "Europe/Berlin", "timestamp_format": "epoch_ms"},
            "input",
            "epoch times are UTC: input.timezone has no meaning with them",
        ),
    ],
)
def test_a_time_zone_that_cannot_be_used_is_refused_naming_the_key(
    tmp_path: Path, settings: dict[str, str], key: str, expected: str
) -> None:
    document = _default_document()
    document["input"].update(settings)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=rf"key '{re.escape(key)}': .*{expected}"):
        load_config(_write(tmp_path, document))


def test_a_tab_delimiter_is_kept_and_an_encoding_read_by_its_name(tmp_path: Path) -> None:
    document = _default_document()
    document["input"]["csv"] = {"delimiter": "\t", "encoding": "Latin-1"}  # type: ignore[index]
    csv = load_config(_write(tmp_path, document)).input.csv
    assert (csv.delimiter, csv.encoding) == ("\t", "iso8859-1")


# The config written down (run.json's): references, not their values ---------------------------

PARTNERS = sorted((Path(__file__).resolve().parents[2] / "partners").glob("*.yaml"))


@pytest.mark.parametrize("path", PARTNERS, ids=lambda path: path.stem)
def test_a_partner_config_reads_back_from_its_document_unchanged(path: Path) -> None:
    config = load_config(path)
    document = json.loads(json.dumps(config.document()))  # as run.json stores it
    again = config_from_document(document, base=path.parent, source=Path("run.json"))
    assert again.model_dump() == config.model_dump()
    assert again.document() == document
    assert again.fingerprint() == config.fingerprint()


def _with_references(tmp_path: Path) -> Path:
    document = _default_document()
    document["models"][0]["url"] = "${ATS_URL}/predict"  # type: ignore[index]
    document["models"][0]["timeout_s"] = "${ATS_TIMEOUT}"  # type: ignore[index]
    document["offer"]["headers"] = {"Authorization": "Bearer ${TOKEN}"}  # type: ignore[index]
    return _write(tmp_path, document)


ENVIRON = {"ATS_URL": "http://models:8080", "ATS_TIMEOUT": "3", "TOKEN": "s3cr3t"}


def test_a_value_from_the_environment_is_written_down_as_its_reference(tmp_path: Path) -> None:
    config = load_config(_with_references(tmp_path), environ=ENVIRON)
    assert (config.models[0].url, config.models[0].timeout_s) == ("http://models:8080/predict", 3)
    document = config.document()
    assert document["models"][0]["url"] == "${ATS_URL}/predict"
    assert document["models"][0]["timeout_s"] == "${ATS_TIMEOUT}"
    assert document["offer"]["headers"] == {"Authorization": "Bearer ${TOKEN}"}
    text = json.dumps(document)
    assert "s3cr3t" not in text
    assert "models:8080" not in text


def test_a_value_changed_after_loading_is_written_down_as_it_is_now(tmp_path: Path) -> None:
    config = load_config(_with_references(tmp_path), environ=ENVIRON)
    moved = config.with_bundled_base("http://unused").model_copy(
        update={"models": (config.models[0].model_copy(update={"url": "http://other/x"}),)}
    )
    assert moved.document()["models"][0]["url"] == "http://other/x"
    assert moved.document()["offer"]["headers"] == {"Authorization": "Bearer ${TOKEN}"}


def test_the_fingerprint_does_not_depend_on_the_values_of_references(tmp_path: Path) -> None:
    path = _with_references(tmp_path)
    first = load_config(path, environ=ENVIRON).fingerprint()
    assert load_config(path, environ=ENVIRON | {"TOKEN": "rotated"}).fingerprint() == first
