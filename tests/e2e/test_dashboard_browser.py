"""The dashboard in a real browser: Debian's headless Chromium, driven through chromedriver by selenium.

A real gateway (key mode, admin key) in front of the mock upstream holds two callers' conversations, seeded
with the official SDK. The tests sign in and out, navigate, compare the figures shown with the usage API's,
check that a stored script payload stays text and that a second caller sees none of the first's data, and
save a screenshot of every page (the folder is printed). No browser is downloaded: the tests use
/usr/bin/chromium and /usr/bin/chromedriver, and skip with the reason when they are not installed.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.dashboard_data import PRIVATE_A, SYSTEM_A, TURNS_A, TURNS_B, XSS
from tests.servers import ServerProcess, gateway_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ADMIN_KEY = "admin-browser-secret"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's headless Chromium: apt-get install chromium chromium-driver (.ci/run does)",
)
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    pytest.skip("selenium is not installed (the test extra has it)", allow_module_level=True)


class Site:
    """The running gateway, its callers' keys, the browser and where screenshots go."""

    def __init__(self, server: ServerProcess, keys: dict[str, str], driver: WebDriver, shots: Path) -> None:
        self.server = server
        self.keys = keys
        self.driver = driver
        self.shots = shots

    def open(self, path: str) -> None:
        self.driver.get(self.server.url + path)

    def path(self) -> str:
        return "/" + self.driver.current_url.split("/", 3)[3]

    def shot(self, name: str) -> Path:
        """A screenshot of the whole page (beyond the window), through the DevTools protocol."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        image = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        target = self.shots / f"{name}.png"
        target.write_bytes(base64.b64decode(image["data"]))
        return target

    def sign_in(self, key: str) -> None:
        self.open("/ui/sign-in")
        self.driver.find_element(By.ID, "key").send_keys(key)
        self.driver.find_element(By.ID, "sign-in").click()
        WebDriverWait(self.driver, 20).until(
            lambda d: "/ui/sign-in" not in d.current_url or d.find_elements(By.ID, "sign-in-error")
        )
        assert self.path() == "/ui/overview", self.driver.page_source

    def sign_out(self) -> None:
        self.driver.find_element(By.ID, "sign-out").click()
        WebDriverWait(self.driver, 20).until(lambda d: "/ui/sign-in" in d.current_url)

    def charts_drawn(self) -> None:
        WebDriverWait(self.driver, 20).until(
            lambda d: all(
                f.get_attribute("data-drawn") == "true"
                for f in d.find_elements(By.CSS_SELECTOR, "figure.chart")
            )
        )

    def figure(self, name: str) -> str | None:
        value = self.driver.find_element(By.CSS_SELECTOR, f"#kpi-{name} .value").get_attribute("data-value")
        return str(value) if value is not None else None


def seed(server: ServerProcess, key: str, turns: list[tuple[str, str | None, list[dict[str, Any]]]]) -> None:
    """Send the turns with the official SDK (a failure, FAULT:500, is part of the data)."""
    for conversation, budget, messages in turns:
        headers = {"X-Conversation-Id": conversation}
        if budget is not None:
            headers["X-Max-History-Messages"] = budget
        client = openai.OpenAI(
            base_url=server.url + "/v1", api_key=key, max_retries=0, default_headers=headers
        )
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        except openai.InternalServerError:
            pass
        finally:
            client.close()


def browser(profile: Path) -> WebDriver:
    """Headless Chromium from /usr/bin with a fresh profile; nothing is downloaded."""
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    )


@pytest.fixture(scope="module")
def site(
    upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite+aiosqlite:///{tmp / 'gateway.db'}"
    server = gateway_app(
        upstream.url,
        database_url,
        upstream_api_key="sk-upstream",
        admin_key=ADMIN_KEY,
        history_strategy="sliding",  # the seeded budgets are read as the longest suffix that fits
    ).start()
    try:
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        keys = {}
        for name, budget in (("alpha", 0.5), ("bravo", 2)):
            created = httpx.post(
                f"{server.url}/admin/keys", json={"name": name, "budget_usd": budget}, headers=admin
            )
            keys[name] = created.json()["secret"]
        seed(server, keys["alpha"], TURNS_A)
        seed(server, keys["bravo"], TURNS_B)
        httpx.post(f"{server.url}/admin/keys", json={"name": "retired"}, headers=admin)
        httpx.delete(f"{server.url}/admin/keys/retired", headers=admin)
        shots = tmp / "screenshots"
        shots.mkdir()
        driver = browser(tmp / "chromium-profile")
        try:
            capture = pytestconfig.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled() if capture else _nothing():
                print(f"\ndashboard screenshots: {shots}")
            yield Site(server, keys, driver, shots)
        finally:
            driver.quit()
    finally:
        server.stop()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def no_csp_violations_or_script_errors(site: Site) -> None:
    """The browser's console has no CSP refusal and no uncaught script error."""
    log = site.driver.get_log("browser")  # type: ignore[no-untyped-call]
    errors = [e["message"] for e in log if e["level"] == "SEVERE"]
    assert [m for m in errors if "Content Security Policy" in m or "Refused" in m or "Uncaught" in m] == []


