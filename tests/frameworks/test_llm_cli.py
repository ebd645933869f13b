"""Simon Willison's `llm` CLI, unmodified, against the gateway (an extra-openai-models.yaml entry),
run through its own click command in the test process.

`llm -c` continues a conversation by resending its whole history from llm's own log, and a tool chain
(`--functions`) resends `[user, assistant(tool_calls), tool]` with the arguments re-serialized by llm.
Needs the `frameworks` extra (requirements/frameworks.txt).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.servers import ServerProcess, upstream_requests

pytest.importorskip(
    "llm", reason="the llm CLI is not installed: pip install --require-hashes -r requirements/frameworks.txt"
)

WEATHER = 'def weather(input: str) -> str:\n    "The weather for a question."\n    return "sunny"\n'


def llm_home(tmp_path: Path, gateway: ServerProcess, conversation_id: str) -> Path:
    """An LLM_USER_PATH with two gateway models, one per conversation, as llm's docs describe."""
    models = [
        {
            "model_id": f"gateway-{name}",
            "model_name": "gpt-4o-mini",
            "api_base": gateway.url + "/v1",
            "headers": {"X-Conversation-Id": f"{conversation_id}-{name}"},
            "supports_tools": True,
            "api_key_name": "gateway",  # so that `--key` (or `llm keys set gateway`) is sent
        }
        for name in ("memory", "tools")
    ]
    home = tmp_path / "llm"
    home.mkdir()
    (home / "extra-openai-models.yaml").write_text(json.dumps(models))  # JSON is YAML
    return home


def run_llm(home: Path, api_key: str, *args: str) -> str:
    """Run `llm ARGS --key API_KEY` (llm's own click command, in this process); returns what it printed."""
    from llm.cli import cli

    result = CliRunner().invoke(cli, [*args, "--key", api_key], env={"LLM_USER_PATH": str(home)})
    assert result.exit_code == 0, (result.stderr[-3000:], result.exception)
    return result.stdout.strip()


def test_memory_streaming_and_a_tool_chain_across_turns(
    tmp_path: Path, gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    home = llm_home(tmp_path, gateway, conversation_id)
    assert run_llm(home, api_key, "-m", "gateway-memory", "--no-stream", "My name is Ada.") == (
        "[1 messages] My name is Ada."
    )
    # `llm -c` resends the whole conversation (streamed this time): each message reaches the upstream once
    assert run_llm(home, api_key, "-c", "What is my name?") == "[3 messages] What is my name?"
    # a new llm conversation on the same gateway conversation, then `llm -c`: llm resends only its own part,
    # a suffix of what the gateway stored, which is recognized as already stored
    assert (
        run_llm(home, api_key, "-m", "gateway-memory", "--no-stream", "Hi again") == "[5 messages] Hi again"
    )
    assert run_llm(home, api_key, "-c", "--no-stream", "Still there?") == "[7 messages] Still there?"
    first = run_llm(home, api_key, "-m", "gateway-tools", "--functions", WEATHER, "Weather in Paris?")
    assert first == "[3 messages] tool result: sunny"
    again = run_llm(home, api_key, "-c", "--functions", WEATHER, "And in Rome?")
    assert again == "[7 messages] tool result: sunny"
    calls = [r["body"]["messages"] for r in upstream_requests(upstream, api_key)]
    assert len(calls) == 8  # every upstream call was accepted
    turn = ["user", "assistant", "tool", "assistant"]
    assert [m["role"] for m in calls[-1]] == [*turn, *turn[:3]]
