"""What memory costs: one scripted 100-turn conversation under each history strategy, priced for real.

The gateway and the mock upstream run in process (`create_app` with the mock app as its upstream transport,
a fresh SQLite database and a fresh prompt cache per strategy). The mock's prompt cache
(`gateway mock-upstream --prompt-cache`) reports `cached_tokens` like OpenAI: the longest prefix seen
before, from 1,024 tokens, in 128-token steps. The conversation: a ~1,500-token system prompt, 100 turns
of ~150 tokens (the user's message and the mock's echo of it), facts planted at turns 5, 20, 40, 60 and 80,
and at the end one question about each (turns 96-100). Recall counts the planted facts present anywhere in
the request that asks about them.

    .venv/bin/python benchmarks/context.py                 # the table (about a minute)
    .venv/bin/python benchmarks/context.py --json out.json

Cases: full replay (no history limit: the whole stored history on every turn), and `sliding`, `stable` and
`summarize` with `X-Max-History-Tokens: 4000`. Prices: genai-prices' for MODEL (cached input included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.config import Settings
from gateway.mock_upstream import create_mock_app
from gateway.mock_upstream.cache import PromptCache
from gateway.window import MESSAGES_TO_FOLD

MODEL = "gpt-4.1-mini"  # $0.40 / 1M input, $0.10 / 1M cached input, $1.60 / 1M output (genai-prices)
TURNS = 100
BUDGET_TOKENS = 4000
FACTS = {5: "ORCHID-7731", 20: "BASALT-2048", 40: "LANTERN-5519", 60: "MERIDIAN-0042", 80: "QUARTZ-8860"}
QUESTIONS = dict(zip(range(96, 101), FACTS, strict=True))  # turn -> the turn whose fact it asks about
CASES = (("full replay", "stable", None), ("sliding", "sliding", BUDGET_TOKENS),
         ("stable", "stable", BUDGET_TOKENS), ("summarize", "summarize", BUDGET_TOKENS))  # fmt: skip
SYSTEM_PROMPT = " ".join(
    f"Rule {n}: answer the customer of the travel agency politely, check every booking detail twice, "
    "quote prices in euros with two decimals, and never promise what the booking system has not confirmed."
    for n in range(1, 41)
)


def user_text(turn: int) -> str:
    """The user's message of a turn: filler, a planted fact, or a question about one."""
    if turn in FACTS:
        return (
            f"Turn {turn}. FACT: the booking reference of trip {turn} is {FACTS[turn]}. Please remember it."
        )
    if turn in QUESTIONS:
        return f"Turn {turn}. What was the booking reference of trip {QUESTIONS[turn]} that I told you about?"
    return (
        f"Turn {turn}. I am still comparing the hotels near the old harbour; the one with the blue shutters "
        "has a late check-in desk, the other one is closer to the station. Which would you pick for me?"
    )


@dataclass
class Result:
    """One case's figures."""

    case: str
    input_tokens: int
    cached_share: float
    cost_usd: Decimal
    full_replay_cost_usd: Decimal
    summary_calls: int
    largest_prompt: int
    recall: int
    cut_turn_ms: float | None  # median wall time of the turns that made a summary call
    other_turn_ms: float  # median wall time of the other turns
    cut_turn_cpu_ms: float | None  # the same as CPU time of this process (gateway and mock together)
    other_turn_cpu_ms: float