def test_sign_in_navigate_and_sign_out(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.open("/ui")
    assert site.path().startswith("/ui/sign-in")
    site.shot("01-sign-in")
    site.sign_in(site.keys["alpha"])
    assert site.keys["alpha"] not in site.driver.current_url
    site.charts_drawn()
    assert site.driver.find_elements(By.CSS_SELECTOR, "#chart-cost-by-day svg rect.bar")
    assert site.driver.find_elements(By.CSS_SELECTOR, "#chart-tokens-by-day svg text.axis-title")
    # The session cookie is HttpOnly: the page's script cannot read it.
    assert "gateway_ui_session" not in site.driver.execute_script("return document.cookie")
    site.shot("02-overview")
    site.driver.find_element(By.LINK_TEXT, "Conversations").click()
    assert site.path() == "/ui/conversations"
    site.shot("03-conversations")
    site.driver.find_element(By.LINK_TEXT, "support-a").click()
    site.charts_drawn()
    assert site.path() == "/ui/conversations/support-a"
    site.shot("04-conversation")
    site.driver.find_element(By.CSS_SELECTOR, "#chart-cost-by-turn details summary").click()
    site.shot("05-conversation-table")
    no_csp_violations_or_script_errors(site)
    site.sign_out()
    assert [c for c in site.driver.get_cookies() if c["name"] == "gateway_ui_session"] == []
    site.open("/ui/overview")
    assert site.path().startswith("/ui/sign-in")


def test_a_stored_script_payload_renders_as_text(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.sign_in(site.keys["alpha"])
    site.open("/ui/conversations/support-a")
    site.charts_drawn()
    texts = [e.text for e in site.driver.find_elements(By.CSS_SELECTOR, "#transcript .text")]
    assert XSS in texts
    assert site.driver.execute_script("return window.__xss === undefined")
    assert site.driver.find_elements(By.CSS_SELECTOR, "#transcript img") == []
    assert site.driver.find_element(By.ID, "system-prompt").text == SYSTEM_A


def test_the_figures_shown_equal_the_usage_api(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.sign_in(site.keys["alpha"])
    key = {"authorization": f"Bearer {site.keys['alpha']}"}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    api = httpx.get(f"{site.server.url}/v1/usage", params={"since": today}, headers=key).json()
    site.open("/ui/overview?days=7")
    site.charts_drawn()
    assert Decimal(site.figure("cost_usd") or "nan") == Decimal(str(api["cost_usd"]))
    assert Decimal(site.figure("history_cost_usd") or "nan") == Decimal(str(api["history_cost_usd"]))
    assert site.figure("total_tokens") == str(api["total_tokens"])
    assert site.figure("requests") == str(api["requests"])
    # Today's bar in the table behind the token chart is the API's day row.
    by_day = httpx.get(
        f"{site.server.url}/v1/usage", params={"group_by": "day", "since": today}, headers=key
    ).json()["data"]
    (day,) = by_day
    row = site.driver.find_element(By.CSS_SELECTOR, "#chart-tokens-by-day tbody tr:last-child")
    cells = {
        c.get_attribute("data-series"): v.get_attribute("data-value")
        for c, v in zip(
            site.driver.find_elements(By.CSS_SELECTOR, "#chart-tokens-by-day thead th")[1:],
            row.find_elements(By.TAG_NAME, "td"),
            strict=True,
        )
    }
    assert cells["total"] == str(day["total_tokens"]) and cells["history"] == str(day["history_tokens"])
    assert cells["cached"] == str(day["cached_tokens"]) and cells["output"] == str(day["completion_tokens"])
    conversation = httpx.get(f"{site.server.url}/v1/conversations/support-a/usage", headers=key).json()
    site.open("/ui/conversations/support-a")
    assert Decimal(site.figure("cost_usd") or "nan") == Decimal(str(conversation["cost_usd"]))
    assert site.figure("prompt_tokens") == str(conversation["prompt_tokens"])
    assert site.driver.find_element(By.ID, "last-turn").get_attribute("data-sent") == "4"


def test_a_second_caller_sees_none_of_the_first_callers_data(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.sign_in(site.keys["bravo"])
    pages = []
    for path in ("/ui/overview?days=90", "/ui/conversations", "/ui/conversations?sort=cost",
                 "/ui/conversations/support-a", "/ui/keys"):  # fmt: skip
        site.open(path)
        pages.append(site.driver.page_source)
    site.open("/ui/conversations")
    site.shot("06-second-caller-conversations")
    everything = "\n".join(pages)
    for secret in ("support-a</a>", "short-a", PRIVATE_A, SYSTEM_A, "key alpha"):
        assert secret not in everything
    assert "bravo-only" in everything


def test_the_admin_sees_every_caller_and_the_keys_page(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.sign_in(ADMIN_KEY)
    site.driver.find_element(By.LINK_TEXT, "Keys").click()
    assert site.path() == "/ui/keys"
    rows = {
        r.find_element(By.TAG_NAME, "th").text: r.text
        for r in site.driver.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
    }
    assert set(rows) == {"alpha", "bravo", "retired"} and "revoked" in rows["retired"]
    api = httpx.get(f"{site.server.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    spent = {k["name"]: k["spent_usd"] for k in api["data"]}
    shown = site.driver.find_elements(By.CSS_SELECTOR, "#keys tbody tr td.num")
    assert float(shown[0].get_attribute("data-value") or "nan") == spent["alpha"]
    site.shot("07-keys")
    site.open("/ui/conversations")
    text = site.driver.find_element(By.ID, "conversations").text
    assert "support-a" in text and "bravo-only" in text
    site.open("/ui/overview")
    site.charts_drawn()
    site.shot("08-admin-overview")
    no_csp_violations_or_script_errors(site)


def test_pages_fit_a_phone_screen(site: Site) -> None:
    site.driver.delete_all_cookies()
    site.sign_in(site.keys["alpha"])
    site.driver.set_window_size(390, 844)
    try:
        for name, path in (("overview", "/ui/overview"), ("conversation", "/ui/conversations/support-a")):
            site.open(path)
            site.charts_drawn()
            overflow = site.driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{path} scrolls sideways by {overflow}px on a phone"
            site.shot(f"09-phone-{name}")
    finally:
        site.driver.set_window_size(1280, 1000)
