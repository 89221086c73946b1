"""The dashboard in a real browser: Selenium drives headless Chromium against ``swell serve``.

Skipped cleanly where Chromium, its driver or Selenium are missing (``.ci/run``
installs them).  Screenshots of each page go to the test's tmp_path and, when
SWELL_SCREENSHOTS names a folder, there too.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from swell_command import running_server  # type: ignore[import-not-found]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
KEY = "dashboard-e2e-key"
LOG_LINE = "dashboard-e2e printed this"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="chromium and chromium-driver are not installed"),
]

MODEL = f'''
class Model:
    def predict(self, model_input):
        print("{LOG_LINE}", model_input.get("i"), flush=True)
        return {{"ok": True}}
'''


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # never let selenium-manager fetch a browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: Any, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / name))
    extra = os.environ.get("SWELL_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(extra) / name))


def _wait(driver: Any, check: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; page text:\n{driver.find_element(By.TAG_NAME, 'body').text}")


def _text(driver: Any, css: str) -> str:
    # One script call: the page swaps its live fragments every 2 s, which would stale an element handle.
    return str(driver.execute_script("const el = document.querySelector(arguments[0]); return el ? el.innerText : '';", css))


def _package(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "model.py").write_text(textwrap.dedent(MODEL))
    (root / "config.yaml").write_text(yaml.safe_dump({"model_name": "dash-demo", "runtime": {"predict_concurrency": 1}}))
    return root


def _archive(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


def test_the_dashboard_in_a_browser(tmp_path: Path, browser: Any) -> None:
    with running_server(tmp_path, KEY, "--tick-seconds", "0.2") as env:
        url = env["SWELL_URL"]
        api = httpx.Client(base_url=url, headers={"Authorization": f"Api-Key {KEY}"}, timeout=60)
        pushed = api.post(
            "/v1/models/push", params={"publish": "true"}, content=_archive(_package(tmp_path / "pkg"))
        ).json()
        model_id, deployment_id = pushed["model_id"], pushed["deployment_id"]
        base = f"/v1/models/{model_id}/deployments/{deployment_id}"
        assert api.patch(base + "/autoscaling_settings", json={"autoscaling_window": 10, "scale_down_delay": 10}).status_code == 200
        invoke_key = api.post("/v1/api_keys", json={"type": "invoke", "name": "e2e"}).json()["key"]

        # Sign-in: an invoke key gets a sentence, a workspace key a session.
        browser.get(url + "/")
        browser.find_element(By.ID, "key").send_keys(invoke_key)
        browser.find_element(By.ID, "signin").click()
        _wait(browser, lambda d: "invoke key" in _text(d, "#signin-error"), "the invoke key's message")
        _screenshot(browser, tmp_path, "dashboard-signin.png")
        browser.find_element(By.ID, "key").send_keys(KEY)
        browser.find_element(By.ID, "signin").click()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-deployment="{deployment_id}"]'), "the models page")
        cookie = browser.get_cookie("swell_session")
        assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
        assert KEY not in cookie["value"]
        _screenshot(browser, tmp_path, "dashboard-models.png")

        # The deployment page: a predict wakes it, seen without a reload.
        browser.get(url + f"/ui/models/{model_id}/deployments/{deployment_id}")
        _wait(browser, lambda d: "Scaled to zero" in _text(d, "#live .badge"), "Scaled to zero")
        assert "Async queue" in _text(browser, "#async-queue")
        browser.execute_script("window.notReloaded = true;")
        assert api.post(f"/model/{model_id}/deployment/{deployment_id}/predict", json={"i": 1}).status_code == 200
        _wait(browser, lambda d: _text(d, "#live .badge") == "Active" and _text(d, "#replicas") == "1/1", "Active 1/1")
        assert browser.execute_script("return window.notReloaded === true;")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#events li.event"), "an event in the timeline")
        _wait(browser, lambda d: LOG_LINE in _text(d, "#logs"), "the model's printed line in the log tail")
        _screenshot(browser, tmp_path, "dashboard-deployment.png")

        # A bad max_replica: the server's own message, nothing changed.
        field = browser.find_element(By.ID, "setting-max_replica")
        before = api.get(base + "/autoscaling_settings").json()
        field.clear()
        field.send_keys("100000")
        browser.find_element(By.ID, "apply-settings").click()
        _wait(browser, lambda d: "max_replica" in _text(d, "#settings-result"), "the server's validation message")
        message = _text(browser, "#settings-result")
        assert "422" in message and "must be between" in message, message
        assert api.get(base + "/autoscaling_settings").json() == before
        _screenshot(browser, tmp_path, "dashboard-settings-error.png")

        # A good one: ACCEPTED and applied.
        field.clear()
        field.send_keys("3")
        browser.find_element(By.ID, "apply-settings").click()
        _wait(browser, lambda d: "ACCEPTED" in _text(d, "#settings-result"), "ACCEPTED")
        assert api.get(base + "/autoscaling_settings").json()["max_replica"] == 3
        _screenshot(browser, tmp_path, "dashboard-settings-ok.png")

        # swell advise over the recorded traffic: findings (or none), each with its PATCH body.
        browser.find_element(By.ID, "advise").click()
        _wait(browser, lambda d: (t := _text(d, "#advice")) and "running" not in t, "swell advise's answer", timeout=150)
        assert "error" not in _text(browser, "#advice").lower(), _text(browser, "#advice")
        _screenshot(browser, tmp_path, "dashboard-advise.png")

        # It scales back to zero on its own; the page follows.
        _wait(browser, lambda d: "Scaled to zero" in _text(d, "#live .badge"), "scale to zero", timeout=90)
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#events li[data-kind*="scale"]'), "a scaling event")
        _screenshot(browser, tmp_path, "dashboard-scaled-to-zero.png")

        # One click applies a finding's PATCH body (after the scale to zero: it may raise min_replica).
        applies = browser.find_elements(By.CSS_SELECTOR, "#advice .finding button")
        if applies:
            applies[0].click()
            _wait(browser, lambda d: "(applied)" in _text(d, "#advice .finding pre"), "the finding applied")

        # /docs works from the server's own files.
        browser.get(url + "/docs")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), "Swagger UI")
        _screenshot(browser, tmp_path, "dashboard-docs.png")
        browser.get("about:blank")  # closes the event streams before the server stops
        api.close()
        time.sleep(0.2)
