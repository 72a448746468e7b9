"""Endpoint configs at the edges a partner hits first: URLs, headers, TLS files and proxies.

What cannot be sent is refused when the config loads (so ``validate`` and ``run`` agree), with
a ConfigError naming the key that never shows a secret.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offerflow.cli import main
from offerflow.config import NO_PROXY, load_config
from offerflow.errors import ConfigError, ExitCode
from tests.partner_files import default_document, write_partner
from tests.tls import Pki, make_pki

SECRET = "s3cr3t-Value"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _load(tmp_path: Path, ats: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    """Load the default partner with the ats model changed by ``ats``."""
    document = default_document("http://models.example")
    document["models"][0].update(ats)
    return load_config(write_partner(tmp_path / "partner.yaml", document), environ=environ or {})


def _refused(tmp_path: Path, ats: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError loading it raises; it never holds the secret."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, ats, environ)
    message = str(caught.value)
    assert SECRET not in message
    return message


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://user:${PASS}@models.example/ml/ats/predict",
        "https://${PASS}@models.example/ml/ats/predict",
        "http://user:${PASS}@models.example:8443/ml/ats/predict?api_key=${PASS}",
    ],
)
def test_credentials_in_a_url_are_refused_without_showing_them(tmp_path: Path, url: str) -> None:
    message = _refused(tmp_path, {"url": url}, {"PASS": SECRET})
    assert "key 'models.0.url'" in message
    assert "credentials in a URL (user:password@) are refused" in message
    assert "user:" + SECRET not in message
    assert "models.example/ml/ats/predict:" in message or "models.example:8443" in message
    assert "api_key" not in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://models.example/ml/ats predict", "cannot hold a space"),
        ("http://models.example/ml/ats\tpredict", "cannot hold a space, a control"),
        ("http://models.example/ml/ats?q=a b", "cannot hold a space"),
        ("http://models.example/ml/ätš", "non-ASCII"),
        ("bundled:/ml/ats predict", "cannot hold a space"),
        ("http://models.example:99999/ml/ats", "port from 1 to 65535"),
        ("http://models.example:http/ml/ats", "port from 1 to 65535"),
        ("http://models.example:0/ml/ats", "port 0"),
        ("http://:8080/ml/ats", "not an http(s) URL"),
        ("ftp://models.example/ml/ats", "not an http(s) URL"),
    ],
)
def test_a_url_that_cannot_be_sent_is_refused_naming_the_key(
    tmp_path: Path, url: str, problem: str
) -> None:
    message = _refused(tmp_path, {"url": url})
    assert "key 'models.0.url'" in message
    assert problem in message


def test_a_query_is_kept_to_be_sent_but_never_shown(tmp_path: Path) -> None:
    config = _load(tmp_path, {"url": "https://models.example/ats?api_key=${KEY}"}, {"KEY": SECRET})
    assert config.models[0].url == f"https://models.example/ats?api_key={SECRET}"
    assert SECRET not in repr(config.models[0])
    assert SECRET not in repr(config)
    assert "url='https://models.example/ats'" in repr(config.models[0])


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Bad Name", "header name 'Bad Name' is not an HTTP token"),
        ("X-Key:", "header name 'X-Key:' is not an HTTP token"),
        ("Content-Length", "header 'Content-Length' is written by offerflow itself"),
        ("Host", "header 'Host' is written by offerflow itself"),
    ],
)
def test_a_header_name_that_cannot_be_sent_is_refused(
    tmp_path: Path, name: str, problem: str
) -> None:
    message = _refused(tmp_path, {"headers": {name: SECRET}})
    assert "key 'models.0.headers'" in message
    assert problem in message


@pytest.mark.parametrize("break_", ["\r\nX-Injected: 1", "\nX: y", "\x00", "\x7f"])
def test_a_header_value_that_would_break_the_request_is_refused_unshown(
    tmp_path: Path, break_: str
) -> None:
    # the value comes from the environment: checked after interpolation
    message = _refused(tmp_path, {"headers": {"X-Key": "${VALUE}"}}, {"VALUE": SECRET + break_})
    assert "key 'models.0.headers'" in message
    assert "the value of header 'X-Key' holds a control character" in message


def test_header_values_are_secrets_in_every_repr(tmp_path: Path) -> None:
    config = _load(tmp_path, {"headers": {"Authorization": f"Bearer {SECRET}"}})
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert config.models[0].headers["Authorization"].get_secret_value() == f"Bearer {SECRET}"


def test_validate_and_run_agree_on_a_bad_header_name(tmp_path: Path) -> None:
    document = default_document("http://models.example")
    document["models"][0]["headers"] = {"X Bad": "1"}
    path = write_partner(tmp_path / "partner.yaml", document)
    assert main(["validate", str(path)]) == ExitCode.USAGE
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "runs")]) == ExitCode.USAGE


# -- TLS files --------------------------------------------------------------------------------


def test_tls_files_are_taken_relative_to_the_config_file(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "tls").mkdir()
    for name, source in [("ca.pem", pki.ca_file), ("client.pem", pki.client_file)]:
        (tmp_path / "tls" / name).write_bytes(source.read_bytes())
    config = _load(
        tmp_path,
        {
            "url": "https://models.example/ats",
            "ca_file": "tls/ca.pem",
            "cert_file": "tls/client.pem",
        },
    )
    assert config.models[0].ca_file == tmp_path / "tls" / "ca.pem"
    assert config.models[0].cert_file == tmp_path / "tls" / "client.pem"
    assert config.models[0].key_file is None


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_is_a_config_error_naming_the_key(
    tmp_path: Path, pki: Pki, key: str
) -> None:
    ats = {"url": "https://models.example/ats", "cert_file": str(pki.client_file)}
    ats[key] = "missing.pem"
    message = _refused(tmp_path, ats)
    assert f"key 'models.0.{key}'" in message
    assert f"no file at {tmp_path / 'missing.pem'}" in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("ca_file", "not a PEM file of CA certificates"),
        ("cert_file", "cannot load the certificate and its key"),
    ],
)
def test_a_tls_file_that_is_not_pem_is_a_config_error_naming_the_key(
    tmp_path: Path, key: str, problem: str
) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    message = _refused(tmp_path, {"url": "https://models.example/ats", key: "junk.pem"})
    assert f"key 'models.0.{key}'" in message
    assert problem in message


@pytest.mark.parametrize(
    ("ats", "problem"),
    [
        ({"url": "http://models.example/ats", "ca_file": "ca.pem"}, "apply to https URLs only"),
        ({"url": "https://models.example/ats", "key_file": "k.pem"}, "cert_file, which is not"),
    ],
)
def test_tls_settings_that_cannot_apply_are_refused(
    tmp_path: Path, ats: dict[str, str], problem: str
) -> None:
    assert problem in _refused(tmp_path, ats)


# -- proxies ----------------------------------------------------------------------------------

PROXY = "http://proxy.example:3128"


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://models.example/a", {"HTTPS_PROXY": PROXY}, PROXY),
        ("https://models.example/a", {"https_proxy": PROXY, "HTTPS_PROXY": "http://x:1"}, PROXY),
        ("https://models.example/a", {"https_proxy": "", "HTTPS_PROXY": PROXY}, NO_PROXY),
        ("https://models.example/a", {"HTTP_PROXY": PROXY}, NO_PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY}, PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY, "REQUEST_METHOD": "GET"}, NO_PROXY),
        ("http://models.example/a", {"http_proxy": PROXY, "REQUEST_METHOD": "GET"}, PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY, "NO_PROXY": "models.example"}, NO_PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY, "NO_PROXY": ".example"}, NO_PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY, "NO_PROXY": "odels.example"}, PROXY),
        (
            "http://models.example:81/a",
            {"HTTP_PROXY": PROXY, "no_proxy": "x, models.example:81"},
            NO_PROXY,
        ),
        (
            "http://models.example:82/a",
            {"HTTP_PROXY": PROXY, "no_proxy": "models.example:81"},
            PROXY,
        ),
        ("http://[::1]:8080/a", {"HTTP_PROXY": PROXY, "NO_PROXY": "[::1]"}, NO_PROXY),
        ("http://models.example/a", {"HTTP_PROXY": PROXY, "NO_PROXY": "*"}, NO_PROXY),
        ("http://models.example/a", {}, NO_PROXY),
    ],
)
def test_the_environments_proxy_is_chosen_per_url(
    tmp_path: Path, url: str, environ: dict[str, str], expected: str
) -> None:
    config = _load(tmp_path, {"url": url}, environ)
    assert config.models[0].proxy == expected


def test_a_bundled_endpoint_never_goes_through_the_environments_proxy(tmp_path: Path) -> None:
    document = default_document()
    config = load_config(
        write_partner(tmp_path / "p.yaml", document), environ={"HTTP_PROXY": PROXY}
    )
    assert {e.proxy for e in config.endpoints} == {NO_PROXY}


@pytest.mark.parametrize(("own", "expected"), [(PROXY, PROXY), ("none", NO_PROXY)])
def test_an_endpoints_own_proxy_overrides_the_environment(
    tmp_path: Path, own: str, expected: str
) -> None:
    environ = {"HTTP_PROXY": "http://other.example:8080", "NO_PROXY": "models.example"}
    config = _load(tmp_path, {"proxy": own}, environ)
    assert config.models[0].proxy == expected


@pytest.mark.parametrize(
    "proxy", ["socks5://proxy.example:1080", "https://proxy.example", "http://proxy.example:0"]
)
def test_a_proxy_that_is_not_http_is_refused(tmp_path: Path, proxy: str) -> None:
    message = _refused(tmp_path, {"proxy": proxy})
    assert "key 'models.0.proxy'" in message
    assert "the proxy is not an http://host:port proxy URL" in message


def test_a_bad_proxy_from_the_environment_names_the_variable_without_its_password(
    tmp_path: Path,
) -> None:
    environ = {"HTTPS_PROXY": f"socks5://user:{SECRET}@proxy.example:1080"}
    message = _refused(tmp_path, {"url": "https://models.example/a"}, environ)
    assert "key 'models.0.proxy'" in message
    assert "the environment's HTTPS_PROXY is not an http://host:port proxy URL" in message


def test_a_proxys_password_is_kept_but_never_shown(tmp_path: Path) -> None:
    proxy = f"http://user:{SECRET}@proxy.example:3128"
    config = _load(tmp_path, {}, {"HTTP_PROXY": proxy})
    assert config.models[0].proxy == proxy
    assert SECRET not in repr(config)


def test_the_proxy_is_not_part_of_the_fingerprint(tmp_path: Path) -> None:
    direct = _load(tmp_path, {})
    proxied = _load(tmp_path, {}, {"HTTP_PROXY": PROXY})
    assert direct.fingerprint() == proxied.fingerprint()
