"""The conversations list (search, sort, pages) and one conversation: transcript, last turn, cost per turn.

A caller only ever reaches its own conversations: every query is scoped to the viewer's identity, and an
`owner` parameter is read only for the admin (a caller's `owner` is ignored). Another caller's conversation
answers the same "not found" page as a missing one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import services
from gateway.identity import CONVERSATION_ID_PATTERN
from gateway.reports import Report, Totals, UsageQuery, usage_fields, usage_object
from gateway.store.browse import SORTS, browse_conversations
from gateway.store.conversations import (
    find_conversations,
    get_conversation,
    list_messages,
    messages_before_turn,
)
from gateway.store.tables import Conversation
from gateway.store.usage import conversation_usage, turn_attempt, usage_groups
from gateway.ui import views
from gateway.ui.html import Child, Markup, el
from gateway.ui.overview import render
from gateway.ui.owners import OwnerNames
from gateway.ui.signin import Viewer, admin_identity, page
from gateway.ui.transcript import message_view, status_in_last_turn, summarized_through
from gateway.ui.views import Series, kpi, link, number_cell
from gateway.views import conversation_object

PAGE_SIZE = 25
TRANSCRIPT_PAGE = 200
SORT_LABELS = {"updated": "last update", "cost": "cost", "length": "length"}
NOT_FOUND = "No conversation with this id is visible to you."


def _page_number(request: Request) -> int | None:
    raw = request.query_params.get("page", "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10**9 else None


def _usage(connection: Connection, owner: str, conversation_id: str, group_by: str | None = None) -> Report:
    query = UsageQuery(owner=owner, conversation_id=conversation_id, current_only=True, group_by=group_by)
    return Report(usage_groups(connection, query), group_by=group_by)


def list_page(
    connection: Connection, viewer: Viewer, admin: str | None, search: str, sort: str, number: int
) -> tuple[list[Conversation], int, dict[tuple[str, str], Mapping[str | None, Totals]], OwnerNames | None]:
    """A unit of work: one page of the list, how many match, the page's usage (one grouped query for the
    whole page) and, for the admin (`admin`: the admin key's identity), the callers' names."""
    offset = (number - 1) * PAGE_SIZE
    rows, total = browse_conversations(
        connection, viewer.owner, search=search, sort=sort, offset=offset, limit=PAGE_SIZE
    )
    owners = OwnerNames.load(connection, admin) if viewer.admin else None
    return rows, total, conversation_usage(connection, rows), owners


def _pager(path: str, params: dict[str, Any], current: int, pages: int) -> Markup:
    previous = link(path, "Previous", {**params, "page": current - 1}, rel="prev") if current > 1 else None
    following = link(path, "Next", {**params, "page": current + 1}, rel="next") if current < pages else None
    where = el("span", f"Page {current} of {pages}")
    return el("nav", previous, where, following, class_="pager", aria_label="Pages")


async def conversation_list(request: Request, viewer: Viewer) -> Response:
    """GET /ui/conversations?q=&sort=updated|cost|length&page=N."""
    svc = services(request)
    search = request.query_params.get("q", "").strip()[:128]
    sort = request.query_params.get("sort", "updated")
    sort = sort if sort in SORTS else "updated"
    number = _page_number(request) or 1
    admin = admin_identity(svc)
    read = functools.partial(list_page, viewer=viewer, admin=admin, search=search, sort=sort, number=number)
    rows, total, by_conversation, owners = await svc.db.run(read)
    usages = [usage_object(by_conversation.get((c.owner, c.id), {})) for c in rows]
    pages = max(1, -(-total // PAGE_SIZE))
    params = {"q": search or None, "sort": sort}
    form = el(
        "form",
        el("label", "Search by id", for_="q"),
        el("input", type="search", name="q", id="q", value=search, maxlength="128"),
        el("label", "Sort by", for_="sort"),
        el(
            "select",
            [el("option", label, value=key, selected=key == sort) for key, label in SORT_LABELS.items()],
            name="sort",
            id="sort",
        ),
        el("button", "Show", type="submit"),
        method="get",
        action="/ui/conversations",
        class_="filters",
    )
    cells = []
    for conversation, usage in zip(rows, usages, strict=True):
        link_params = {"owner": conversation.owner} if viewer.admin else None
        row: list[Child] = [
            el("th", link(f"/ui/conversations/{conversation.id}", conversation.id, link_params), scope="row")
        ]
        if owners is not None:
            row.append(el("td", owners.label(conversation.owner)))
        row += [
            number_cell(conversation.message_count),
            number_cell(usage["cost_usd"]),
            number_cell(usage["history_cost_usd"]),
            number_cell(usage["requests"]),
            el("td", views.utc_time(conversation.updated_at), data_value=str(int(conversation.updated_at))),
        ]
        cells.append(row)
    headers = [
        "Conversation",
        *(["Caller"] if owners else []),
        "Messages",
        "Cost (USD)",
        "History cost (USD)",
        "Requests",
        "Last update",
    ]
    table = (
        views.data_table("conversations", headers, cells)
        if cells
        else el("p", "No conversation matches." if search else "No conversations yet.", class_="empty")
    )
    summary = el("p", f"{total} conversation(s), sorted by {SORT_LABELS[sort]}.", id="conversation-count")
    body = [form, summary, table, _pager("/ui/conversations", params, min(number, pages), pages)]
    return render(viewer, "Conversations", "conversations", body)


# --- one conversation --------------------------------------------------------------------------


def turn_chart(report: Report) -> Markup:
    """Cost per turn, with its replayed-history share; calls with no stored turn last."""
    groups = sorted(report.groups, key=lambda g: (g.key is None, int(g.key or 0)))
    rows = []
    for group in groups:
        f = usage_fields(group.total)
        cost, history = f["cost_usd"], f["history_cost_usd"]
        other = None if cost is None else cost - (history or 0)
        share = None if history is None or not cost else float(history / cost * 100)
        label = f"turn {group.key}" if group.key is not None else "no stored turn"
        tokens = [f["prompt_tokens"], f["history_tokens"], f["requests"]]
        rows.append((label, [history, other, cost, share, *tokens]))
    series = [
        Series("history", "Replayed history"),
        Series("other", "New input and output"),
        Series("total", "Cost", "total"),
        Series("share", "History share", "extra", "%"),
        Series("prompt", "Prompt", "extra", "tokens"),
        Series("history_tokens", "History", "extra", "tokens"),
        Series("requests", "Requests", "extra", "calls"),
    ]
    return views.chart(
        "chart-cost-by-turn",
        "Cost per turn",
        "USD",
        "Turn",
        series,
        rows,
        note="Calls that stored no turn (failed ones) are the last bar.",
    )


def _settings(obj: dict[str, Any]) -> Markup:
    settings = obj.get("settings") or {}
    rows = [
        [el("th", name, scope="row"), el("td", "not set" if v is None else str(v))]
        for name, v in settings.items()
    ]
    metadata = obj.get("metadata") or {}
    rows += [[el("th", f"metadata.{k}", scope="row"), el("td", str(v))] for k, v in metadata.items()]
    return views.data_table("settings", ["Setting", "Value"], rows)


def _summary(obj: dict[str, Any]) -> Child:
    summary = obj.get("summary")
    if not summary:
        return None
    text = summary.get("text") if isinstance(summary, dict) else summary
    through = summary.get("through") if isinstance(summary, dict) else None
    note = f"Covers the first {through} stored message(s)." if through is not None else None
    return el(
        "section",
        el("h2", "Summary"),
        el("p", note, class_="note") if note else None,
        el("div", str(text), class_="text summary"),
        id="summary",
    )


def _pick(
    connection: Connection, viewer: Viewer, owner: str | None, conversation_id: str
) -> Conversation | list[Conversation] | None:
    """The viewer's conversation with this id; for the admin, by `owner`, or the list when ambiguous."""
    if not viewer.admin:
        return get_conversation(connection, viewer.identity, conversation_id)
    if owner:
        return get_conversation(connection, owner[:64], conversation_id)
    found = find_conversations(connection, conversation_id)
    return found[0] if len(found) == 1 else (found or None)


@dataclass(frozen=True)
class Shown:
    """What one conversation's page shows."""

    conversation: Conversation
    usage: dict[str, Any]
    turns: Report
    messages: list[tuple[int, dict[str, Any], float]]
    window: tuple[int, int] | None  # the last turn's history: (first sent seq, stored before it)
    page: tuple[int, int]  # (number, pages) of the transcript


def _show(connection: Connection, conversation: Conversation, requested: int | None) -> Shown:
    usage = usage_object(_usage(connection, conversation.owner, conversation.id).by_model)
    turns = _usage(connection, conversation.owner, conversation.id, group_by="turn")
    pages = max(1, -(-conversation.message_count // TRANSCRIPT_PAGE))
    number = min(requested or pages, pages)
    after = (number - 1) * TRANSCRIPT_PAGE - 1 if number > 1 else None
    messages = list_messages(connection, conversation, limit=TRANSCRIPT_PAGE, after=after)
    window = None
    if conversation.turn_count:
        last = turn_attempt(connection, conversation.owner, conversation.id, conversation.turn_count)
        before = messages_before_turn(connection, conversation, conversation.turn_count)
        if last is not None and last.history_messages is not None and before is not None:
            window = (before - last.history_messages, before)
    return Shown(conversation, usage, turns, messages, window, (number, pages))


def read_conversation_page(
    connection: Connection,
    viewer: Viewer,
    owner: str | None,
    admin: str | None,
    conversation_id: str,
    requested: int | None,
) -> tuple[Shown | list[Conversation] | None, OwnerNames | None]:
    """A unit of work: what the page of this conversation shows (the list of callers using the id when
    the admin must choose; None when the viewer sees none), and the callers' names for the admin."""
    picked = _pick(connection, viewer, owner, conversation_id)
    owners = OwnerNames.load(connection, admin) if viewer.admin else None
    if picked is None or isinstance(picked, list):
        return picked, owners
    return _show(connection, picked, requested), owners


def _choose(conversation_id: str, found: list[Conversation], owners: OwnerNames) -> list[Child]:
    items = [
        el("li", link(f"/ui/conversations/{conversation_id}", owners.label(c.owner), {"owner": c.owner}))
        for c in found
    ]
    return [el("p", "Several callers use this id; pick one:"), el("ul", items)]


async def conversation_page(request: Request, viewer: Viewer) -> Response:
    """GET /ui/conversations/{id}[?owner=&page=]: one conversation."""
    svc = services(request)
    conversation_id = request.path_params["conversation_id"]
    if CONVERSATION_ID_PATTERN.fullmatch(conversation_id) is None:
        return page(views.not_found_page(NOT_FOUND), 404)
    read = functools.partial(
        read_conversation_page,
        viewer=viewer,
        owner=request.query_params.get("owner"),
        admin=admin_identity(svc),
        conversation_id=conversation_id,
        requested=_page_number(request),
    )
    shown, owners = await svc.db.run(read)
    if shown is None:
        return page(views.not_found_page(NOT_FOUND), 404)
    if isinstance(shown, list):
        assert owners is not None
        return render(viewer, conversation_id, "conversations", _choose(conversation_id, shown, owners))
    conversation = shown.conversation
    obj = conversation_object(conversation)
    return render(
        viewer,
        f"Conversation {conversation.id}",
        "conversations",
        _conversation_body(
            viewer,
            conversation,
            obj,
            shown.usage,
            shown.turns,
            shown.messages,
            shown.window,
            owners,
            shown.page,
        ),
    )


def _last_turn(window: tuple[int, int] | None) -> Markup:
    if window is None:
        return el("p", "No stored turn yet.", id="last-turn")
    start, before = window
    return el(
        "p",
        f"The last turn sent {before - start} of the {before} stored message(s) before it as history and "
        f"left out {start}; the messages below are marked.",
        id="last-turn",
        data_sent=str(before - start),
        data_left_out=str(start),
    )


def _conversation_body(
    viewer: Viewer,
    conversation: Conversation,
    obj: dict[str, Any],
    usage: dict[str, Any],
    turns: Report,
    messages: list[tuple[int, dict[str, Any], float]],
    window: tuple[int, int] | None,
    owners: OwnerNames | None,
    paging: tuple[int, int],
) -> list[Child]:
    facts = [
        el("dt", "Created"),
        el("dd", views.utc_time(conversation.created_at)),
        el("dt", "Last update"),
        el("dd", views.utc_time(conversation.updated_at)),
        el("dt", "Stored messages"),
        el("dd", str(conversation.message_count)),
    ]
    if owners is not None:
        facts += [el("dt", "Caller"), el("dd", owners.label(conversation.owner))]
    figures = el(
        "section",
        kpi("cost_usd", "Cost", usage["cost_usd"], "USD"),
        kpi("history_cost_usd", "Replayed history cost", usage["history_cost_usd"], "USD"),
        kpi("saved_usd", "Saved by memory", usage["saved_usd"], "USD") if "saved_usd" in usage else None,
        kpi("requests", "Requests", usage["requests"]),
        kpi("prompt_tokens", "Prompt tokens", usage["prompt_tokens"], "tokens"),
        kpi("history_tokens", "History tokens", usage["history_tokens"], "tokens"),
        kpi("completion_tokens", "Output tokens", usage["completion_tokens"], "tokens"),
        class_="kpis",
    )
    system = obj.get("system_prompt")
    number, pages = paging
    path = f"/ui/conversations/{conversation.id}"
    params = {"owner": conversation.owner} if viewer.admin else {}
    summarized = summarized_through(obj)
    listing = [
        message_view(seq, m, at, status_in_last_turn(seq, window, summarized)) for seq, m, at in messages
    ]
    transcript = el(
        "section",
        el("h2", "Transcript"),
        _last_turn(window),
        el("ol", listing, class_="transcript", id="transcript")
        if messages
        else el("p", "No stored messages.", class_="empty"),
        _pager(path, params, number, pages) if pages > 1 else None,
    )
    return [
        el("dl", facts, class_="facts"),
        figures,
        turn_chart(turns),
        el(
            "section",
            el("h2", "System prompt"),
            el("div", system, class_="text system", id="system-prompt")
            if system
            else el("p", "None.", class_="empty"),
        ),
        _summary(obj),
        el("section", el("h2", "Settings"), _settings(obj)),
        transcript,
    ]
