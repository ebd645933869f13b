"""The Responses API end to end (real processes): long chains, replicas, the Agents SDK and the Node SDK."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import POSTGRES_ENV
from tests.servers import ServerProcess

MODEL = "gpt-4o-mini"
TOOL: Any = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
}


def test_a_50_turn_chain_with_tool_calls_sent_back_to_back_loses_nothing(
    gateway: ServerProcess, api_key: str
) -> None:
    """25 rounds of question -> tool call -> tool output -> answer, each sent as the last one completed."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0) as client:
        previous: str | None = None
        conversation: str | None = None
        for round_number in range(25):
            asked = client.responses.create(
                model=MODEL, input=f"question {round_number}", tools=[TOOL], previous_response_id=previous
            )
            (call,) = asked.output
            assert call.type == "function_call"
            answered = client.responses.create(
                model=MODEL,
                input=[
                    {
                        "type": "function_call_output",
                        "call_id": call.call_id,
                        "output": f"fact {round_number}",
                    }
                ],
                tools=[TOOL],
                previous_response_id=asked.id,
            )
            # every earlier message went upstream: 4 per round, this round's three, then the reply
            assert (
                answered.output_text == f"[{4 * round_number + 3} messages] tool result: fact {round_number}"
            )
            assert answered.conversation is not None
            conversation = conversation or answered.conversation.id
            assert answered.conversation.id == conversation  # never forked: each was the latest turn
            previous = answered.id
        assert conversation is not None
        items = list(client.conversations.items.list(conversation, order="asc", limit=100))
        assert [item.type for item in items] == [
            "message",
            "function_call",
            "function_call_output",
            "message",
        ] * 25


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=f"set {POSTGRES_ENV} to run")
def test_a_follow_up_on_another_replica_sees_the_response_at_once(
    start_gateway: Callable[..., ServerProcess], api_key: str
) -> None:
    from tests.conftest import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    try:
        first, second = start_gateway(url), start_gateway(url)
        clients = [
            openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0)
            for server in (first, second)
        ]
        previous = None
        for turn in range(10):
            response = clients[turn % 2].responses.create(
                model=MODEL, input=f"t{turn}", previous_response_id=previous
            )
            assert response.output_text == f"[{2 * turn + 1} messages] t{turn}"
            previous = response.id
        for client in clients:
            client.close()
    finally:
        drop_postgres_database(url)


def test_agents_sdk_tool_round_trip_streamed_run_and_chained_runs(
    gateway: ServerProcess, api_key: str
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)

    @agents.function_tool  # type: ignore[untyped-decorator]
    def lookup(input: str) -> str:
        """Look a word up."""
        return f"found {input}"

    async def run() -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
        model = agents.OpenAIResponsesModel(model=MODEL, openai_client=client)
        agent = agents.Agent(name="helper", instructions="Use the tool.", tools=[lookup], model=model)
        out: dict[str, Any] = {}
        result = await agents.Runner.run(agent, "weather")
        out["tool"] = result.final_output
        streamed = agents.Runner.run_streamed(agent, "streamed")
        out["kinds"] = {event.type async for event in streamed.stream_events()}
        out["streamed"] = streamed.final_output
        plain = agents.Agent(name="talker", instructions="Talk.", model=model)
        first = await agents.Runner.run(plain, "first run")
        second = await agents.Runner.run(plain, "second run", previous_response_id=first.last_response_id)
        out["chained"] = second.final_output
        await client.close()
        return out

    out = asyncio.run(run())
    assert out["tool"].endswith("tool result: found weather")
    assert out["streamed"].endswith("tool result: found streamed") and "raw_response_event" in out["kinds"]
    # the second run sent the first run's turn too: system, user, assistant, user
    assert out["chained"] == "[4 messages] second run"


NODE_SCRIPT = r"""
import OpenAI from "openai";
const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const model = "gpt-4o-mini";
const out = {};
const first = await client.responses.create({ model, input: "hello node", instructions: "Be kind." });
out.first = first.output_text;
const stream = client.responses.stream({ model, input: "stream node", previous_response_id: first.id });
const kinds = new Set();
for await (const event of stream) kinds.add(event.type);
const final = await stream.finalResponse();
out.kinds = [...kinds];
out.stream = final.output_text;
out.sameConversation = final.conversation.id === first.conversation.id;
const again = await client.responses.retrieve(final.id);
out.retrieved = again.output_text;
const items = await client.responses.inputItems.list(final.id);
out.items = items.data.length;
console.log(JSON.stringify(out));
"""


def test_node_sdk_create_stream_chain_and_retrieve(
    node_openai: Path, gateway: ServerProcess, api_key: str
) -> None:
    script = node_openai / "responses.mjs"
    script.write_text(NODE_SCRIPT)
    result = subprocess.run(
        ["node", str(script), gateway.url + "/v1", api_key], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["first"] == "[2 messages] hello node"
    assert out["stream"] == "[3 messages] stream node" and out["sameConversation"] is True
    assert "response.output_text.delta" in out["kinds"] and "response.completed" in out["kinds"]
    assert out["retrieved"] == out["stream"] and out["items"] == 1
