"""When a request asks for a stored turn again (pure part of safe retries)."""

from __future__ import annotations

import json
from typing import Any

from gateway.history import history_digest
from gateway.replays import Recorded, asks_again
from tests.helpers import user


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


HISTORY = [user("one"), assistant("re one")]
TURN = [user("two"), assistant("re two")]
DIGEST = history_digest([*HISTORY, *TURN])


def test_a_client_that_sends_only_new_messages() -> None:
    assert asks_again([user("two")], TURN, DIGEST)
    assert not asks_again([user("three")], TURN, DIGEST)
    assert not asks_again([user("two"), user("two")], TURN, DIGEST)


def test_a_client_that_resends_the_whole_history() -> None:
    assert asks_again([*HISTORY, user("two")], TURN, DIGEST)
    # the SDK's returned message objects carry extra null fields: still the same message
    returned = {"role": "assistant", "content": "re one", "refusal": None, "tool_calls": None}
    assert asks_again([user("one"), returned, user("two")], TURN, DIGEST)
    # another history before the same last message is another request
    assert not asks_again([user("zero"), assistant("re zero"), user("two")], TURN, DIGEST)
    # for an older turn (an Idempotency-Key) only the tail is compared
    assert asks_again([user("zero"), assistant("re zero"), user("two")], TURN, None)


def test_tool_results_and_empty_turns() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    turn = [result, assistant("it is 42")]
    digest = history_digest([user("q"), call, *turn])
    assert asks_again([result], turn, digest)
    assert asks_again([user("q"), call, result], turn, digest)
    assert not asks_again([user("q")], [assistant("only a reply")], None)


def test_recorded_response_renders_plain_and_stream() -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": assistant("hi"), "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    recorded = Recorded("conv", json.dumps(completion), 2, "req_1")
    headers, body = recorded.plain()
    assert json.loads(body) == completion
    assert headers["x-gateway-replayed"] == "true" and headers["x-conversation-id"] == "conv"
    assert headers["x-history-messages"] == "2" and headers["x-request-id"] == "req_1"
    for include_usage in (False, True):
        headers, events = recorded.stream(include_usage)
        assert headers["content-type"].startswith("text/event-stream")
        assert events[-1] == b"data: [DONE]\n\n"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "hi"
        assert (chunks[-1].get("usage") == completion["usage"]) is include_usage
