"""End-to-end: raw tokens and keys never reach the SQLite file or the logs (contents only when allowed)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.servers import ServerProcess


def _traffic(server: ServerProcess, token: str, marker: str) -> None:
    """Successful, failing and refused calls of every kind, all carrying `token` and `marker`."""
    auth = {"Authorization": f"Bearer {token}"}
    url = server.url + "/v1/chat/completions"
    for stream in (False, True):
        for content in (marker, f"{marker} FAULT:500", f"{marker} FAULT:400"):
            body = {
                "model": "gpt-4o-mini",
                "stream": stream,
                "messages": [{"role": "user", "content": content}],
            }
            httpx.post(url, json=body, headers={**auth, "X-Conversation-Id": "secret-test"}, timeout=30)
    httpx.post(
        url,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5, "x": marker}]},
        headers=auth,
    )
    httpx.post(url, content=b"{" + marker.encode(), headers=auth)
    httpx.post(
        server.url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": marker}, headers=auth
    )
    httpx.get(server.url + "/v1/conversations/secret-test/messages", headers=auth)


def _leaks(texts: dict[str, bytes], needles: list[str]) -> list[tuple[str, str]]:
    return [(name, needle) for name, data in texts.items() for needle in needles if needle.encode() in data]


def test_tokens_and_keys_never_reach_the_database_or_logs(
    start_gateway: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    database_url = f"sqlite+aiosqlite:///{folder / 'gateway.db'}"
    admin_key, upstream_key = f"admin-{secrets.token_hex(8)}", f"sk-upstream-{secrets.token_hex(8)}"
    caller, rejected = f"sk-test-{secrets.token_hex(8)}", f"sk-bad-{secrets.token_hex(8)}"
    marker = f"CONTENT-{secrets.token_hex(8)}"

    passing = start_gateway(database_url, process=True, admin_key=admin_key, log_level="DEBUG")
    _traffic(passing, caller, marker)
    _traffic(passing, rejected, marker)
    created = httpx.post(
        passing.url + "/admin/keys", json={"name": "bot"}, headers={"Authorization": f"Bearer {admin_key}"}
    ).json()
    passing.stop()

    holding = start_gateway(
        database_url, process=True, admin_key=admin_key, upstream_api_key=upstream_key, log_level="DEBUG"
    )
    _traffic(holding, created["secret"], marker)
    _traffic(holding, "gw-not-a-real-key-123456", marker)
    httpx.delete(holding.url + "/admin/keys/bot", headers={"Authorization": f"Bearer {admin_key}"})
    holding.stop()

    needles = [admin_key, upstream_key, caller, rejected, created["secret"], "gw-not-a-real-key-123456"]
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert any(marker.encode() in data for data in files.values())  # contents are stored: the grep works
    assert _leaks(files, needles) == []
    logs = {"pass-through": passing.log().encode(), "gateway-keys": holding.log().encode()}
    assert _leaks(logs, [*needles, marker]) == []


def test_log_content_setting_lets_contents_but_not_secrets_into_debug_logs(
    start_gateway: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    caller, marker = f"sk-test-{secrets.token_hex(8)}", f"CONTENT-{secrets.token_hex(8)}"
    server = start_gateway(
        f"sqlite+aiosqlite:///{tmp_path / 'content.db'}", process=True, log_level="DEBUG", log_content="1"
    )
    _traffic(server, caller, marker)
    server.stop()
    log = server.log()
    assert marker in log  # the database drivers' statement logs, allowed by GATEWAY_LOG_CONTENT
    assert caller not in log
