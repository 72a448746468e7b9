"""``report.html`` in a real browser: headless Chromium opens it offline and renders it whole.

Debian's ``chromium`` and ``chromium-driver``, driven by selenium; ``.ci/run`` installs them.
(Google Chrome and the chromedriver beside it, as on GitHub's runners, do as well.) Without a
browser the test is skipped, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offerflow.pipeline import write_report
from offerflow.pipeline.outputs.report import SECTIONS
from tests.conftest import PastRuns

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which(
    "chromedriver", path=os.environ.get("CHROMEWEBDRIVER")
)
#: a browser run as root in a container, kept off the network it would otherwise try
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # any host name the page asked for would fail to resolve instead of reaching out
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--window-size=1280,1600",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium that keeps its console messages and network events."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "chromium and chromium-driver are not installed (apt-get install chromium "
        message += "chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: .ci/run installs them")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # selenium's driver manager: never download anything
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def report(past_runs: PastRuns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The March run's report against the January run: every section."""
    run = shutil.copytree(past_runs.march, tmp_path_factory.mktemp("report") / "march")
    return write_report(run, baseline=past_runs.january)


def test_the_report_renders_every_section_offline_without_an_error(
    browser: Any, report: Path
) -> None:
    browser.get_log("performance")  # what the browser did before the page is not the page's
    browser.get(report.as_uri())
    WebDriverWait(browser, 30).until(
        lambda driver: driver.execute_script("return document.readyState") == "complete"
    )
    for section in SECTIONS:
        element = browser.find_element(By.ID, section)
        assert element.is_displayed(), section
        assert element.size["height"] > 50, section
    widths = browser.execute_script(
        "return [...document.querySelectorAll('svg')].map(e => e.getBoundingClientRect().width)"
    )
    assert len(widths) >= len(SECTIONS) - 2  # the header and the rejects are tables
    assert min(widths) > 100
    assert browser.get_log("browser") == []  # the console: no error, no warning, nothing
    events = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    requested = [
        event["params"]["request"]["url"]
        for event in events
        if event["method"] == "Network.requestWillBeSent"
    ]
    assert report.as_uri() in requested
    assert [
        url for url in requested if url != report.as_uri() and not url.startswith("data:")
    ] == []
