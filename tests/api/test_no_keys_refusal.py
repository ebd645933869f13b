"""Gateway-key mode with no key created yet: every refusal says how to create one, with or without a key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from tests.inprocess import InProcess, inprocess_gateway

HOW = ("gateway keys create NAME", "POST /admin/keys")


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The gateway holding the upstream key, with an empty key table."""
    async with inprocess_gateway(
        tmp_path, upstream_api_key="sk-upstream-held", admin_key="admin-secret"
    ) as running:
        yield running


async def test_the_sdk_sees_how_to_create_a_key(gw: InProcess) -> None:
    async with gw.sdk("sk-some-caller", "conv-1") as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    assert raised.value.status_code == 401
    assert all(text in raised.value.message for text in HOW), raised.value.message
    assert gw.upstream_bodies() == []


@pytest.mark.parametrize("authorization", [None, "", "Bearer ", "Basic abc"])
async def test_a_request_without_a_key_is_told_how_to_create_one(
    gw: InProcess, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with gw.http_client() as http:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/usage")):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            response = await http.request(
                method, path, headers=headers, json=body if method == "POST" else None
            )
            assert response.status_code == 401, response.text
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert "You didn't provide an API key" in error["message"]
            assert all(text in error["message"] for text in HOW), error["message"]


async def test_once_a_key_exists_a_missing_key_is_the_plain_refusal(gw: InProcess) -> None:
    async with gw.http_client() as http:
        created = await http.post(
            "/admin/keys", json={"name": "bot"}, headers={"Authorization": "Bearer admin-secret"}
        )
        assert created.status_code == 200, created.text
        response = await http.get("/v1/models")
    assert response.status_code == 401
    assert "gateway keys create" not in response.json()["error"]["message"]
