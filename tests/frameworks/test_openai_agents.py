"""The OpenAI Agents SDK over chat completions (`OpenAIChatCompletionsModel`), unmodified, in process.

A session with a limit resends only the newest items (a suffix of the stored history), a chained run
resends everything (`result.to_input_list()`), and the tool loop resends `[user, assistant(tool_calls),
tool]`. The Agents SDK is in the test extra.
"""

from __future__ import annotations

import functools
import importlib.util
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import InProcess, inprocess_gateway

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("agents") is None,
    reason="the OpenAI Agents SDK (openai-agents) is not installed",
)


@functools.cache
def sdk() -> Any:
    """The Agents SDK, imported by the tests that use it (~1 s): collecting the suite does not load it."""
    import agents

    return agents


KEY = "sk-openai-agents"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The gateway in process in front of the mock upstream (no tracing export from the Agents SDK)."""
    sdk().set_tracing_disabled(True)
    async with inprocess_gateway(tmp_path) as running:
        yield running


def agent(gw: InProcess, conversation_id: str, **options: Any) -> Any:
    """An agent on the chat-completions model pointed at the gateway with `X-Conversation-Id`."""
    model = sdk().OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=gw.sdk(KEY, conversation_id))
    return sdk().Agent(name="helper", model=model, **options)


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


async def test_a_session_with_a_limit_resends_a_window_that_is_deduped(gw: InProcess) -> None:
    helper = agent(gw, f"agents-{secrets.token_hex(6)}")
    session = sdk().SQLiteSession("s1", session_settings=sdk().SessionSettings(limit=2))
    outputs = []
    for text in ("one", "two", "three", "four"):
        outputs.append((await sdk().Runner.run(helper, text, session=session)).final_output)
    # the session sends its last two items and the new message; each message reaches the upstream once
    assert outputs == ["[1 messages] one", "[3 messages] two", "[5 messages] three", "[7 messages] four"]
    streamed = sdk().Runner.run_streamed(helper, "five", session=session)
    async for _ in streamed.stream_events():
        pass
    assert streamed.final_output == "[9 messages] five"
    assert roles(gw.last_upstream_messages()) == ["user", "assistant"] * 4 + ["user"]
    session.close()


async def test_a_tool_loop_and_a_chained_run_with_the_whole_input_list(gw: InProcess) -> None:
    calls: list[str] = []

    @sdk().function_tool  # type: ignore[untyped-decorator]
    def weather(input: str) -> str:  # the mock calls the first tool with {"input": <user text>}
        """The weather for a question."""
        calls.append(input)
        return "sunny"

    helper = agent(gw, f"agents-{secrets.token_hex(6)}", tools=[weather])
    first = await sdk().Runner.run(helper, "Weather in Paris?")
    assert first.final_output == "[3 messages] tool result: sunny"
    chained = [*first.to_input_list(), {"role": "user", "content": "And in Rome?"}]
    second = await sdk().Runner.run(helper, chained)
    assert second.final_output == "[7 messages] tool result: sunny"
    assert calls == ["Weather in Paris?", "And in Rome?"]
    turn = ["user", "assistant", "tool", "assistant"]
    assert roles(gw.last_upstream_messages()) == [*turn, *turn[:3]]
    assert len(gw.upstream_bodies()) == 4  # none rejected
