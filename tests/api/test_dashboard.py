"""The dashboard in process: sign-in and its cookie, CSRF and origin checks, security headers, isolation,
escaping, and figures equal to the usage API's (the browser tests: tests/e2e/test_dashboard_browser.py)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select, update

from gateway.app import create_app
from gateway.config import Settings
from gateway.identity import caller_identity
from gateway.mock_upstream.app import create_mock_app
from gateway.store.database import create_engine
from gateway.store.tables import UI_SESSIONS
from gateway.ui import security
from tests.dashboard_data import PRIVATE_A, SYSTEM_A, TURNS_A, TURNS_B, XSS

ADMIN_KEY = "admin-dashboard-secret"
BASE = "http://gateway.test"


class Gateway:
    """The app in process (key mode, admin key set) with two callers' keys."""

    def __init__(self, client: httpx.AsyncClient, app: Any, database_url: str) -> None:
        self.client = client
        self.app = app
        self.database_url = database_url
        self.keys: dict[str, str] = {}

    def browser(self) -> httpx.AsyncClient:
        """A fresh cookie jar on the same app (one browser)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    async def chat(self, key: str, conversation: str, budget: str | None, messages: list[Any]) -> None:
        headers = {"authorization": f"Bearer {key}", "x-conversation-id": conversation}
        if budget is not None:
            headers["x-max-history-messages"] = budget
        body = {"model": "gpt-4o-mini", "messages": messages}
        await self.client.post("/v1/chat/completions", json=body, headers=headers)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    settings = Settings(
        database_url=database_url,
        upstream_url="http://upstream.test/v1",
        upstream_api_key="sk-upstream",
        admin_key=ADMIN_KEY,
        key_cache_seconds=0,
        history_strategy="sliding",  # the budgets below are read as the longest suffix that fits
    )
    app = create_app(settings, transport=httpx.ASGITransport(app=create_mock_app()))
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            gw = Gateway(client, manager.app, database_url)
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            for name in ("alpha", "bravo"):
                created = await client.post(
                    "/admin/keys", json={"name": name, "budget_usd": 1}, headers=admin
                )
                gw.keys[name] = created.json()["secret"]
            for conversation, budget, messages in TURNS_A:
                await gw.chat(gw.keys["alpha"], conversation, budget, messages)
            for conversation, budget, messages in TURNS_B:
                await gw.chat(gw.keys["bravo"], conversation, budget, messages)
            yield gw


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def sign_in(browser: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await browser.get("/ui/sign-in")
    return await browser.post(
        "/ui/sign-in", data={"key": key, "csrf": csrf_of(form)}, headers={"origin": BASE}
    )


def set_cookie_of(response: httpx.Response, name: str) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    return header


async def test_sign_in_sets_an_httponly_strict_expiring_cookie_that_is_not_the_key(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        response = await sign_in(browser, gateway.keys["alpha"])
        assert response.status_code == 303 and response.headers["location"] == "/ui/overview"
        header = set_cookie_of(response, security.SESSION_COOKIE)
        attributes = [part.strip().lower() for part in header.split(";")]
        assert "httponly" in attributes and "samesite=strict" in attributes and "path=/ui" in attributes
        assert any(a.startswith("max-age=") and int(a[8:]) > 0 for a in attributes)
        value = browser.cookies[security.SESSION_COOKIE]
        assert gateway.keys["alpha"] not in header and caller_identity(gateway.keys["alpha"]) not in header
        engine = create_engine(gateway.database_url)
        try:
            async with engine.begin() as connection:
                rows = (await connection.execute(select(UI_SESSIONS))).all()
        finally:
            await engine.dispose()
        assert [r.token_hash for r in rows] == [security.token_hash(value)]  # the hash, never the cookie
        assert rows[0].identity == caller_identity(gateway.keys["alpha"])
        overview = await browser.get("/ui/overview")
        assert overview.status_code == 200 and "key alpha" in overview.text


async def test_every_page_without_a_session_goes_to_sign_in(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        for path in ("/ui", "/ui/overview", "/ui/conversations", "/ui/conversations/support-a", "/ui/keys"):
            response = await browser.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in", path


async def test_sign_in_refuses_a_wrong_key_a_missing_csrf_token_and_another_origin(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        csrf = csrf_of(await browser.get("/ui/sign-in"))
        key = gateway.keys["alpha"]
        wrong = await browser.post(
            "/ui/sign-in", data={"key": "gw-wrong", "csrf": csrf}, headers={"origin": BASE}
        )
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        no_token = await browser.post("/ui/sign-in", data={"key": key}, headers={"origin": BASE})
        assert no_token.status_code == 403
        other = await browser.post(
            "/ui/sign-in", data={"key": key, "csrf": csrf}, headers={"origin": "http://evil.test"}
        )
        assert other.status_code == 403
        cross_site = await browser.post(
            "/ui/sign-in", data={"key": key, "csrf": csrf}, headers={"sec-fetch-site": "cross-site"}
        )
        assert cross_site.status_code == 403
        assert security.SESSION_COOKIE not in browser.cookies
        # A key in the URL is never read: the form is a POST.
        in_url = await browser.get("/ui/sign-in", params={"key": key})
        assert in_url.status_code == 200 and security.SESSION_COOKIE not in browser.cookies
        # Another site's page cannot read the CSRF cookie, so a forged form has another token.
        forged = await browser.post(
            "/ui/sign-in", data={"key": key, "csrf": "x" * 43}, headers={"origin": BASE}
        )
        assert forged.status_code == 403


async def test_pages_and_assets_carry_a_strict_csp_and_no_inline_script_style_or_handlers(
    gateway: Gateway,
) -> None:
    async with gateway.browser() as browser:
        pages = [await browser.get("/ui/sign-in")]
        await sign_in(browser, ADMIN_KEY)
        for path in ("/ui/overview", "/ui/conversations", "/ui/keys", "/ui/conversations/support-a"):
            pages.append(await browser.get(path))
        pages.append(await browser.get("/ui/conversations/bravo-only"))
        for response in pages:
            assert response.status_code == 200, response.url
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "style-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-store"
            html = response.text
            assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], response.url
            assert " style=" not in html and "<style" not in html
            assert re.findall(r"<[^>]+\son[a-z]+\s*=", html) == [], response.url
        for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            asset = await browser.get(f"/ui/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert "innerHTML" not in (await browser.get("/ui/static/dashboard.js")).text
        assert (await browser.get("/ui/static/..%2Fsignin.py")).status_code == 404


async def test_a_stored_script_payload_is_rendered_as_text(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["alpha"])
        page = await browser.get("/ui/conversations/support-a")
        assert XSS not in page.text
        assert (
            "&lt;script&gt;window.__xss = 1&lt;/script&gt;&lt;img src=x onerror=&quot;window.__xss"
            in page.text
        )


async def test_a_caller_sees_none_of_another_callers_data(gateway: Gateway) -> None:
    alpha = caller_identity(gateway.keys["alpha"])
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["bravo"])
        seen = []
        for path in (
            "/ui/overview",
            "/ui/overview?days=90",
            "/ui/conversations",
            "/ui/conversations?q=support",
            "/ui/conversations?sort=cost",
            "/ui/conversations/support-a",
            f"/ui/conversations/support-a?owner={alpha}",
            "/ui/keys",
        ):
            response = await browser.get(path)
            seen.append(response.text)
            assert response.status_code in (200, 404), path
        everything = "\n".join(seen)
        for secret in ("support-a", "short-a", PRIVATE_A, SYSTEM_A, alpha[:12], "alpha"):
            assert secret not in everything
        assert "bravo-only" in everything
        assert (await browser.get("/ui/conversations/support-a")).status_code == 404
        assert (await browser.get("/ui/keys")).status_code == 404


async def test_the_admin_sees_every_caller_and_the_keys(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        await sign_in(browser, ADMIN_KEY)
        listing = (await browser.get("/ui/conversations")).text
        assert "support-a" in listing and "bravo-only" in listing and "alpha (" in listing
        keys = (await browser.get("/ui/keys")).text
        assert "alpha" in keys and "bravo" in keys and "Keys" in keys
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        revoked = await gateway.client.delete("/admin/keys/bravo", headers=admin)
        assert revoked.status_code == 200
        keys = (await browser.get("/ui/keys")).text
        assert 'class="badge revoked"' in keys


def data_values(html: str, element_id: str) -> str | None:
    found = re.search(rf'id="{element_id}".*?class="value" data-value="([^"]*)"', html, re.S)
    return found.group(1) if found else None


async def test_figures_equal_the_usage_api(gateway: Gateway) -> None:
    key = gateway.keys["alpha"]
    auth = {"authorization": f"Bearer {key}"}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    api = (await gateway.client.get("/v1/usage", params={"since": today}, headers=auth)).json()
    conversation = (await gateway.client.get("/v1/conversations/support-a/usage", headers=auth)).json()
    async with gateway.browser() as browser:
        await sign_in(browser, key)
        overview = (await browser.get("/ui/overview?days=7")).text
        assert Decimal(data_values(overview, "kpi-cost_usd") or "nan") == Decimal(str(api["cost_usd"]))
        assert Decimal(data_values(overview, "kpi-history_cost_usd") or "nan") == Decimal(
            str(api["history_cost_usd"])
        )
        assert data_values(overview, "kpi-total_tokens") == str(api["total_tokens"])
        assert data_values(overview, "kpi-requests") == str(api["requests"])
        assert data_values(overview, "kpi-error_rate") is not None  # one FAULT:500 of several calls
        page = (await browser.get("/ui/conversations/support-a")).text
        assert Decimal(data_values(page, "kpi-cost_usd") or "nan") == Decimal(str(conversation["cost_usd"]))
        assert data_values(page, "kpi-prompt_tokens") == str(conversation["prompt_tokens"])
        assert data_values(page, "kpi-history_tokens") == str(conversation["history_tokens"])
        # The last turn had a budget of 4 messages: it sent the tool turn (4) and left the 4 before out.
        assert 'data-sent="4"' in page and 'data-left-out="4"' in page
        assert 'data-status="left-out"' in page and 'data-status="sent"' in page
        assert "weather" in page and "call_rome" in page and SYSTEM_A in page


async def test_sign_out_deletes_the_session_and_the_old_cookie_no_longer_works(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["alpha"])
        cookie = browser.cookies[security.SESSION_COOKIE]
        page = await browser.get("/ui/overview")
        response = await browser.post("/ui/sign-out", data={"csrf": csrf_of(page)}, headers={"origin": BASE})
        assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
        assert "max-age=0" in set_cookie_of(response, security.SESSION_COOKIE).lower()
        assert security.SESSION_COOKIE not in browser.cookies
    async with gateway.browser() as thief:  # the same cookie value, replayed
        thief.cookies.set(security.SESSION_COOKIE, cookie, domain="gateway.test", path="/ui")
        assert (await thief.get("/ui/overview")).status_code == 303


async def test_sign_out_without_the_csrf_token_does_nothing(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["alpha"])
        response = await browser.post("/ui/sign-out", data={}, headers={"origin": BASE})
        assert response.status_code == 303 and response.headers["location"] == "/ui/overview"
        assert (await browser.get("/ui/overview")).status_code == 200


async def test_an_expired_session_or_a_revoked_key_ends_the_session(gateway: Gateway) -> None:
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["alpha"])
        engine = create_engine(gateway.database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(update(UI_SESSIONS).values(expires_at=time.time() - 1))
        finally:
            await engine.dispose()
        assert (await browser.get("/ui/overview")).status_code == 303
    async with gateway.browser() as browser:
        await sign_in(browser, gateway.keys["bravo"])
        assert (await browser.get("/ui/overview")).status_code == 200
        await gateway.client.delete("/admin/keys/bravo", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert (await browser.get("/ui/overview")).status_code == 303


async def test_conversations_list_searches_sorts_and_pages(gateway: Gateway) -> None:
    key = gateway.keys["alpha"]
    auth = {"authorization": f"Bearer {key}"}
    for n in range(26):
        await gateway.client.post("/v1/conversations", json={"id": f"empty-{n:02d}"}, headers=auth)
    async with gateway.browser() as browser:
        await sign_in(browser, key)
        first = (await browser.get("/ui/conversations")).text
        assert "28 conversation(s)" in first and "Page 1 of 2" in first and 'rel="next"' in first
        second = (await browser.get("/ui/conversations?page=2")).text
        assert "Page 2 of 2" in second
        found = (await browser.get("/ui/conversations?q=SUPPORT")).text
        assert "1 conversation(s)" in found and "support-a" in found and "short-a" not in found
        by_cost = (await browser.get("/ui/conversations?sort=cost")).text
        by_length = (await browser.get("/ui/conversations?sort=length")).text
        for text in (by_cost, by_length):
            assert text.index("support-a") < text.index("short-a") < text.index("empty-25")
