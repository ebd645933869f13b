"""The dashboard against odd input and in pass-through mode: never a 500, never another caller's data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from gateway.identity import caller_identity
from gateway.mock_upstream.app import create_mock_app
from gateway.ui import security

BASE = "http://gateway.test"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[object]:
    """The gateway in pass-through mode (callers' own tokens), no admin key."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", upstream_url="http://up.test/v1"
    )
    created = create_app(settings, transport=httpx.ASGITransport(app=create_mock_app()))
    async with LifespanManager(created, startup_timeout=60) as manager:
        yield manager.app


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)  # type: ignore[arg-type]


async def sign_in(browser: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await browser.get("/ui/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await browser.post(
        "/ui/sign-in", data={"key": key, "csrf": csrf.group(1)}, headers={"origin": BASE}
    )


async def chat(browser: httpx.AsyncClient, token: str, conversation: str, text: str) -> None:
    headers = {"authorization": f"Bearer {token}", "x-conversation-id": conversation}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    assert (await browser.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200


async def test_pass_through_callers_sign_in_with_their_token_and_see_only_their_own(app: object) -> None:
    async with client(app) as api:
        await chat(api, "sk-caller-one", "one-only", "one's secret")
        await chat(api, "sk-caller-two", "two-only", "two's secret")
    async with client(app) as browser:
        assert (await sign_in(browser, "sk-caller-one")).status_code == 303
        listing = (await browser.get("/ui/conversations")).text
        assert "one-only" in listing and "two-only" not in listing
        assert (await browser.get("/ui/conversations/two-only")).status_code == 404
        mine = (await browser.get("/ui/conversations/one-only")).text
        assert "one&#x27;s secret" in mine and f"caller {caller_identity('sk-caller-one')[:12]}" in mine
        # No admin key is configured: there is no keys page, and an owner parameter is ignored.
        assert (await browser.get("/ui/keys")).status_code == 404
        owner = caller_identity("sk-caller-two")
        assert "two-only" not in (await browser.get(f"/ui/conversations/two-only?owner={owner}")).text


async def test_a_pass_through_token_signs_in_only_once_it_has_made_a_call(app: object) -> None:
    async with client(app) as browser:
        refused = await sign_in(browser, "sk-never-used")
        assert refused.status_code == 401 and "once it has made a call" in refused.text
        assert security.SESSION_COOKIE not in browser.cookies
        await chat(browser, "sk-never-used", "first", "hello")
        assert (await sign_in(browser, "sk-never-used")).status_code == 303


@pytest.mark.parametrize(
    "path",
    [
        "/ui/overview?days=-1",
        "/ui/overview?days=99999999999999999999",
        "/ui/overview?days=%00",
        "/ui/conversations?page=0",
        "/ui/conversations?page=-3",
        "/ui/conversations?page=99999999999999999999999",
        "/ui/conversations?page=50",
        "/ui/conversations?sort=%27%3Bdrop",
        "/ui/conversations?q=%25%5F%5C",
        "/ui/conversations?q=" + "x" * 5000,
        "/ui/conversations?q=%F0%9F%98%80%ED%A0%80",
        "/ui/conversations/bad%20id",
        "/ui/conversations/" + "a" * 129,
        "/ui/conversations/one-only?page=abc",
        "/ui/conversations/one-only?page=1000000",
        "/ui/conversations/one-only?owner=%00%01",
        "/ui/static/missing.js",
        "/ui/static/%2e%2e%2fsignin.py",
        "/ui/nothing/here",
    ],
)
async def test_odd_queries_and_paths_answer_a_page_never_a_500(app: object, path: str) -> None:
    async with client(app) as browser:
        await chat(browser, "sk-odd", "one-only", "hello")
        await sign_in(browser, "sk-odd")
        response = await browser.get(path)
        assert response.status_code in (200, 404), (path, response.status_code)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"key=%FF%FE&csrf=%80"),
        ("application/x-www-form-urlencoded", b"&&&==&key"),
        ("application/x-www-form-urlencoded", b"key=" + b"k" * 9000),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("application/json", b'{"key": "sk-x"}'),
        ("text/plain", b"\x00\x01"),
    ],
)
async def test_odd_sign_in_bodies_are_refused_without_a_session(
    app: object, content_type: str, body: bytes
) -> None:
    async with client(app) as browser:
        await browser.get("/ui/sign-in")
        response = await browser.post(
            "/ui/sign-in", content=body, headers={"content-type": content_type, "origin": BASE}
        )
        assert 400 <= response.status_code < 500, response.status_code
        assert security.SESSION_COOKIE not in browser.cookies


async def test_a_key_with_characters_no_key_has_is_refused(app: object) -> None:
    async with client(app) as browser:
        response = await sign_in(browser, "sk-\u00e9\u0000bad")
        assert response.status_code == 401 and security.SESSION_COOKIE not in browser.cookies


async def test_a_forged_or_oversized_session_cookie_is_no_session(app: object) -> None:
    async with client(app) as browser:
        for value in ("x" * 43, "y" * 5000, "%00"):
            browser.cookies.set(security.SESSION_COOKIE, value, domain="gateway.test", path="/ui")
            response = await browser.get("/ui/overview")
            assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"


@pytest.mark.parametrize("held", [None, "sk-upstream"], ids=["pass-through", "gateway-keys"])
async def test_a_changed_admin_key_ends_the_admin_sessions(tmp_path: Path, held: str | None) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    cookie = ""
    for admin_key in ("admin-old", "admin-new"):
        settings = Settings(
            database_url=database_url,
            upstream_url="http://up.test/v1",
            admin_key=admin_key,
            upstream_api_key=held,
        )
        created = create_app(settings, transport=httpx.ASGITransport(app=create_mock_app()))
        async with LifespanManager(created, startup_timeout=60) as manager, client(manager.app) as browser:
            if not cookie:
                assert (await sign_in(browser, "admin-old")).status_code == 303
                assert (await browser.get("/ui/keys")).status_code == 200
                cookie = browser.cookies[security.SESSION_COOKIE]
                continue
            browser.cookies.set(security.SESSION_COOKIE, cookie, domain="gateway.test", path="/ui")
            response = await browser.get("/ui/overview")
            assert response.status_code == 303 and response.headers["location"] == "/ui/sign-in"
