"""The overview (cost and tokens per day, top conversations, call health) and the admin's keys page.

Every usage figure comes from the usage API's own query and folding (`store.usage.usage_groups`,
`reports.usage_fields` / `usage_object`), so the dashboard shows exactly what `GET /v1/usage` answers.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import services
from gateway.money import usd
from gateway.reports import CallStats, Group, Report, Totals, UsageQuery, usage_fields, usage_object
from gateway.store.keys import list_keys
from gateway.store.usage import call_stats, usage_groups
from gateway.ui import views
from gateway.ui.html import Markup, el
from gateway.ui.owners import OwnerNames
from gateway.ui.signin import Viewer, admin_identity, page
from gateway.ui.views import Series, kpi, link, number_cell

RANGES = (7, 30, 90)
DEFAULT_RANGE = 30
TOP_CONVERSATIONS = 10


def who(viewer: Viewer) -> str:
    """The header's 'signed in as' text."""
    if viewer.admin:
        return "Signed in with the admin key: every caller"
    name = f"key {viewer.key_name}" if viewer.key_name else f"caller {views.short_identity(viewer.identity)}"
    return f"Signed in as {name}"


def render(viewer: Viewer, title: str, current: str, body: Any, *, wide: bool = False) -> Response:
    """A signed-in page as a response."""
    return page(
        views.layout(title, current, body, admin=viewer.admin, who=who(viewer), csrf=viewer.csrf, wide=wide)
    )


def _minus(value: Any, *parts: Any) -> Any:
    """value - parts (unknown parts count 0, never below 0), None when value is unknown: the rest of a bar.

    Never below 0: the gateway's count of the replayed history can exceed the upstream's prompt_tokens a
    little (different tokenizers), and a bar has no negative part.
    """
    if value is None:
        return None
    zero = type(value)(0)
    return max(zero, value - sum((part for part in parts if part is not None), zero))


def _share(part: Decimal | None, whole: Decimal | None) -> float | None:
    if part is None or not whole:
        return None
    return float(part / whole * 100)


