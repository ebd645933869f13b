"""Usage reports, pure: what to report, folding request-log sums into usage objects, rendering them.

Money is summed as integer picodollars (1e-12 USD) and shown as an exact decimal number of USD. A
token or cost figure is null when a group has requests but none of them reported it (no usage, or
no price): never a made-up 0. `unpriced_requests` counts calls that reported usage for a model with
no known price; `unreported_usage_requests` counts calls whose upstream reported no usage at all;
`estimated_requests` counts calls whose tokens are the gateway's own estimate (a stream that ended
without usage), which the sums include.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from gateway.errors import InvalidRequest
from gateway.money import usd, usd_text
from gateway.views import render_json

GROUP_BY = ("conversation", "model", "day", "caller")  # caller: the identity (useful with scope=all)
FORMATS = ("table", "json", "csv")
USAGE_FIELDS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "history_tokens",
    "cost_usd",
    "history_cost_usd",
    "unpriced_requests",
    "unreported_usage_requests",
    "cache_write_tokens",
    "summary_tokens",
    "summary_cost_usd",
    "full_replay_cost_usd",
    "saved_usd",
    "estimated_requests",
)
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class UsageQuery:
    """Which request-log rows to report and how to group them."""

    owner: str | None = None  # None: every caller (the operator's view)
    conversation_id: str | None = None
    conversation_ids: tuple[str, ...] | None = None  # several conversations at once (a page of a list)
    current_only: bool = False  # with conversation id(s): skip rows of a deleted earlier conversation
    group_by: str | None = None
    since: float | None = None  # Unix seconds, inclusive
    until: float | None = None  # Unix seconds, exclusive


@dataclass(frozen=True)
class Totals:
    """Sums over request-log rows; token sums cover only the rows that reported usage."""

    requests: int = 0
    reported: int = 0  # rows with usage
    priced: int = 0  # rows with a known cost
    unpriced: int = 0  # rows with usage but no known price
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    history_tokens: int = 0
    cost_pusd: int = 0
    history_priced: int = 0  # rows with a known history cost
    history_cost_pusd: int = 0
    cache_write_tokens: int = 0
    summary_requests: int = 0  # summary calls (the gateway's own, for `summarize`)
    summary_tokens: int = 0  # prompt + completion tokens of summary calls
    summary_priced: int = 0  # summary calls with a known cost
    summary_cost_pusd: int = 0
    replay_priced: int = 0  # rows with a known full-replay cost
    full_replay_pusd: int = 0
    estimated: int = 0  # rows whose usage is the gateway's estimate

    def __add__(self, other: Totals) -> Totals:
        """Field-wise sum."""
        return Totals(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )


@dataclass(frozen=True)
class Group:
    """One report row: a key (conversation id, model, day or None) and its totals per model."""

    key: str | None
    by_model: Mapping[str | None, Totals]

    @property
    def total(self) -> Totals:
        """The group's totals over all its models."""
        return sum(self.by_model.values(), Totals())


@dataclass(frozen=True)
class Report:
    """A usage report: its groups (one group, keyed None, when not grouped)."""

    groups: list[Group]
    group_by: str | None = None
    conversation_id: str | None = None

    @property
    def by_model(self) -> dict[str | None, Totals]:
        """Totals per model over every group."""
        merged: dict[str | None, Totals] = {}
        for group in self.groups:
            for model, totals in group.by_model.items():
                merged[model] = merged.get(model, Totals()) + totals
        return merged