async def run_case(name: str, strategy: str, budget: int | None, folder: Path) -> Result:
    """Send the scripted conversation through the gateway and the caching mock; read back the bill."""
    mock = create_mock_app(prompt_cache=PromptCache())
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder / (strategy + str(budget))}.db",
        upstream_url="http://mock/v1",
        history_strategy=strategy,
        max_history_tokens=budget,
    )
    app = create_app(settings, transport=httpx.ASGITransport(app=mock))
    headers = {"Authorization": "Bearer sk-bench", "X-Conversation-Id": "trip"}
    timings: list[tuple[bool, float, float]] = []
    async with LifespanManager(app, startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=60) as client:
            for turn in range(1, TURNS + 1):
                messages = [{"role": "user", "content": user_text(turn)}]
                if turn == 1:
                    messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
                before = len(mock.state.mock_requests)
                started, cpu = time.perf_counter(), time.process_time()
                response = await client.post(
                    "/v1/chat/completions", headers=headers, json={"model": MODEL, "messages": messages}
                )
                elapsed = (time.perf_counter() - started) * 1000
                cpu_ms = (time.process_time() - cpu) * 1000
                response.raise_for_status()
                timings.append((len(mock.state.mock_requests) - before > 1, elapsed, cpu_ms))
            usage = (await client.get("/v1/conversations/trip/usage", headers=headers)).json()
    requests = [r["body"]["messages"] for r in mock.state.mock_requests]
    turn_requests = [m for m in requests if MESSAGES_TO_FOLD not in str(m[-1]["content"])]
    recall = sum(
        1 for turn, asked in QUESTIONS.items() if FACTS[asked] in json.dumps(turn_requests[turn - 1])
    )
    cut = [(ms, cpu) for was_cut, ms, cpu in timings if was_cut]
    other = [(ms, cpu) for was_cut, ms, cpu in timings if not was_cut]
    return Result(
        case=name,
        input_tokens=usage["prompt_tokens"],
        cached_share=usage["cached_tokens"] / usage["prompt_tokens"],
        cost_usd=Decimal(str(usage["cost_usd"])),
        full_replay_cost_usd=Decimal(str(usage["full_replay_cost_usd"])),
        summary_calls=len(requests) - len(turn_requests),
        largest_prompt=max(_prompt_tokens(m) for m in requests),
        recall=recall,
        cut_turn_ms=statistics.median(ms for ms, _ in cut) if cut else None,
        other_turn_ms=statistics.median(ms for ms, _ in other),
        cut_turn_cpu_ms=statistics.median(cpu for _, cpu in cut) if cut else None,
        other_turn_cpu_ms=statistics.median(cpu for _, cpu in other),
    )


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The mock's prompt_tokens of a request (as its usage reports them)."""
    return sum(4 + len(json.dumps(m.get("content"))) // 4 for m in messages)


def render(results: list[Result]) -> str:
    """The README table: per case the bill, its ratios to sliding and to full replay, recall."""
    full = results[0]
    sliding = next(r for r in results if r.case == "sliding").cost_usd
    lines = [
        "| case | input tokens billed | cached share | cost (USD) | vs sliding | vs full replay "
        "(cached) | vs full replay (uncached) | largest prompt | recall | summary calls |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratios = (r.cost_usd / sliding, r.cost_usd / full.cost_usd, r.cost_usd / full.full_replay_cost_usd)
        lines.append(
            f"| {r.case} | {r.input_tokens:,} | {r.cached_share:.0%} | {r.cost_usd:.6f} | "
            + " | ".join(f"{ratio:.0%}" for ratio in ratios)
            + f" | {r.largest_prompt:,} | {r.recall}/{len(FACTS)} | {r.summary_calls} |"
        )
    summarize = next(r for r in results if r.case == "summarize")
    lines += [
        "",
        f"full replay uncached (the bill's full_replay_cost_usd): {full.full_replay_cost_usd:.6f} USD",
        f"summarize, medians: a turn {summarize.other_turn_ms:.1f} ms ({summarize.other_turn_cpu_ms:.1f} ms "
        f"CPU), a cutting turn with its summary call {summarize.cut_turn_ms or 0:.1f} ms "
        f"({summarize.cut_turn_cpu_ms or 0:.1f} ms CPU)",
    ]
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    """Run every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = [await run_case(name, s, budget, Path(folder)) for name, s, budget in CASES]
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