def day_range(days: int, now: float) -> list[str]:
    """The last `days` UTC days up to today, oldest first, as YYYY-MM-DD."""
    today = datetime.fromtimestamp(now, UTC).date()
    return [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


def _day_start(day: str) -> float:
    moment = date.fromisoformat(day)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()


def cost_chart(days: list[str], by_day: dict[str | None, dict[str, Any]]) -> Markup:
    """Cost per day, split into replayed history, summaries (once reported) and everything else."""
    has_summary = any("summary_cost_usd" in f for f in by_day.values())
    series = [Series("history", "Replayed history"), Series("other", "New input and output")]
    if has_summary:
        series.insert(1, Series("summary", "Summaries"))
    series.append(Series("total", "Total cost", "total"))
    has_saved = any("saved_usd" in f for f in by_day.values())
    if has_saved:
        series.append(Series("saved", "Saved by memory", "extra"))
    rows = []
    for day in days:
        f = by_day.get(day) or usage_fields(Totals())
        history, summary = f["history_cost_usd"], f.get("summary_cost_usd")
        values = [history, _minus(f["cost_usd"], history, summary), f["cost_usd"]]
        if has_summary:
            values.insert(1, summary)
        if has_saved:
            values.append(f.get("saved_usd"))
        rows.append((day, values))
    return views.chart(
        "chart-cost-by-day",
        "Cost per day",
        "USD",
        "Day (UTC)",
        series,
        rows,
        note="Each bar is the day's cost_usd; the dark part is history_cost_usd, what replaying the "
        "conversation memory cost.",
    )


def token_chart(days: list[str], by_day: dict[str | None, dict[str, Any]]) -> Markup:
    """Tokens per day: new input, replayed history, summaries (once reported), output; cached outlined."""
    has_summary = any("summary_tokens" in f for f in by_day.values())
    series = [Series("new", "New input"), Series("history", "Replayed history")]
    if has_summary:
        series.append(Series("summary", "Summaries"))
    series += [Series("output", "Output"), Series("cached", "Cached input", "overlay")]
    series.append(Series("total", "Total tokens", "total"))
    rows = []
    for day in days:
        f = by_day.get(day) or usage_fields(Totals())
        history, summary, output = f["history_tokens"], f.get("summary_tokens"), f["completion_tokens"]
        values: list[Any] = [_minus(f["total_tokens"], history, summary, output), history]
        if has_summary:
            values.append(summary)
        values += [output, f["cached_tokens"], f["total_tokens"]]
        rows.append((day, values))
    return views.chart(
        "chart-tokens-by-day",
        "Tokens per day",
        "tokens",
        "Day (UTC)",
        series,
        rows,
        note="Input is split into the request's new messages and the replayed history; the outlined part is "
        "what the upstream served from its prompt cache (a part of the input).",
    )


def _conversation_key(key: str) -> tuple[str, str]:
    """(owner, conversation id) of a caller_conversation group key."""
    return key[:64], key[65:]


def top_conversations(groups: list[Group], viewer: Viewer, owners: OwnerNames | None) -> Markup:
    """The most expensive conversations of the range."""
    rows = []
    for group in groups:
        if group.key is None:
            continue
        fields = usage_fields(group.total)
        rows.append((group.key, fields))
    rows.sort(key=lambda r: (r[1]["cost_usd"] is not None, r[1]["cost_usd"] or 0), reverse=True)
    cells = []
    for key, f in rows[:TOP_CONVERSATIONS]:
        owner, conversation_id = _conversation_key(key)
        params = {"owner": owner} if viewer.admin else None
        row = [el("th", link(f"/ui/conversations/{conversation_id}", conversation_id, params), scope="row")]
        if owners is not None:
            row.append(el("td", owners.label(owner)))
        row += [
            number_cell(f["cost_usd"]),
            number_cell(f["history_cost_usd"]),
            number_cell(_share(f["history_cost_usd"], f["cost_usd"]), "%"),
            number_cell(f["requests"]),
            number_cell(f["total_tokens"]),
        ]
        cells.append(row)
    headers = [
        "Conversation",
        *(["Caller"] if owners else []),
        "Cost (USD)",
        "History cost (USD)",
        "History share",
        "Requests",
        "Tokens",
    ]
    if not cells:
        return el("p", "No conversation has recorded calls in this range.", class_="empty")
    return views.data_table("top-conversations", headers, cells)


def _range(request: Request) -> int:
    raw = request.query_params.get("days", "")
    return int(raw) if raw.isdigit() and int(raw) in RANGES else DEFAULT_RANGE


def _ranges(chosen: int, first_day: str) -> Markup:
    links = [
        link("/ui/overview", f"last {n} days", {"days": n}, aria_current="page" if n == chosen else None)
        for n in RANGES
    ]
    return el("p", "Range: ", links, f" (since {first_day}, UTC)", class_="ranges")


def headline(total: dict[str, Any], stats: CallStats) -> Markup:
    """The range's headline figures: cost, history cost, what memory saved, tokens, calls and their health."""
    memory = (
        kpi("saved_usd", "Saved by memory", total["saved_usd"], "USD")
        if "saved_usd" in total
        else kpi(
            "history_share",
            "History share of cost",
            _share(total["history_cost_usd"], total["cost_usd"]),
            "%",
        )
    )
    error_rate = None if stats.error_rate is None else stats.error_rate * 100
    return el(
        "section",
        kpi("cost_usd", "Cost", total["cost_usd"], "USD"),
        kpi("history_cost_usd", "Replayed history cost", total["history_cost_usd"], "USD"),
        memory,
        kpi("total_tokens", "Tokens", total["total_tokens"], "tokens"),
        kpi("requests", "Requests", stats.requests),
        kpi("error_rate", "Error rate", error_rate, "%", note=f"{stats.errors} failed (status 400 and up)"),
        kpi("latency_p50", "Upstream latency p50", stats.latency_p50_ms, "ms"),
        kpi("latency_p95", "Upstream latency p95", stats.latency_p95_ms, "ms"),
        class_="kpis",
        aria_label="Totals of the range",
    )


def _incomplete(total: dict[str, Any]) -> Markup | None:
    gaps = []
    if total["unpriced_requests"]:
        gaps.append(f"{total['unpriced_requests']} call(s) used a model with no known price")
    if total["unreported_usage_requests"]:
        gaps.append(f"{total['unreported_usage_requests']} call(s) reported no usage")
    if not gaps:
        return None
    return el("p", " and ".join(gaps) + ": the costs are a lower bound.", class_="note")


async def overview(request: Request, viewer: Viewer) -> Response:
    """GET /ui/overview?days=7|30|90."""
    svc = services(request)
    chosen = _range(request)
    days = day_range(chosen, time.time())
    since = _day_start(days[0])
    owner = viewer.owner
    admin = admin_identity(svc) if viewer.admin else None

    def unit(
        connection: Connection,
    ) -> tuple[list[Group], list[Group], list[Group], CallStats, OwnerNames | None]:
        return (
            usage_groups(connection, UsageQuery(owner=owner, group_by="day", since=since)),
            usage_groups(connection, UsageQuery(owner=owner, since=since)),
            usage_groups(connection, UsageQuery(owner=owner, group_by="caller_conversation", since=since)),
            call_stats(connection, UsageQuery(owner=owner, since=since)),
            OwnerNames.load(connection, admin) if viewer.admin else None,
        )

    daily, whole, conversations, stats, owners = await svc.db.run(unit)
    total = usage_object(Report(whole).by_model)
    by_day = {group.key: usage_fields(group.total) for group in daily}
    ranges = _ranges(chosen, days[0])
    figures = headline(total, stats)
    incomplete = _incomplete(total)
    top = top_conversations(conversations, viewer, owners)
    body = [
        ranges,
        figures,
        incomplete,
        cost_chart(days, by_day),
        token_chart(days, by_day),
        el("section", el("h2", "Top conversations by cost"), top),
    ]
    return render(viewer, "Overview", "overview", body)


async def keys(request: Request, viewer: Viewer) -> Response:
    """GET /ui/keys (admin only): every key, its spend against its budget, revoked keys marked."""
    if not viewer.admin:
        return page(views.not_found_page("There is no such page."), 404)
    found = await services(request).db.run(list_keys)
    rows = []
    for key in found:
        spent = usd(key.spent_pusd)
        budget = usd(key.budget_pusd) if key.budget_pusd is not None else None
        status = el("span", "revoked", class_="badge revoked") if key.revoked_at is not None else "active"
        meter = (
            el(
                "meter",
                shown_number_pct(spent, budget),
                min="0",
                max=views.raw_number(budget),
                value=views.raw_number(min(spent, budget)),
                title=shown_number_pct(spent, budget),
            )
            if budget
            else None
        )
        rows.append(
            [
                el("th", key.name, scope="row"),
                el("td", views.short_identity(key.identity), class_="mono"),
                el("td", views.utc_time(key.created_at)),
                el("td", status, " ", views.utc_time(key.revoked_at) if key.revoked_at else None),
                number_cell(spent),
                number_cell(budget),
                el("td", meter, " ", shown_number_pct(spent, budget) if budget else "no budget"),
            ]
        )
    headers = ["Key", "Identity", "Created", "Status", "Spent (USD)", "Budget (USD)", "Spent of budget"]
    empty = el("p", "No gateway keys yet.", class_="empty")
    table = views.data_table("keys", headers, rows) if rows else empty
    return render(viewer, "Keys", "keys", table)


def shown_number_pct(spent: Decimal, budget: Decimal | None) -> str:
    """`42.0% of budget` (two significant digits under 0.1%), `budget 0` for a zero budget."""
    if not budget:
        return "budget 0"
    percent = float(spent / budget * 100)
    shown = f"{percent:.2g}" if 0 < percent < 0.1 else f"{percent:.1f}"
    return f"{shown}% of budget"
