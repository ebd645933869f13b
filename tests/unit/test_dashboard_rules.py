"""Pure rules of the dashboard: escaping, the same-origin and CSRF checks, nearest-rank percentiles."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from gateway.reports import CallStats, rank_index
from gateway.ui import security
from gateway.ui.html import Markup, el, render
from gateway.ui.transcript import status_in_last_turn, summarized_through


def test_text_and_attribute_values_are_escaped_and_markup_is_kept() -> None:
    payload = '<img src=x onerror="alert(1)">&'
    html = el("p", payload, title=payload, data_x=1, hidden=True, class_="c", missing=None)
    assert html == (
        '<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" data-x="1" hidden class="c">'
        "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;</p>"
    )
    assert el("div", el("b", "x"), None, ["a", Markup("<i>ok</i>")]) == "<div><b>x</b>a<i>ok</i></div>"
    assert el("input", value="</script>") == '<input value="&lt;/script&gt;">'
    assert render("'") == "&#x27;"


def _request(headers: dict[str, str], cookies: str = "") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if cookies:
        raw.append((b"cookie", cookies.encode()))
    return Request(
        {"type": "http", "method": "POST", "path": "/ui/sign-in", "headers": raw, "query_string": b""}
    )


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"host": "gw:8000", "sec-fetch-site": "same-origin", "origin": "null"}, True),
        ({"host": "gw:8000", "sec-fetch-site": "cross-site", "origin": "http://gw:8000"}, False),
        ({"host": "gw:8000", "sec-fetch-site": "same-site"}, False),
        ({"host": "gw:8000", "origin": "http://gw:8000"}, True),
        ({"host": "gw:8000", "origin": "https://gw:8000"}, True),
        ({"host": "gw:8000", "origin": "http://evil.test"}, False),
        ({"host": "gw:8000", "origin": "http://gw:8000.evil.test"}, False),
        ({"host": "gw:8000", "origin": "null"}, False),
        ({"host": "gw:8000"}, True),  # not a browser: the CSRF token still decides
    ],
)
def test_same_origin(headers: dict[str, str], allowed: bool) -> None:
    assert security.same_origin(_request(headers)) is allowed


def test_csrf_needs_the_cookie_and_the_same_token() -> None:
    token = security.new_token()
    with_cookie = _request({}, f"{security.CSRF_COOKIE}={token}")
    assert security.csrf_matches(with_cookie, token)
    assert not security.csrf_matches(with_cookie, token[:-1] + "x")
    assert not security.csrf_matches(with_cookie, None)
    assert not security.csrf_matches(_request({}), token)
    assert not security.csrf_matches(_request({}, f"{security.CSRF_COOKIE}={'a' * 200}"), "a" * 200)


def test_the_stored_session_hash_is_not_the_cookie() -> None:
    token = security.new_token()
    assert len(token) >= 43 and security.token_hash(token) != token and len(security.token_hash(token)) == 64


@pytest.mark.parametrize(
    ("count", "percent", "index"),
    [(1, 50, 0), (1, 95, 0), (2, 50, 0), (2, 95, 1), (4, 50, 1), (10, 95, 9), (20, 95, 18), (100, 50, 49)],
)
def test_nearest_rank_percentile_positions(count: int, percent: int, index: int) -> None:
    assert rank_index(count, percent) == index


def test_error_rate() -> None:
    assert CallStats(4, 1, 1.0, 2.0).error_rate == 0.25
    assert CallStats(0, 0, None, None).error_rate is None


def test_how_the_last_turn_used_each_message() -> None:
    window = (4, 8)  # the last turn's first message is #8; it sent #4-#7 as history
    assert [status_in_last_turn(seq, window)[0] for seq in (0, 3, 4, 7, 8, 9)] == [  # type: ignore[index]
        "left-out", "left-out", "sent", "sent", "new", "new"
    ]  # fmt: skip
    assert status_in_last_turn(1, window, summarized=2) == (
        "left-out",
        "left out of the last turn, in the summary",
    )
    assert status_in_last_turn(3, window, summarized=2) == ("left-out", "left out of the last turn")
    assert status_in_last_turn(3, None) is None
    assert summarized_through({"summary": {"text": "s", "through": 6}}) == 6
    assert summarized_through({"summary": None}) == summarized_through({}) == 0
