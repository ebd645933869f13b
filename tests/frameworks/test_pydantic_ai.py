"""pydantic-ai, unmodified, against the gateway (in process, in front of the mock upstream).

pydantic-ai resends the whole history it is given and, inside a tool loop, rebuilds `function.arguments`
compact from the parsed object. Needs the `frameworks` extra (requirements/frameworks.txt).
"""

from __future__ import annotations

import importlib.util
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.inprocess import InProcess, inprocess_gateway

if TYPE_CHECKING:
    from pydantic_ai import Agent

# pydantic-ai is imported by the tests that use it (~1 s): collecting the suite does not load it.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pydantic_ai") is None,
    reason="pydantic-ai is not installed: pip install --require-hashes -r requirements/frameworks.txt",
)

KEY = "sk-pydantic-ai"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The gateway in process in front of the mock upstream."""
    async with inprocess_gateway(tmp_path) as running:
        yield running


def agent(gw: InProcess, conversation_id: str) -> Agent:
    """pydantic-ai's agent on its OpenAI chat model, at the gateway with `X-Conversation-Id`."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(openai_client=gw.sdk(KEY, conversation_id))
    return Agent(OpenAIChatModel("gpt-4o-mini", provider=provider))


def conversation() -> str:
    return f"pydantic-ai-{secrets.token_hex(6)}"


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


async def test_two_turn_memory_sending_only_the_new_message_and_a_streamed_turn(gw: InProcess) -> None:
    helper = agent(gw, conversation())
    first = await helper.run("My name is Ada.")
    assert first.output == "[1 messages] My name is Ada."
    second = await helper.run("What is my name?")  # no message_history: the gateway remembers
    assert second.output == "[3 messages] What is my name?"
    async with helper.run_stream("Stream it.") as streamed:
        assert await streamed.get_output() == "[5 messages] Stream it."
    assert roles(gw.last_upstream_messages()) == ["user", "assistant"] * 2 + ["user"]


async def test_a_tool_loop_continues_across_turns_with_the_full_history_resent(gw: InProcess) -> None:
    calls: list[str] = []
    helper = agent(gw, conversation())

    @helper.tool_plain
    def weather(input: str) -> str:  # the mock calls the first tool with {"input": <user text>}
        """The weather for a question."""
        calls.append(input)
        return "sunny"

    first = await helper.run("Weather in Paris?")
    assert first.output == "[3 messages] tool result: sunny"
    sent = gw.last_upstream_messages()
    assert roles(sent) == ["user", "assistant", "tool"]  # not the tool call twice (an upstream 400)
    # the stored copy of the call (spaced, as the upstream sent it), not pydantic-ai's compact one
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"input": "Weather in Paris?"}'
    # the next run resends everything pydantic-ai holds: the gateway dedupes it
    second = await helper.run("And in Rome?", message_history=first.all_messages())
    assert second.output == "[7 messages] tool result: sunny"
    assert calls == ["Weather in Paris?", "And in Rome?"]
    turn = ["user", "assistant", "tool", "assistant"]
    assert roles(gw.last_upstream_messages()) == [*turn, *turn[:3]]
    third = await helper.run("Thanks", message_history=second.all_messages())
    assert third.output == "[11 messages] tool result: sunny"
    assert len(gw.upstream_bodies()) == 6  # two calls per run, none rejected
