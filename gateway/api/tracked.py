"""Tracked upstream objects in gateway-key mode: ownership checks, recording new ids, filtered lists.

See ownership.py for which paths are tracked. Answers that must be read (a creation's id, a list to
filter) are JSON and small, so they are read whole (at most GATEWAY_MAX_RESPONSE_BYTES) before the client
gets them; a new object is recorded before its id reaches the client, so the caller can use it at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx

from gateway.api.common import Services
from gateway.errors import DatabaseUnavailable, UpstreamProtocolError
from gateway.ownership import Access, filter_list, list_ids, made_ids, not_found
from gateway.store.objects import owned_ids, record_objects
from gateway.upstream import read_body, response_headers

log = logging.getLogger("gateway")
# A filtered list page that came out empty is refilled from the next upstream pages, up to this many.
MAX_LIST_PAGES = 10
_SNIFF_LIMIT = 64 * 1024
_FIRST_ID = re.compile(rb'"id"\s*:\s*"([^"\\]{1,200})"')


@dataclass(frozen=True)
class Answer:
    """An upstream answer read whole: the bytes for the client and its headers."""

    body: bytes
    headers: dict[str, str]


async def require_owned(svc: Services, owner: str, named: list[tuple[str, str]]) -> None:
    """404 (as for a missing object) unless `owner` created every named id; `named` is (param, id)."""
    if not named:
        return
    owned = await svc.db.run(
        functools.partial(owned_ids, owner=owner, ids=[object_id for _, object_id in named])
    )
    for param, object_id in named:
        if object_id not in owned:
            raise not_found(object_id, param)


async def record(svc: Services, owner: str, kind: str, ids: list[str]) -> None:
    """Record new ids as `owner`'s (ids already recorded keep their owner)."""
    if not ids:
        return
    await svc.db.run(functools.partial(record_objects, owner=owner, kind=kind, ids=ids, now=time.time()))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


async def answer(
    svc: Services,
    owner: str,
    access: Access,
    method: str,
    url: httpx.URL,
    headers: Mapping[str, str],
    upstream: httpx.Response,
) -> Answer | None:
    """Read a successful JSON answer to a tracked call: record what it created, filter a list.

    None when the answer is not JSON (a file's content, a stream): the caller relays it as it comes.
    """
    if "json" not in upstream.headers.get("content-type", "").lower():
        return None
    try:
        body = await read_body(upstream, svc.settings.max_response_bytes)
    finally:
        with contextlib.suppress(httpx.HTTPError, OSError):
            await upstream.aclose()
    out_headers = response_headers(upstream)
    parsed = _json(body)
    if access.action == "list" and method == "GET":
        if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
            raise UpstreamProtocolError("The upstream answered a list request with something else.")
        page = await _own_page(svc, owner, url, headers, parsed)
        return Answer(json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode(), out_headers)
    ids = made_ids(parsed, include_own_id=access.action == "create" or method == "POST")
    await record(svc, owner, access.kind, ids)
    return Answer(body, out_headers)


async def _own_page(
    svc: Services, owner: str, url: httpx.URL, headers: Mapping[str, str], page: dict[str, Any]
) -> dict[str, Any]:
    """The caller's items of an upstream list page; an empty result is refilled from the next pages."""
    query = dict(parse_qsl(url.query.decode("ascii", "replace"), keep_blank_values=True))
    for _ in range(MAX_LIST_PAGES):
        ids = list_ids(page)
        owned = await svc.db.run(functools.partial(owned_ids, owner=owner, ids=ids))
        mine = filter_list(page, owned)
        # A listed batch or job of the caller's may name output files made since: they are the caller's too.
        derived = [i for item in mine["data"] for i in made_ids(item, include_own_id=False)]
        await record(svc, owner, "file", derived)
        if mine["data"] or page.get("has_more") is not True or not ids or "before" in query:
            return mine
        query["after"] = ids[-1]
        page = await _fetch_page(svc, url.copy_with(query=urlencode(query).encode()), headers)
    return mine


async def _fetch_page(svc: Services, url: httpx.URL, headers: Mapping[str, str]) -> dict[str, Any]:
    response = await svc.upstream.open("GET", url, headers, None)
    try:
        body = await read_body(response, svc.settings.max_response_bytes)
    finally:
        with contextlib.suppress(httpx.HTTPError, OSError):
            await response.aclose()
    page = _json(body)
    if response.status_code != 200 or not isinstance(page, dict) or not isinstance(page.get("data"), list):
        status = response.status_code
        raise UpstreamProtocolError(f"The upstream failed to give a list's next page ({status}).")
    return page


class StreamIds:
    """Finds the id of the object a streamed creation makes (its first `"id"`) and records it at once."""

    def __init__(self, svc: Services, owner: str, kind: str) -> None:
        self.svc = svc
        self.owner = owner
        self.kind = kind
        self._seen = b""
        self.done = False

    async def feed(self, chunk: bytes) -> None:
        """Look for the id in the stream's first bytes; record it before the chunk goes on."""
        if self.done:
            return
        self._seen += chunk
        match = _FIRST_ID.search(self._seen)
        if match is None and len(self._seen) < _SNIFF_LIMIT:
            return
        self.done = True
        self._seen = b""
        if match is not None:
            try:
                await record(self.svc, self.owner, self.kind, [match.group(1).decode("utf-8", "replace")])
            except DatabaseUnavailable as exc:  # the stream goes on; the object stays unreachable through us
                log.warning("could not record a streamed %s: %s", self.kind, exc)
