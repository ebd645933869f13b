"""The dashboard's building blocks: the page layout, figures, tables and charts (as tables plus a legend).

Every chart is a table of its numbers (shown on request) that `dashboard.js` draws as SVG; so the chart and
its table can never disagree, and without script the numbers are still there. Numbers keep the exact text the
usage API gives them in a `data-value` attribute (exact decimal USD, whole tokens).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from gateway.money import usd_text
from gateway.ui.html import Child, Markup, document, el

STYLESHEET = "/ui/static/dashboard.css"
SCRIPT = "/ui/static/dashboard.js"
Number = Decimal | int | float | None


def raw_number(value: Number) -> str | None:
    """The exact text of a figure (as the API's JSON has it), None when unknown."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return usd_text(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def shown_number(value: Number, unit: str = "") -> str:
    """A figure for people: counts and USD exactly as the API writes them, percentages and ms rounded."""
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{float(value):.1f}%"
    if unit == "ms":
        return f"{float(value):,.0f} ms"
    if isinstance(value, Decimal):
        return usd_text(value)
    if isinstance(value, int):
        return str(value)  # as the API writes it (no separators), so that it can be found as it is
    return f"{value:.2f}"


def number_cell(value: Number, unit: str = "", tag: str = "td") -> Markup:
    """A table cell holding a figure, with its exact value in `data-value`."""
    return el(tag, shown_number(value, unit), class_="num", data_value=raw_number(value))


def utc_time(seconds: float | None) -> str:
    """Unix seconds as `YYYY-MM-DD HH:MM UTC`."""
    if seconds is None:
        return "n/a"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def link(path: str, text: Child, params: dict[str, Any] | None = None, **attrs: Any) -> Markup:
    """A link to a dashboard path with query parameters (values URL-encoded, then HTML-escaped)."""
    query = {k: v for k, v in (params or {}).items() if v is not None}
    href = path + ("?" + urlencode(query) if query else "")
    return el("a", text, href=href, **attrs)


def short_identity(identity: str) -> str:
    """The first 12 hex digits of an identity (what the CLI's --owner prefix accepts)."""
    return identity[:12]


# --- layout ------------------------------------------------------------------------------------

NAV = (("overview", "/ui/overview", "Overview"), ("conversations", "/ui/conversations", "Conversations"))


def _head(title: str) -> Markup:
    return el(
        "head",
        el("meta", charset="utf-8"),
        el("meta", name="viewport", content="width=device-width, initial-scale=1"),
        el("meta", name="referrer", content="same-origin"),
        el("title", f"{title} · gateway"),
        el("link", rel="stylesheet", href=STYLESHEET),
        el("script", src=SCRIPT, defer=True),
    )


def layout(
    title: str, current: str, body: Child, *, admin: bool, who: str, csrf: str, wide: bool = False
) -> bytes:
    """A signed-in page: the header with navigation and sign-out, then `body`."""
    items = [*NAV, ("keys", "/ui/keys", "Keys")] if admin else list(NAV)
    nav = el(
        "nav",
        [
            el("a", label, href=href, aria_current="page" if key == current else None)
            for key, href, label in items
        ],
        aria_label="Dashboard",
    )
    sign_out = el(
        "form",
        el("input", type="hidden", name="csrf", value=csrf),
        el("button", "Sign out", type="submit", id="sign-out"),
        method="post",
        action="/ui/sign-out",
        class_="sign-out",
    )
    header = el(
        "header",
        el("a", "gateway", href="/ui/overview", class_="brand"),
        nav,
        el("div", el("span", who, id="who", class_="who"), sign_out, class_="account"),
        class_="top",
    )
    main = el("main", el("h1", title), body, class_="wide" if wide else None)
    return document(el("html", _head(title), el("body", header, main), lang="en"))


def sign_in_page(csrf: str, error: str | None) -> bytes:
    """The sign-in form: the key goes in a POST body, never a URL."""
    form = el(
        "form",
        el("label", "API key", for_="key"),
        el(
            "input",
            type="password",
            name="key",
            id="key",
            autocomplete="off",
            required=True,
            spellcheck="false",
        ),
        el("input", type="hidden", name="csrf", value=csrf),
        el("button", "Sign in", type="submit", id="sign-in"),
        el("p", error, class_="error", role="alert", id="sign-in-error") if error else None,
        el(
            "p",
            "A caller's key shows that caller's conversations; the admin key (GATEWAY_ADMIN_KEY) shows "
            "every caller's and the keys. The key is checked and then forgotten: the session cookie holds "
            "a random value, not the key.",
            class_="hint",
        ),
        method="post",
        action="/ui/sign-in",
        class_="sign-in",
    )
    main = el("main", el("h1", "Sign in to the gateway"), form, class_="narrow")
    return document(el("html", _head("Sign in"), el("body", main), lang="en"))


def not_found_page(message: str) -> bytes:
    """A plain page for a dashboard path with nothing to show (no detail about other callers)."""
    main = el("main", el("h1", "Not found"), el("p", message), el("p", el("a", "Back", href="/ui/overview")))
    return document(el("html", _head("Not found"), el("body", main), lang="en"))


# --- figures -----------------------------------------------------------------------------------


def kpi(name: str, label: str, value: Number, unit: str = "", note: str | None = None) -> Markup:
    """One headline figure (id `kpi-<name>`, exact value in `data-value`)."""
    return el(
        "div",
        el("span", label, class_="label"),
        el("span", shown_number(value, unit), class_="value", data_value=raw_number(value)),
        el("span", unit if unit not in ("%", "ms") else "", class_="unit"),
        el("span", note, class_="note") if note else None,
        class_="kpi",
        id=f"kpi-{name}",
    )


def data_table(
    table_id: str, headers: Sequence[Child], rows: Iterable[Sequence[Child]], caption: str | None = None
) -> Markup:
    """A plain table (rows already rendered cells)."""
    head = el("thead", el("tr", [el("th", h, scope="col") for h in headers]))
    body = el("tbody", [el("tr", row) for row in rows])
    return el(
        "div",
        el("table", el("caption", caption) if caption else None, head, body, id=table_id, class_="data"),
        class_="table-wrap",
    )


@dataclass(frozen=True)
class Series:
    """One column of a chart: `stack` (a bar segment), `overlay` (a part of the bar, outlined) or `total`."""

    key: str
    label: str
    role: str = "stack"  # also "extra": a column of the table that is not drawn
    unit: str | None = None  # when not the chart's unit


def chart(
    chart_id: str,
    title: str,
    unit: str,
    x_label: str,
    series: Sequence[Series],
    rows: Sequence[tuple[str, Sequence[Number]]],
    note: str | None = None,
) -> Markup:
    """A chart figure: title, drawing area, legend and the table of its numbers (the chart's source)."""
    head = el(
        "tr",
        el("th", x_label, scope="col"),
        [
            el("th", f"{s.label} ({s.unit or unit})", scope="col", data_series=s.key, data_role=s.role)
            for s in series
        ],
    )
    body = el(
        "tbody",
        [el("tr", el("th", label, scope="row"), [number_cell(v) for v in values]) for label, values in rows],
    )
    legend = el(
        "ul",
        [
            el("li", el("span", class_=f"swatch s-{s.key} r-{s.role}"), s.label)
            for s in series
            if s.role in ("stack", "overlay")
        ],
        class_="legend",
    )
    table = el("table", el("caption", f"{title} ({unit})"), el("thead", head), body, class_="data")
    return el(
        "figure",
        el("figcaption", el("h2", title), el("p", note, class_="note") if note else None),
        el("div", class_="chart-area", role="img", aria_label=f"{title}, in {unit}"),
        legend,
        el(
            "details",
            el("summary", "Show the numbers as a table"),
            el("div", table, class_="table-wrap"),
            class_="numbers",
        ),
        class_="chart",
        id=chart_id,
        data_unit=unit,
        data_empty="No data in this range." if not rows else None,
    )
