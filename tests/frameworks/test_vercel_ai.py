"""The Vercel AI SDK (`ai` + `@ai-sdk/openai`, `provider.chat(...)`), unmodified, against the real gateway.

Its tool loop resends `[user, assistant(tool_calls), tool]` with the arguments rebuilt compact and the
assistant content empty; an app continues the conversation by resending the whole `messages` array. Needs
node and `npm ci --prefix tests/frameworks/vercel_ai` (the locked package-lock.json); skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import ServerProcess, upstream_requests

FOLDER = Path(__file__).parent / "vercel_ai"


@pytest.fixture(scope="module")
def vercel_ai() -> Path:
    """The folder with the locked Vercel AI SDK installed."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Vercel AI SDK check needs it")
    if not (FOLDER / "node_modules" / "ai" / "package.json").exists():
        pytest.skip(f"the Vercel AI SDK is not installed: run `npm ci --prefix {FOLDER}`")
    return FOLDER


def test_memory_streaming_and_a_tool_loop_across_turns(
    vercel_ai: Path, gateway: ServerProcess, upstream: ServerProcess, api_key: str, conversation_id: str
) -> None:
    result = subprocess.run(
        ["node", "check.mjs", gateway.url + "/v1", api_key, conversation_id],
        cwd=vercel_ai,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["first"] == "[1 messages] My name is Ada."
    assert out["second"] == "[3 messages] What is my name?"  # only the new message was sent
    assert out["streamed"] == "[5 messages] Stream it."
    # each message reaches the upstream once: 3, then 4 + 3, then 8 + 3 (no 400 for a doubled tool call)
    assert out["loop"] == "[3 messages] tool result: sunny (Weather in Paris?)"
    assert out["again"] == "[7 messages] tool result: sunny (And in Rome?)"
    assert out["streamedLoop"] == "[11 messages] tool result: sunny (And in Oslo?)"
    calls = [r["body"]["messages"] for r in upstream_requests(upstream, api_key)]
    assert len(calls) == 9  # every upstream call was accepted
    turn = ["user", "assistant", "tool", "assistant"]
    assert [m["role"] for m in calls[-1]] == [*turn, *turn, *turn[:3]]
    # the stored copy of each call is what the upstream receives: spaced, as the upstream wrote it
    assert calls[-1][1]["tool_calls"][0]["function"]["arguments"] == '{"input": "Weather in Paris?"}'