def _none_last(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


def fold(rows: Iterable[tuple[str | None, str | None, Totals]]) -> list[Group]:
    """Group (key, model, totals) rows by key, sorted by key (None last)."""
    grouped: dict[str | None, dict[str | None, Totals]] = {}
    for key, model, totals in rows:
        models = grouped.setdefault(key, {})
        models[model] = models.get(model, Totals()) + totals
    return [Group(key, grouped[key]) for key in sorted(grouped, key=_none_last)]


def day_key(day_number: int) -> str:
    """The YYYY-MM-DD (UTC) of a day number counted from 1970-01-01."""
    return (_EPOCH + timedelta(days=day_number)).isoformat()


def usage_fields(totals: Totals) -> dict[str, Any]:
    """The usage fields of some totals (without by_model), nulls where nothing was reported."""
    empty = totals.requests == 0

    def tokens(value: int) -> int | None:
        return value if empty or totals.reported else None

    cost = usd(totals.cost_pusd) if empty or totals.priced else None
    replay = usd(totals.full_replay_pusd) if empty or totals.replay_priced else None
    # Saved is only stated when every priced figure is known: an unpriced call would make it a guess.
    complete = totals.unpriced == 0 and cost is not None and replay is not None
    return {
        "requests": totals.requests,
        "prompt_tokens": tokens(totals.prompt_tokens),
        "completion_tokens": tokens(totals.completion_tokens),
        "cached_tokens": tokens(totals.cached_tokens),
        "reasoning_tokens": tokens(totals.reasoning_tokens),
        "total_tokens": tokens(totals.prompt_tokens + totals.completion_tokens),
        "history_tokens": tokens(totals.history_tokens),
        "cost_usd": cost,
        "history_cost_usd": usd(totals.history_cost_pusd) if empty or totals.history_priced else None,
        "unpriced_requests": totals.unpriced,
        "unreported_usage_requests": totals.requests - totals.reported,
        "cache_write_tokens": tokens(totals.cache_write_tokens),
        "summary_tokens": tokens(totals.summary_tokens),
        "summary_cost_usd": usd(totals.summary_cost_pusd)
        if totals.summary_requests == 0 or totals.summary_priced
        else None,
        "full_replay_cost_usd": replay,
        "saved_usd": replay - cost if complete and replay is not None and cost is not None else None,
        "estimated_requests": totals.estimated,
    }


def usage_object(by_model: Mapping[str | None, Totals]) -> dict[str, Any]:
    """The usage object: the totals' fields and `by_model`, sorted by model (None last)."""
    total = sum(by_model.values(), Totals())
    models = sorted(by_model, key=_none_last)
    return {
        **usage_fields(total),
        "by_model": [{"model": model, **usage_fields(by_model[model])} for model in models],
    }


def report_object(report: Report) -> dict[str, Any]:
    """The JSON object of a report: a list of keyed usage objects; for one conversation, its usage object
    plus `conversation_id`. Ungrouped, both shapes at once: the list (one row keyed `total`) and, beside
    `object`/`data`, the totals' own fields, so clients reading either the list or the usage object work."""
    if report.group_by is not None:
        data = [{"key": group.key, **usage_object(group.by_model)} for group in report.groups]
        return {"object": "list", "data": data}
    usage = usage_object(report.by_model)
    if report.conversation_id is not None:
        return {"conversation_id": report.conversation_id, **usage}
    return {"object": "list", "data": [{"key": "total", **usage}], **usage}


@dataclass(frozen=True)
class CallStats:
    """How the calls went: how many, how many failed (status 400 and up), upstream latency percentiles."""

    requests: int
    errors: int
    latency_p50_ms: float | None  # None: no calls
    latency_p95_ms: float | None

    @property
    def error_rate(self) -> float | None:
        """The share of failed calls (0 to 1), None without calls."""
        return self.errors / self.requests if self.requests else None


def rank_index(count: int, percent: int) -> int:
    """The 0-based position of the `percent`th percentile in `count` sorted values (nearest rank)."""
    return max(0, -(-count * percent // 100) - 1)


# --- parsing what to report --------------------------------------------------------------------


def parse_time(value: str, name: str, *, end: bool = False) -> float | None:
    """An ISO 8601 date or time as Unix seconds; naive times are UTC. None: no bound.

    A date is the start of that UTC day, or with `end`, the start of the next one (so that
    `until=2024-05-31` includes May 31). Raises InvalidRequest (param `name`) when unreadable.
    """
    text = value.strip()
    try:
        day: date | None = date.fromisoformat(text)
    except ValueError:
        day = None
    try:
        if day is not None:
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return (moment + timedelta(days=1) if end else moment).timestamp()
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except OverflowError:
        return None  # past 9999-12-31: no upper bound
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{name}': expected an ISO 8601 date (2024-05-01) or time "
            f"(2024-05-01T12:00:00Z), got {value!r}.",
            param=name,
            code="invalid_value",
        ) from None


def _choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise InvalidRequest(
            f"Invalid '{name}': expected one of {', '.join(allowed)}, got {value!r}.",
            param=name,
            code="invalid_value",
        )
    return value


def parse_report_params(
    params: Mapping[str, str], owner: str | None, formats: tuple[str, ...] = ("json", "csv")
) -> tuple[UsageQuery, str]:
    """The query and the format (default json) a report's parameters ask for; InvalidRequest if bad."""
    group_by = _choice(params, "group_by", GROUP_BY)
    fmt = _choice(params, "format", formats) or "json"
    since = parse_time(params["since"], "since") if "since" in params else None
    until = parse_time(params["until"], "until", end=True) if "until" in params else None
    if since is not None and until is not None and until <= since:
        raise InvalidRequest("'until' must be later than 'since'.", param="until", code="invalid_value")
    return UsageQuery(owner=owner, group_by=group_by, since=since, until=until), fmt


# --- rendering ---------------------------------------------------------------------------------


def _text(value: Any, unknown: str) -> str:
    if value is None:
        return unknown
    return usd_text(value) if isinstance(value, Decimal) else str(value)


def _cell(value: Any) -> str:
    text = _text(value, "")
    # A cell starting like a formula would run in a spreadsheet (CSV injection): make it text. `;` too:
    # spreadsheets in locales that split on `;` would start a new cell there.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", ";") else text


def _rows(report: Report) -> list[tuple[str | None, dict[str, Any]]]:
    """(key, usage fields) per row of the CSV and the table."""
    if report.group_by is not None:
        return [(group.key, usage_fields(group.total)) for group in report.groups]
    key = report.conversation_id if report.conversation_id is not None else "total"
    return [(key, usage_fields(sum(report.by_model.values(), Totals())))]


def render_csv(report: Report) -> str:
    """CSV with a header row (`key` and the usage fields); an unknown figure is an empty cell."""
    lines = [_csv_line(["key", *USAGE_FIELDS])]
    for key, fields in _rows(report):
        lines.append(_csv_line([_cell(key), *(_cell(fields[name]) for name in USAGE_FIELDS)]))
    return "".join(lines)


def _csv_line(cells: list[str]) -> str:
    """One CSV record (RFC 4180), a cell quoted when it holds `,`, `"`, CR, LF, or `;`.

    The `;` is quoted too so that spreadsheets in locales that split on `;` keep the cell whole
    (`x;=1+1` must not become a cell `=1+1`).
    """
    quoted = ('"' + cell.replace('"', '""') + '"' if _NEEDS_QUOTES.search(cell) else cell for cell in cells)
    return ",".join(quoted) + "\r\n"


_NEEDS_QUOTES = re.compile('[,";\r\n]')


_TABLE_COLUMNS = (
    ("REQUESTS", "requests"),
    ("PROMPT", "prompt_tokens"),
    ("COMPLETION", "completion_tokens"),
    ("CACHED", "cached_tokens"),
    ("REASONING", "reasoning_tokens"),
    ("TOTAL", "total_tokens"),
    ("HISTORY", "history_tokens"),
    ("COST_USD", "cost_usd"),
    ("HISTORY_USD", "history_cost_usd"),
    ("CACHE_WRITE", "cache_write_tokens"),
    ("SUMMARY", "summary_tokens"),
    ("SUMMARY_USD", "summary_cost_usd"),
    ("REPLAY_USD", "full_replay_cost_usd"),
    ("SAVED_USD", "saved_usd"),
    ("UNPRICED", "unpriced_requests"),
    ("NO_USAGE", "unreported_usage_requests"),
    ("ESTIMATED", "estimated_requests"),
)


def _table_cells(label: str, fields: Mapping[str, Any]) -> list[str]:
    return [label, *(_text(fields[name], "n/a") for _, name in _TABLE_COLUMNS)]


def _table_lines(report: Report) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """The first column's title and the (label, fields) lines, the total last when there are several."""
    if report.group_by is not None:
        title = report.group_by.upper()
        lines = [(g.key or "(none)", usage_fields(g.total)) for g in report.groups]
    else:
        title = "MODEL"
        by_model = report.by_model
        models = sorted(by_model, key=_none_last)
        lines = [(m or "(unknown)", usage_fields(by_model[m])) for m in models]
    if len(lines) != 1:
        lines.append(("TOTAL", usage_fields(sum(report.by_model.values(), Totals()))))
    return title, lines


def render_table(report: Report) -> str:
    """An aligned plain-text table for a terminal, with footnotes on unknown figures."""
    title, lines = _table_lines(report)
    rows = [[title, *(name for name, _ in _TABLE_COLUMNS)]]
    rows += [_table_cells(label, fields) for label, fields in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    ]
    if report.conversation_id is not None:
        text.insert(0, f"conversation {report.conversation_id}")
    total = usage_fields(sum(report.by_model.values(), Totals()))
    if total["requests"] == 0:
        text.append("no recorded requests")
    if any(cell == "n/a" for row in rows for cell in row):
        text.append("n/a: not known (no price for the model, or no usage reported by the upstream)")
    if total["unpriced_requests"]:
        count = total["unpriced_requests"]
        text.append(f"{count} request(s) used a model with no known price: not in COST_USD")
    if total["unreported_usage_requests"]:
        count = total["unreported_usage_requests"]
        text.append(f"{count} request(s) had no usage reported by the upstream: not in the token sums")
    if total["estimated_requests"]:
        count = total["estimated_requests"]
        text.append(f"{count} request(s) are charged the gateway's estimate (a stream without usage)")
    return "\n".join(line.rstrip() for line in text) + "\n"


def render(report: Report, fmt: str) -> str:
    """The report as `json`, `csv` or `table` text."""
    if fmt == "csv":
        return render_csv(report)
    if fmt == "table":
        return render_table(report)
    return render_json(report_object(report))
