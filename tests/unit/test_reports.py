"""Usage reports: folding sums, null rules, parameters, and the JSON, CSV and table renderings."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from decimal import Decimal

import pytest

from gateway.errors import InvalidRequest
from gateway.reports import (
    USAGE_FIELDS,
    Group,
    Report,
    Totals,
    UsageQuery,
    day_key,
    fold,
    parse_report_params,
    parse_time,
    render,
    render_csv,
    render_table,
    report_object,
    usage_fields,
    usage_object,
)
from gateway.views import render_json

D = Decimal


def priced(requests: int = 1, prompt: int = 100, completion: int = 10, pusd: int = 21_000_000) -> Totals:
    """Totals of `requests` priced calls that reported usage."""
    return Totals(
        requests=requests,
        reported=requests,
        priced=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=64,
        reasoning_tokens=8,
        history_tokens=40,
        cost_pusd=pusd,
        history_priced=requests,
        history_cost_pusd=6_000_000,
        replay_priced=requests,
        full_replay_pusd=30_000_000,
    )


UNPRICED = Totals(requests=1, reported=1, unpriced=1, prompt_tokens=50, completion_tokens=5, history_tokens=7)
NO_USAGE = Totals(requests=2)


# --- sums and null rules -----------------------------------------------------------------------


def test_totals_add_field_by_field() -> None:
    total = priced() + UNPRICED + NO_USAGE
    assert total.requests == 4 and total.reported == 2 and total.priced == 1 and total.unpriced == 1
    assert total.prompt_tokens == 150 and total.history_tokens == 47 and total.cost_pusd == 21_000_000


def test_usage_fields_of_priced_calls() -> None:
    assert usage_fields(priced()) == {
        "requests": 1,
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "cached_tokens": 64,
        "reasoning_tokens": 8,
        "total_tokens": 110,
        "history_tokens": 40,
        "cost_usd": D("0.000021"),
        "history_cost_usd": D("0.000006"),
        "unpriced_requests": 0,
        "unreported_usage_requests": 0,
        "cache_write_tokens": 0,
        "summary_tokens": 0,
        "summary_cost_usd": D(0),
        "full_replay_cost_usd": D("0.00003"),
        "saved_usd": D("0.000009"),
        "estimated_requests": 0,
    }
    assert tuple(usage_fields(priced())) == USAGE_FIELDS


def test_unknown_is_null_never_zero() -> None:
    unpriced = usage_fields(UNPRICED)
    assert unpriced["cost_usd"] is None and unpriced["history_cost_usd"] is None
    assert unpriced["prompt_tokens"] == 50 and unpriced["unpriced_requests"] == 1
    nothing = usage_fields(NO_USAGE)
    assert nothing["requests"] == 2 and nothing["unreported_usage_requests"] == 2
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "history_tokens", "cost_usd"):
        assert nothing[name] is None, name


def test_partly_known_sums_count_what_is_known() -> None:
    fields = usage_fields(priced() + UNPRICED + NO_USAGE)
    # The cost is the known part; the counters say what it leaves out.
    assert fields["cost_usd"] == D("0.000021")
    assert fields["unpriced_requests"] == 1 and fields["unreported_usage_requests"] == 2
    assert fields["prompt_tokens"] == 150 and fields["total_tokens"] == 165


def test_no_requests_is_a_true_zero() -> None:
    fields = usage_fields(Totals())
    assert fields["requests"] == 0 and fields["prompt_tokens"] == 0 and fields["cost_usd"] == 0


def test_money_is_exact_picodollars() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; in picodollars it stays exact.
    total = priced(pusd=100_000_000_000) + priced(pusd=200_000_000_000)
    assert usage_fields(total)["cost_usd"] == D("0.3")
    assert usage_fields(priced(pusd=1))["cost_usd"] == D("1E-12")


# --- grouping ----------------------------------------------------------------------------------


def test_fold_groups_by_key_and_model_sorted_with_none_last() -> None:
    groups = fold(
        [
            ("b", "m1", priced()),
            (None, "m1", priced()),
            ("a", "m2", UNPRICED),
            ("a", "m1", priced()),
            ("a", "m1", priced()),
        ]
    )
    assert [g.key for g in groups] == ["a", "b", None]
    assert groups[0].by_model["m1"] == priced() + priced()
    assert groups[0].total == priced() + priced() + UNPRICED


def test_usage_object_has_the_issue_fields_and_by_model() -> None:
    obj = usage_object({"m2": UNPRICED, None: NO_USAGE, "m1": priced()})
    assert list(obj) == [*USAGE_FIELDS, "by_model"]
    assert [m["model"] for m in obj["by_model"]] == ["m1", "m2", None]
    assert list(obj["by_model"][0]) == ["model", *USAGE_FIELDS]
    assert obj["requests"] == 4 and obj["by_model"][1]["cost_usd"] is None


def test_report_objects() -> None:
    groups = [Group("2024-05-01", {"m": priced()}), Group("2024-05-02", {"m": UNPRICED})]
    listed = report_object(Report(groups, group_by="day"))
    assert listed["object"] == "list"
    assert [row["key"] for row in listed["data"]] == ["2024-05-01", "2024-05-02"]
    assert list(listed["data"][0])[:2] == ["key", "requests"] and "by_model" in listed["data"][0]
    totals = report_object(Report(groups))
    usage = usage_object({"m": priced() + UNPRICED})
    assert totals == {"object": "list", "data": [{"key": "total", **usage}], **usage}
    one = report_object(Report(groups, conversation_id="c1"))
    assert next(iter(one)) == "conversation_id" and one["conversation_id"] == "c1"
    assert report_object(Report([]))["data"] == [{"key": "total", **usage_object({})}]


def test_day_keys_are_utc_dates() -> None:
    assert day_key(0) == "1970-01-01"
    assert day_key(19844) == "2024-05-01"


# --- parameters --------------------------------------------------------------------------------


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("value", "end", "expected"),
    [
        ("2024-05-01", False, ts("2024-05-01T00:00:00+00:00")),
        ("2024-05-01", True, ts("2024-05-02T00:00:00+00:00")),  # a date `until` includes its day
        ("2024-05-01T12:30:00Z", False, ts("2024-05-01T12:30:00+00:00")),
        ("2024-05-01T12:30:00", True, ts("2024-05-01T12:30:00+00:00")),  # naive: UTC
        ("2024-05-01T14:30:00+02:00", False, ts("2024-05-01T12:30:00+00:00")),
        ("2024-05-01 12:30", False, ts("2024-05-01T12:30:00+00:00")),
        (" 2024-05-01T12:30:00.250Z ", False, ts("2024-05-01T12:30:00.250+00:00")),
        ("9999-12-31", True, None),  # past the end of the calendar: no bound
    ],
)
def test_parse_time(value: str, end: bool, expected: float | None) -> None:
    assert parse_time(value, "until", end=end) == expected


@pytest.mark.parametrize(
    "value", ["", "yesterday", "2024-13-01", "2024-05-01T25:00", "1714550400", "05/01/2024"]
)
def test_parse_time_rejects_what_is_not_iso(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_time(value, "since")
    assert caught.value.param == "since" and caught.value.status_code == 400


def test_parse_report_params() -> None:
    query, fmt = parse_report_params(
        {"group_by": "day", "since": "2024-05-01", "until": "2024-05-31", "format": "csv"}, "owner-1"
    )
    assert fmt == "csv"
    assert query == UsageQuery(
        owner="owner-1",
        group_by="day",
        since=ts("2024-05-01T00:00:00+00:00"),
        until=ts("2024-06-01T00:00:00+00:00"),
    )
    assert parse_report_params({}, None) == (UsageQuery(), "json")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"group_by": ""}, "group_by"),
        ({"group_by": "Day"}, "group_by"),
        ({"format": "xml"}, "format"),
        ({"format": "table"}, "format"),  # the table is the CLI's
        ({"since": "soon"}, "since"),
        ({"until": "later"}, "until"),
        ({"since": "2024-05-02", "until": "2024-05-01"}, "until"),
        ({"since": "2024-05-01T10:00Z", "until": "2024-05-01T10:00Z"}, "until"),
    ],
)
def test_bad_report_params_are_400_with_param(params: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_report_params(params, "owner")
    assert caught.value.param == param
    assert caught.value.to_body()["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# --- rendering ---------------------------------------------------------------------------------


def test_render_json_keeps_decimals_exact() -> None:
    data = {"a": D("0.000000123456789012"), "b": [1, None, 'x"y', True], "c": {"d": D("12.5")}, "é": "ü"}
    text = render_json(data)
    assert text == '{"a":0.000000123456789012,"b":[1,null,"x\\"y",true],"c":{"d":12.5},"é":"ü"}'
    assert json.loads(text, parse_float=Decimal) == data


def test_render_csv_parses_with_header_and_empty_unknowns() -> None:
    report = Report(
        [Group("c1", {"m": priced()}), Group(None, {"x": UNPRICED, "y": NO_USAGE})], "conversation"
    )
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert list(rows[0]) == ["key", *USAGE_FIELDS]
    assert rows[0]["key"] == "c1" and rows[0]["cost_usd"] == "0.000021" and rows[0]["total_tokens"] == "110"
    assert rows[1]["key"] == "" and rows[1]["cost_usd"] == "" and rows[1]["unpriced_requests"] == "1"
    assert rows[1]["unreported_usage_requests"] == "2" and rows[1]["requests"] == "3"


def test_render_csv_without_grouping_is_one_total_row() -> None:
    rows = list(csv.reader(io.StringIO(render_csv(Report([Group(None, {"m": priced()})])))))
    assert len(rows) == 2 and rows[1][0] == "total" and rows[1][1] == "1"
    rows = list(csv.reader(io.StringIO(render_csv(Report([], conversation_id="c9")))))
    assert rows[1][:3] == ["c9", "0", "0"]


def test_render_csv_defuses_formulas() -> None:
    report = Report([Group("=HYPERLINK(1)", {"m": priced()}), Group("-x", {"m": priced()})], "model")
    keys = [row["key"] for row in csv.DictReader(io.StringIO(render_csv(report)))]
    assert keys == ["'=HYPERLINK(1)", "'-x"]


def test_render_table_aligns_columns_and_explains_unknowns() -> None:
    report = Report(
        [Group("2024-05-01", {"m": priced()}), Group("2024-05-02", {"x": UNPRICED, "y": NO_USAGE})], "day"
    )
    lines = render_table(report).splitlines()
    header, first, second, total = lines[:4]
    assert header.split()[:3] == ["DAY", "REQUESTS", "PROMPT"]
    assert first.split()[0] == "2024-05-01" and total.split()[0] == "TOTAL"
    # Right-aligned numeric columns: every row ends at the same column.
    assert len({len(header), len(first), len(second), len(total)}) == 1
    assert "n/a" in second.split()  # the unknown cost of the second day
    assert total.split()[1] == "4"
    notes = "\n".join(lines[4:])
    assert "n/a" in notes and "1 request(s) used a model with no known price" in notes
    assert "2 request(s) had no usage reported" in notes


def test_render_table_without_grouping_lists_models() -> None:
    text = render_table(
        Report([Group(None, {"gpt-4o-mini": priced(), None: priced()})], conversation_id="c1")
    )
    lines = text.splitlines()
    assert lines[0] == "conversation c1"
    assert [line.split()[0] for line in lines[2:]] == ["gpt-4o-mini", "(unknown)", "TOTAL"]
    assert "n/a" not in text
    assert "no recorded requests" in render_table(Report([]))


def test_render_dispatches_on_format() -> None:
    report = Report([Group(None, {"m": priced()})])
    assert json.loads(render(report, "json"))["data"][0]["requests"] == 1
    assert render(report, "csv").startswith("key,requests,")
    assert render(report, "table").startswith("MODEL")


def test_summary_and_saved_figures() -> None:
    summary = Totals(
        requests=1,
        reported=1,
        priced=1,
        prompt_tokens=300,
        completion_tokens=20,
        cost_pusd=2_000_000,
        summary_requests=1,
        summary_tokens=320,
        summary_priced=1,
        summary_cost_pusd=2_000_000,
        replay_priced=1,
    )
    fields = usage_fields(priced() + summary)
    assert fields["summary_tokens"] == 320 and fields["summary_cost_usd"] == D("0.000002")
    # saved = full replay (0.00003, the summary call adds 0) - cost (0.000021 + 0.000002)
    assert fields["full_replay_cost_usd"] == D("0.00003") and fields["saved_usd"] == D("0.000007")
    # an unpriced call makes the saving unknown; an unpriced summary call its cost too
    assert usage_fields(priced() + UNPRICED)["saved_usd"] is None
    unpriced_summary = Totals(requests=1, reported=1, unpriced=1, prompt_tokens=9, summary_requests=1)
    assert usage_fields(unpriced_summary)["summary_cost_usd"] is None
