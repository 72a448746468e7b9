"""serve() and ``python -m offerflow.serving``: the announcement, the options, the layering."""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import urllib.request

import pytest

from offerflow.errors import UsageError
from offerflow.serving import BundledServer
from offerflow.serving.server import is_loopback, serve
from tests.processes import busy_port
from tests.samples import PLAIN_FEATURES

pytestmark = pytest.mark.timeout(30)

SERVE = [sys.executable, "-m", "offerflow.serving", "--host", "127.0.0.1", "--port", "0"]
FEATURES = PLAIN_FEATURES
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_features(base_url: str) -> bytes:
    """POST the features to the ATS endpoint; return the body of the answer."""
    data = repr(FEATURES).replace("'", '"').encode()
    request = urllib.request.Request(
        f"{base_url}/ml/ats/predict", data=data, headers={"content-type": "application/json"}
    )
    with DIRECT.open(request, timeout=10) as response:
        body: bytes = response.read()
    return body


def read_line(stream: object, timeout: float) -> bytes:
    """Read one line from a pipe, failing after ``timeout`` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        assert selector.select(timeout), f"no line within {timeout} s"
    line: bytes = stream.readline()  # type: ignore[attr-defined]
    return line


def test_announces_exactly_one_line_on_stdout() -> None:
    process = subprocess.Popen(SERVE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        line = read_line(process.stdout, timeout=20).decode()
        match = re.fullmatch(r"offerflow serving on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        assert post_features(match[1]) == b'{"prediction":85.0}'
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=10)
    assert rest == b""


def test_the_access_log_is_off_by_default() -> None:
    with BundledServer() as server:
        post_features(server.base_url)
        assert "POST /ml/ats/predict" not in server.stderr_tail()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_access_log_writes_each_request_to_stderr(workers: str) -> None:
    command = [*SERVE, "--workers", workers, "--access-log"]
    with BundledServer(command=command) as server:
        post_features(server.base_url)
        assert '"POST /ml/ats/predict HTTP/1.1" 200' in server.stderr_tail()


def test_serve_needs_a_worker() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        serve(port=0, workers=0)


def test_serve_on_a_busy_port_is_a_usage_error_naming_it() -> None:
    with busy_port() as port, pytest.raises(UsageError, match=f"cannot bind 127.0.0.1:{port}"):
        serve(port=port)


def test_the_command_refuses_a_bad_port() -> None:
    result = subprocess.run(
        [*SERVE, "--port", "70000"], capture_output=True, timeout=20, check=False
    )
    assert result.returncode == 2
    assert b"within 0..65535" in result.stderr


def run_python(code: str) -> str:
    """Run Python code in a fresh interpreter; return what it prints."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True
    )
    return result.stdout


def test_importing_the_package_loads_neither_fastapi_nor_uvicorn() -> None:
    loaded = run_python(
        "import sys, offerflow.serving; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'uvicorn'}))"
    )
    assert loaded.strip() == "[]"


def test_serve_is_exported_lazily() -> None:
    assert run_python("import offerflow.serving as s; print(s.serve.__module__)").strip() == (
        "offerflow.serving.server"
    )


def test_serving_imports_nothing_of_the_workflow() -> None:
    forbidden = run_python(
        "import sys, offerflow.serving, offerflow.serving.app, offerflow.serving.server, "
        "offerflow.serving.__main__; "
        "print(sorted(m for m in sys.modules if m.startswith(('offerflow.engine', "
        "'offerflow.pipeline', 'offerflow.cli', 'offerflow.distributed'))))"
    )
    assert forbidden.strip() == "[]"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("192.0.2.1", False),
        ("models.example", False),
        ("", False),
    ],
)
def test_loopback_is_127_0_0_0_8_the_ipv6_loopback_and_localhost(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_models_warns_when_it_binds_beyond_loopback() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails, nothing listens
    result = subprocess.run(
        [sys.executable, "-m", "offerflow", "serve-models", "--host", "192.0.2.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    warning = (
        "WARNING offerflow.serving.server: serving on 192.0.2.1, not a loopback address: any "
        "host that can reach it may call the bundled endpoints (no authentication, no TLS); "
        "bind 127.0.0.1 unless that is meant"
    )
    assert warning in result.stderr
    assert "cannot bind 192.0.2.1:0" in result.stderr


def test_the_bundled_server_on_loopback_warns_of_nothing(server: BundledServer) -> None:
    post_features(server.base_url)
    assert "WARNING" not in server.stderr_tail()
