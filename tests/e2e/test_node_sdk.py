"""The official Node SDK (`openai` on npm) against the gateway: turns, streams, memory, error events."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.servers import ServerProcess

SCRIPT = r"""
import OpenAI from "openai";
const [baseURL, apiKey, conversation] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0,
  defaultHeaders: { "X-Conversation-Id": conversation } });
const model = "gpt-4o-mini";
const out = {};
const { data: first, response } = await client.chat.completions
  .create({ model, messages: [{ role: "user", content: "hello node" }] }).withResponse();
out.first = first.choices[0].message.content;
out.header = response.headers.get("x-conversation-id");
const stream = await client.chat.completions.create({ model, stream: true,
  messages: [{ role: "user", content: "stream node" }] });
let text = "", usage = 0, finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage += 1;
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? "";
    finish = chunk.choices[0].finish_reason ?? finish;
  }
}
out.stream = text; out.usageChunks = usage; out.finish = finish;
try {
  const broken = await client.chat.completions.create({ model, stream: true,
    messages: [{ role: "user", content: "FAULT:cut" }] });
  for await (const chunk of broken) {
    if (chunk.choices.length && chunk.choices[0].finish_reason) out.cutFinish = true;
  }
  out.cut = "no error";
} catch (error) {
  out.cut = error.constructor.name;
}
const third = await client.chat.completions.create({ model, messages: [{ role: "user", content: "third" }] });
out.third = third.choices[0].message.content;
console.log(JSON.stringify(out));
"""


def test_node_sdk_turns_stream_memory_and_error_event(
    node_openai: Path, gateway: ServerProcess, api_key: str, conversation_id: str
) -> None:
    script = node_openai / "check.mjs"
    script.write_text(SCRIPT)
    result = subprocess.run(
        ["node", str(script), gateway.url + "/v1", api_key, conversation_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["first"] == "[1 messages] hello node"
    assert out["header"] == conversation_id
    assert out["stream"] == "[3 messages] stream node" and out["usageChunks"] == 0 and out["finish"] == "stop"
    assert out["cut"] == "APIError" and "cutFinish" not in out
    assert out["third"] == "[5 messages] third"
