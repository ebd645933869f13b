"""Prices and cost: the formula, the prices file, genai-prices, history cost."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from gateway.config import ConfigError
from gateway.library_prices import build_snapshot, library_cost, snapshot_path
from gateway.price_snapshot import LIBRARY, AffinePrice, PriceSnapshot, decode, installed_version
from gateway.pricing import (
    CallCost,
    Price,
    Pricer,
    Usage,
    cost_usd,
    library_counts,
    load_prices_file,
    parse_usage,
)
from tests.helpers import fresh_python

D = Decimal


def write(tmp_path: Path, content: str) -> str:
    path = tmp_path / "prices.json"
    path.write_text(content, encoding="utf-8")
    return str(path)


def library_price(model: str) -> Price:
    """The flat per-1M prices genai-prices holds for an OpenAI model."""
    calc = genai_prices.calc_price(genai_prices.Usage(input_tokens=1), model, provider_id="openai")
    prices = calc.model_price
    input_mtok, output_mtok = prices.input_mtok, prices.output_mtok
    cached = prices.cache_read_mtok if prices.cache_read_mtok is not None else input_mtok
    assert (
        isinstance(input_mtok, Decimal) and isinstance(output_mtok, Decimal) and isinstance(cached, Decimal)
    )
    return Price(input=input_mtok, cached_input=cached, output=output_mtok)


# --- the formula -------------------------------------------------------------------------------


def test_formula_with_cached_tokens() -> None:
    price = Price(input=D("0.15"), cached_input=D("0.075"), output=D("0.6"))
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    # (600 x 0.15 + 400 x 0.075 + 500 x 0.6) / 1e6 = (90 + 30 + 300) / 1e6
    assert cost_usd(usage, price) == D("0.00042")


def test_formula_is_exact_and_unquantized() -> None:
    price = Price(input=D("0.15"), cached_input=D("0.15"), output=D("0.6"))
    assert cost_usd(Usage(prompt_tokens=1, completion_tokens=0), price) == D("0.00000015")
    assert cost_usd(Usage(prompt_tokens=7, completion_tokens=3), price) == D("0.00000285")
    assert cost_usd(Usage(0, 0), price) == 0


def test_reasoning_tokens_are_not_added_twice() -> None:
    price = Price(input=D("1.1"), cached_input=D("0.55"), output=D("4.4"))
    plain = Usage(prompt_tokens=100, completion_tokens=1000)
    reasoning = Usage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=800)
    assert cost_usd(plain, price) == cost_usd(reasoning, price) == D("0.00451")


def test_unknown_price_is_none_not_zero() -> None:
    assert cost_usd(Usage(10, 10), None) is None


def test_impossible_counts_are_clamped() -> None:
    price = Price(input=D("1"), cached_input=D("0.5"), output=D("2"))
    # cached above prompt: all of the prompt is cached; negatives count as 0.
    assert cost_usd(Usage(prompt_tokens=10, completion_tokens=-5, cached_tokens=50), price) == D("0.000005")


# --- the prices file ---------------------------------------------------------------------------


def test_load_prices_file_parses_exact_decimals_and_defaults_cached(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '{"my-model": {"input": 0.15, "output": 0.6},'
        ' "other": {"input": 3, "cached_input": 0.3, "output": 15}}',
    )
    prices = load_prices_file(path)
    assert prices == {
        "my-model": Price(input=D("0.15"), cached_input=D("0.15"), output=D("0.6")),
        "other": Price(input=D("3"), cached_input=D("0.3"), output=D("15")),
    }
    assert str(prices["my-model"].input) == "0.15"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('"gpt-4o"', "must be a JSON object"),
        ('{"m": 0.15}', "must be an object"),
        ('{"m": [0.15, 0.6]}', "must be an object"),
        ('{"m": {"input": 0.15}}', "lacks output"),
        ('{"m": {}}', "lacks input and output"),
        ('{"m": {"input": 0.15, "output": 0.6, "cache_input": 0.1}}', "unknown field(s) cache_input"),
        ('{"m": {"input": "0.15", "output": 0.6}}', "must be a number"),
        ('{"m": {"input": true, "output": 0.6}}', "must be a number"),
        ('{"m": {"input": null, "output": 0.6}}', "must be a number"),
        ('{"m": {"input": -0.15, "output": 0.6}}', "must not be negative"),
        ('{"m": {"input": 0.15, "cached_input": -1, "output": 0.6}}', "must not be negative"),
        ('{"m": {"input": 0.15, "output": -0.6}}', "must not be negative"),
        ('{"m": {"input": NaN, "output": 0.6}}', "NaN is not a price"),
        ('{"m": {"input": Infinity, "output": 0.6}}', "Infinity is not a price"),
        ('{"m": {"input": 1, "output": 2}, "m": {"input": 3, "output": 4}}', "duplicate key 'm'"),
        ('{" ": {"input": 1, "output": 2}}', "must not be empty"),
    ],
)
def test_bad_prices_files_raise_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_prices_file(path)
    assert message in str(caught.value)
    assert path in str(caught.value)


def test_unreadable_prices_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read prices file"):
        load_prices_file(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="cannot read prices file"):
        load_prices_file(str(tmp_path))  # a directory
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read prices file"):
        load_prices_file(str(binary))


def test_pricer_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"house-model": {"input": 1, "output": 2}}))
    pricer = Pricer.from_file(path)
    assert pricer.price_for("house-model") == Price(D(1), D(1), D(2))
    assert Pricer.from_file(None).price_for("house-model") is None
    with pytest.raises(ConfigError):
        Pricer.from_file(str(tmp_path / "missing.json"))


# --- lookup ------------------------------------------------------------------------------------

MINI = Price(input=D("0.15"), cached_input=D("0.075"), output=D("0.6"))
FOUR_O = Price(input=D("2.5"), cached_input=D("1.25"), output=D("10"))
DATED = Price(input=D("9"), cached_input=D("9"), output=D("9"))


def test_longest_prefix_wins() -> None:
    pricer = Pricer({"gpt-4o": FOUR_O, "gpt-4o-mini": MINI})
    assert pricer.price_for("gpt-4o-mini-2024-07-18") == MINI
    assert pricer.price_for("gpt-4o-2024-08-06") == FOUR_O
    assert pricer.price_for("gpt-4") is None
    # Insertion order does not matter.
    assert Pricer({"gpt-4o-mini": MINI, "gpt-4o": FOUR_O}).price_for("gpt-4o-mini-2024-07-18") == MINI


def test_exact_name_beats_prefix() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI, "gpt-4o-mini-2024-07-18": DATED})
    assert pricer.price_for("gpt-4o-mini-2024-07-18") == DATED
    assert pricer.price_for("gpt-4o-mini-2024-07-18-x") == DATED  # the longest prefix
    assert pricer.price_for("gpt-4o-mini") == MINI


def test_provider_prefixed_names_fall_back_to_the_bare_name() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI, "openai/gpt-4.1": DATED})
    assert pricer.price_for("openai/gpt-4o-mini-2024-07-18") == MINI
    assert pricer.price_for("openai/gpt-4.1") == DATED
    assert pricer.price_for("openai/gpt-4.1-mini") == DATED  # the full name's prefix comes first
    assert pricer.price_for("openai/gpt-5") is None


def test_pricer_keeps_its_own_copy() -> None:
    overrides = {"m": MINI}
    pricer = Pricer(overrides)
    overrides["m"] = FOUR_O
    assert pricer.price_for("m") == MINI


# --- cost --------------------------------------------------------------------------------------

USAGE = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)


def test_no_usage_or_no_model_costs_none() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI})
    assert pricer.cost("gpt-4o-mini", None, history_tokens=10) == CallCost(None, None)
    assert pricer.cost(None, USAGE, history_tokens=10) == CallCost(None, None)


def test_unknown_model_costs_none_not_zero() -> None:
    result = Pricer({}).cost("my-local-llama-7b", USAGE, history_tokens=100)
    assert result == CallCost(None, None)
    assert Pricer({}).cost("", USAGE) == CallCost(None, None)


def test_file_price_beats_the_library() -> None:
    house = Price(input=D("100"), cached_input=D("50"), output=D("200"))
    result = Pricer({"gpt-4o": house}).cost("gpt-4o", USAGE)
    assert result.cost_usd == cost_usd(USAGE, house) == D("0.18")
    assert result.cost_usd != Pricer({}).cost("gpt-4o", USAGE).cost_usd


def test_file_prefix_beats_the_library_for_dated_names() -> None:
    result = Pricer({"gpt-4o-mini": DATED}).cost("gpt-4o-mini-2024-07-18", USAGE)
    assert result.cost_usd == cost_usd(USAGE, DATED)


@pytest.mark.parametrize(
    ("model", "library_model"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o"),
        ("o3-mini", "o3-mini"),
        ("gpt-3.5-turbo", "gpt-3.5-turbo"),  # no cached price: cached tokens at the input price
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ],
)
def test_library_prices_equal_the_formula(model: str, library_model: str) -> None:
    result = Pricer({}).cost(model, USAGE)
    expected = cost_usd(USAGE, library_price(library_model))
    assert result.cost_usd is not None and result.cost_usd > 0
    assert result.cost_usd == expected


def test_dated_name_matches_its_family_in_the_library() -> None:
    dated = Pricer({}).cost("gpt-4o-mini-2024-07-18", USAGE).cost_usd
    assert dated is not None and dated > 0
    # 600 x 0.15 + 400 x 0.075 + 500 x 0.6 per 1M, with genai-prices' gpt-4o-mini prices.
    assert dated == cost_usd(USAGE, library_price("gpt-4o-mini"))


def test_non_openai_models_are_found_by_auto_detection() -> None:
    claude = Pricer({}).cost("claude-3-5-sonnet-latest", Usage(prompt_tokens=1000, completion_tokens=100))
    assert claude.cost_usd is not None and claude.cost_usd > 0
    prefixed = Pricer({}).cost("anthropic/claude-3-5-sonnet-latest", Usage(1000, 100))
    assert prefixed.cost_usd == claude.cost_usd


def test_library_path_does_not_add_reasoning_twice() -> None:
    plain = Pricer({}).cost("o3-mini", Usage(100, 1000))
    reasoning = Pricer({}).cost("o3-mini", Usage(100, 1000, reasoning_tokens=900))
    assert plain == reasoning


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini-2024-07-18",
        "o3-mini",
        "gpt-3.5-turbo",  # no cached price
        "openai/gpt-4o",
        "anthropic/claude-haiku-5-5",  # tiered prices: genai-prices on every call
        "claude-opus-4-6",  # prices that change with the date
        "perplexity/sonar",  # a price per request
        "claude-3-5-sonnet-latest",
        "no-such-model",
    ],
)
def test_memoized_library_prices_equal_genai_prices(model: str) -> None:
    pricer = Pricer({})
    usages = (
        Usage(0, 0),
        Usage(1000, 500, 400),
        Usage(300_000, 20, 250_000),
        Usage(7, 3),
        Usage(5, 1, 9),
        Usage(1000, 10, 200, cache_write_tokens=300),  # cache writes: the write price where there is one
    )
    for usage in usages:
        # The whole prompt as history: the history cost is then the input part of the cost.
        first = pricer.cost(model, usage, history_tokens=usage.prompt_tokens)
        second = pricer.cost(model, usage, history_tokens=usage.prompt_tokens)  # from the memo
        reference = library_cost(model, library_counts(usage))  # genai-prices itself
        assert first == second
        if reference is None:
            assert first == CallCost(None, None, None)
        else:
            expected_history = reference[1] if usage.prompt_tokens else 0
            replay = library_cost(model, library_counts(Usage(usage.prompt_tokens, usage.completion_tokens)))
            assert replay is not None
            assert first == CallCost(reference[0], expected_history, replay[0])


def test_memoized_library_price_is_genai_prices_own() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)
    direct = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=500),
        "gpt-4o-mini-2024-07-18",
        provider_id="openai",
    )
    pricer = Pricer({})
    pricer.cost("gpt-4o-mini-2024-07-18", usage)
    assert pricer.cost("gpt-4o-mini-2024-07-18", usage).cost_usd == direct.total_price


# --- history cost ------------------------------------------------------------------------------


def test_history_cost_is_blended_input_price_times_history_tokens() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI})
    result = pricer.cost("gpt-4o-mini", USAGE, history_tokens=600)
    # input part = (600 x 0.15 + 400 x 0.075) / 1e6 = 0.00012 for 1000 prompt tokens; 600 of them.
    # full replay: the 1000 prompt tokens uncached (0.00015) + 500 completion tokens (0.0003)
    assert result == CallCost(
        cost_usd=D("0.00042"), history_cost_usd=D("0.000072"), full_replay_cost_usd=D("0.00045")
    )


def test_history_cost_edges() -> None:
    pricer = Pricer({"gpt-4o-mini": MINI})
    assert pricer.cost("gpt-4o-mini", USAGE).history_cost_usd is None
    assert pricer.cost("gpt-4o-mini", USAGE, history_tokens=0).history_cost_usd == 0
    # Capped at the prompt: never more than the whole input part.
    assert pricer.cost("gpt-4o-mini", USAGE, history_tokens=5000).history_cost_usd == D("0.00012")
    assert pricer.cost("gpt-4o-mini", Usage(0, 10), history_tokens=5).history_cost_usd == 0
    assert pricer.cost("unknown-model", USAGE, history_tokens=600).history_cost_usd is None


def test_history_cost_through_the_library() -> None:
    result = Pricer({}).cost("gpt-4o-mini-2024-07-18", USAGE, history_tokens=1000)
    price = library_price("gpt-4o-mini")
    input_part = (600 * price.input + 400 * price.cached_input) / 1_000_000
    assert result.history_cost_usd == input_part
    half = Pricer({}).cost("gpt-4o-mini-2024-07-18", USAGE, history_tokens=500).history_cost_usd
    assert half == input_part / 2


# --- the bundled snapshot of genai-prices' flat prices -------------------------------------------


def test_the_bundled_snapshot_is_the_installed_genai_prices() -> None:
    # Fails after genai-prices is upgraded without `python -m gateway.library_prices` (requirements/upgrade
    # runs it): the snapshot would then be ignored, and every process would load genai-prices again.
    assert snapshot_path().read_text(encoding="utf-8") == build_snapshot(), (
        "gateway/prices_snapshot.json is stale: run `python -m gateway.library_prices`"
    )


def test_every_name_of_the_snapshot_prices_as_genai_prices_does() -> None:
    version, answers = decode(snapshot_path().read_text(encoding="utf-8"))
    assert version == installed_version()
    assert len(answers) > 1000 and sum(isinstance(a, AffinePrice) for a in answers.values()) > 500
    usages = (Usage(0, 0), Usage(1000, 500, 400), Usage(1000, 10, 200, cache_write_tokens=300), Usage(7, 3))
    pricer = Pricer({})
    for name in sorted(answers):
        for usage in usages:
            reference = library_cost(name, library_counts(usage))
            found = pricer.cost(name, usage, history_tokens=usage.prompt_tokens, left_out_tokens=None)
            if reference is None:
                assert (found.cost_usd, found.history_cost_usd) == (None, None), name
            else:
                history = reference[1] if usage.prompt_tokens else 0
                assert (found.cost_usd, found.history_cost_usd) == (reference[0], history), name


def test_a_name_is_looked_up_case_blind_and_unlisted_names_ask_the_library() -> None:
    snapshot = PriceSnapshot()
    assert isinstance(snapshot.lookup("GPT-4o-mini-2024-07-18"), AffinePrice)
    assert snapshot.lookup("GPT-4o-mini-2024-07-18") == snapshot.lookup("gpt-4o-mini-2024-07-18")
    assert snapshot.lookup("no-such-model-anywhere") == LIBRARY
    assert snapshot.lookup("claude-opus-4-6") == LIBRARY  # prices that change with the date


def test_a_snapshot_of_another_genai_prices_version_is_not_used() -> None:
    text = snapshot_path().read_text(encoding="utf-8")
    assert PriceSnapshot(text, version="0.0.1").lookup("gpt-4o-mini") == LIBRARY
    # ... and the pricer then asks genai-prices itself, with the same result
    stale = Pricer({}, snapshot=PriceSnapshot(text, version="0.0.1"))
    assert stale.cost("gpt-4o-mini", USAGE) == Pricer({}).cost("gpt-4o-mini", USAGE)


@pytest.mark.parametrize(
    "text",
    [
        '{"genai_prices": "1", "prices": [], "names": {"a": 0}}',
        '{"genai_prices": "1", "prices": [["1"]], "names": {}}',
        '{"genai_prices": 1, "prices": [], "names": {}}',
        '{"genai_prices": "1", "prices": [], "names": {"a": true}}',
    ],
)
def test_a_malformed_snapshot_is_refused(text: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        decode(text)
    # a broken installation's snapshot is not used: genai-prices itself prices every call
    assert PriceSnapshot(text, version="1").lookup("a") == LIBRARY
    assert PriceSnapshot("not json", version="1").lookup("gpt-4o-mini") == LIBRARY


def test_pricing_a_model_of_the_snapshot_does_not_load_genai_prices() -> None:
    script = (
        "import sys\n"
        "from gateway.pricing import Pricer, Usage\n"
        "cost = Pricer({}).cost('gpt-4o-mini-2024-07-18', Usage(1000, 500, 400), 600)\n"
        "assert cost.cost_usd is not None, cost\n"
        "assert 'genai_prices' not in sys.modules and 'pydantic' not in sys.modules, 'loaded'\n"
        "Pricer({}).cost('a-model-genai-prices-does-not-list', Usage(1, 1))\n"
        "assert 'genai_prices' in sys.modules, 'not loaded for an unlisted name'\n"
    )
    done = fresh_python(script)
    assert done.returncode == 0, done.stderr


# --- offline -----------------------------------------------------------------------------------


def test_pricing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    pricer = Pricer.from_file(write(tmp_path, '{"house": {"input": 1, "output": 1}}'))
    for model in ("house", "gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-latest", "openai/o3-mini", "nope"):
        pricer.cost(model, USAGE, history_tokens=10)


# --- reading usage and storing money -----------------------------------------------------------


def test_parse_usage_of_a_chat_completion() -> None:
    payload = {
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 384, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 256},
        }
    }
    assert parse_usage(payload) == Usage(1000, 500, cached_tokens=384, reasoning_tokens=256)


def test_parse_usage_of_embeddings_and_responses() -> None:
    assert parse_usage({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(8, 0)
    responses = {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 12},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 123,
    }
    assert parse_usage({"usage": responses}) == Usage(36, 87, cached_tokens=12, reasoning_tokens=20)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {},
        {"usage": None},
        {"usage": "12"},
        {"usage": {}},
        {"usage": {"completion_tokens": 5}},  # no prompt count: no usage, not a made-up 0
        {"usage": {"prompt_tokens": "12", "completion_tokens": 5}},
        {"usage": {"prompt_tokens": True, "completion_tokens": 5}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 5}},
        {"usage": {"prompt_tokens": 1.5, "completion_tokens": 5}},
    ],
)
def test_parse_usage_without_a_prompt_count_is_none(payload: object) -> None:
    assert parse_usage(payload) is None


def test_parse_usage_ignores_malformed_details() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": "x",
        "prompt_tokens_details": [64],
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    assert parse_usage({"usage": usage}) == Usage(10, 0)


# --- cache writes and full replay ---------------------------------------------------------------


def test_cache_writes_are_read_from_openai_and_anthropic_style_usage() -> None:
    openai_style = {
        "usage": {
            "prompt_tokens": 900,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 300},
        }
    }
    anthropic_style = {
        "usage": {
            "prompt_tokens": 900,
            "completion_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 300,
        }
    }
    for payload in (openai_style, anthropic_style):
        usage = parse_usage(payload)
        assert usage == Usage(900, 5, cached_tokens=100, cache_write_tokens=300)


def test_cache_writes_are_priced_at_the_write_price() -> None:
    price = Price(input=D("3"), cached_input=D("0.3"), output=D("15"), cache_write=D("3.75"))
    usage = Usage(1000, 10, cached_tokens=200, cache_write_tokens=300)
    # 500 fresh x 3 + 200 read x 0.3 + 300 written x 3.75 + 10 out x 15 = 1500 + 60 + 1125 + 150
    assert cost_usd(usage, price) == D("0.002835")
    # without a write price, writes cost the input price
    assert cost_usd(usage, Price(D("3"), D("0.3"), D("15"))) == D("0.00261")


def test_full_replay_adds_the_left_out_tokens_uncached() -> None:
    pricer = Pricer({"m": MINI})
    # 1000 prompt + 2000 left out = 3000 x 0.15 + 500 x 0.6 = 0.00045 + 0.0003
    assert pricer.cost("m", USAGE, 600, left_out_tokens=2000).full_replay_cost_usd == D("0.00075")
    assert pricer.cost("m", USAGE, 600, left_out_tokens=None).full_replay_cost_usd == 0  # a summary call
    assert pricer.cost("unknown-model", USAGE, 600).full_replay_cost_usd is None
