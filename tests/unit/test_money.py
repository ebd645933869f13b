"""Money in one place: parsing USD given by callers, picodollars for storage, exact rendering."""

from __future__ import annotations

import json
from decimal import Decimal
from decimal import Decimal as D

import pytest

from gateway import money
from gateway.errors import InvalidRequest
from gateway.keys import MAX_BUDGET_USD
from gateway.pricing import Price, Usage, cost_usd
from gateway.views import render_json


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0), ("0.5", 500_000_000_000), (1.25, 1_250_000_000_000), (Decimal("1e6"), 10**18)],
)
def test_budgets_are_integer_picodollars(value: object, expected: int | None) -> None:
    assert money.parse_usd(value, "budget_usd", maximum=MAX_BUDGET_USD, text=True) == expected


@pytest.mark.parametrize("value", [-1, "abc", float("nan"), float("inf"), "1e7", True, [1], {"a": 1}])
def test_invalid_budgets(value: object) -> None:
    with pytest.raises(InvalidRequest) as caught:
        money.parse_usd(value, "budget_usd", maximum=MAX_BUDGET_USD, text=True)
    assert caught.value.param == "budget_usd"


def test_cost_cap_in_picodollars() -> None:
    assert money.parse_usd(0, "max_cost_usd") == 0
    assert money.parse_usd(0.1, "max_cost_usd") == 100_000_000_000  # exact: decimal, not binary
    assert money.parse_usd(1e-13, "max_cost_usd") == 0
    assert money.parse_usd(5e-13, "max_cost_usd") == 1  # rounded half up to whole picodollars
    assert money.parse_usd(None, "max_cost_usd") is None
    assert money.usd(100_000_000_000) == D("0.1") and money.usd(None) is None
    for bad in (float("inf"), float("nan"), -1, "1", True, 10_000_000):  # numbers only; 64-bit storage
        with pytest.raises(InvalidRequest) as caught:
            money.parse_usd(bad, "max_cost_usd")
        assert caught.value.param == "max_cost_usd"


def test_the_largest_amount_fits_a_64_bit_column() -> None:
    assert money.parse_usd(money.MAX_USD, "x") == 2**63 - 1
    with pytest.raises(InvalidRequest):
        money.parse_usd(money.MAX_USD + D("1E-12"), "x")


def test_picodollars_are_exact() -> None:
    assert money.to_picodollars(None) is None
    assert money.to_picodollars(D("0.00042")) == 420_000_000
    assert money.to_picodollars(D("0.00000015")) == 150_000
    assert money.to_picodollars(D(0)) == 0
    assert money.to_picodollars(D("1E-13")) == 0 and money.to_picodollars(D("6E-13")) == 1  # rounded
    assert money.to_picodollars(D("5E-13")) == 1  # half up, like amounts given by callers
    # Any price with 6 decimals per 1M tokens gives whole picodollars per token.
    price = Price(input=D("0.123456"), cached_input=D("0.000001"), output=D("987.654321"))
    cost = cost_usd(Usage(prompt_tokens=12345, completion_tokens=678, cached_tokens=999), price)
    assert cost is not None and money.to_picodollars(cost) == cost * 10**12


def test_usd_rendering() -> None:
    assert money.usd(None) is None and money.usd(0) == 0 and money.usd(1_500_000_000_000) == D("1.5")
    assert money.fixed_text(1_500_000_000_000) == "1.500000" and money.fixed_text(0) == "0.000000"
    assert money.fixed_text(1_234_567) == "0.000001"  # six places, half up
    # JSON: budgets and caps render like costs, as exact numbers
    assert json.loads(render_json({"budget_usd": money.usd(2_500_000_000_000)})) == {"budget_usd": 2.5}
    assert render_json([money.usd(1), money.usd(0), money.usd(10**13)]) == "[0.000000000001,0,10]"


@pytest.mark.parametrize(
    ("value", "text"),
    [(D("0.000420000000"), "0.00042"), (D("1.5E-7"), "0.00000015"), (D("1E+1"), "10"), (D("0E-12"), "0")],
)
def test_usd_text_is_positional(value: Decimal, text: str) -> None:
    assert money.usd_text(value) == text


def test_render_json_can_lay_out_like_json_dumps() -> None:
    data = {"a": [1, {"b": None, "c": []}, {}], "d": "é", "e": D("2.50")}
    plain = {"a": [1, {"b": None, "c": []}, {}], "d": "é", "e": 2.5}
    for indent, separators in [(None, (",", ":")), (None, (", ", ": ")), (2, (",", ": "))]:
        expected = json.dumps(plain, indent=indent, separators=separators, ensure_ascii=False)
        assert render_json(data, indent=indent, separators=separators) == expected
