"""Pure translation of a Responses-API request body into the parts of a chat-completions request.

Every field of `POST /v1/responses` is either translated (input items to messages, function tools,
text.format to response_format, ...), echoed on the response object only (metadata, truncation, ...),
or refused with a 400 naming it when honouring it is beyond a chat-completions upstream (non-function
tools, background mode, stored prompts, moderation). `null` equals absent, as the SDKs send explicit nulls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

from gateway.conversation_fields import check_metadata
from gateway.errors import InvalidRequest
from gateway.identity import CONVERSATION_ID_PATTERN

Message = dict[str, Any]

# Passed on to the chat request under the same name when present.
PASSED_ON = ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key", "service_tier")
PASSED_ON_STRINGS = frozenset({"user", "safety_identifier", "prompt_cache_key", "service_tier"})
# Accepted and echoed on the response, with no chat-completions counterpart.
IGNORED = (
    "include",
    "truncation",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
    "prompt_cache_retention",
    "context_management",
    "prompt_cache_options",
    "background_options",
    "access_programs",
    "image",
)
# Fields that would change what the caller gets and that a chat-completions upstream cannot honour.
REFUSED = ("prompt", "moderation")
INPUT_ROLES = frozenset({"user", "system", "developer", "assistant"})
TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated `POST /v1/responses` body, split into what the chat request and the response need."""

    model: str
    messages: list[Message]
    instructions: str | None
    previous_response_id: str | None
    conversation_id: str | None
    store: bool
    stream: bool
    chat_fields: dict[str, Any]
    echo: dict[str, Any] = field(default_factory=dict)

    def chat_body(self, messages: list[Message]) -> dict[str, Any]:
        """The chat-completions body with these messages (usage always asked for on a stream)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.chat_fields}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def instruction_messages(self) -> list[Message] | None:
        """The instructions as the system message they become for this response only."""
        if self.instructions is None:
            return None
        return [{"role": "system", "content": self.instructions}]


def _invalid(message: str, param: str, code: str = "invalid_value") -> NoReturn:
    raise InvalidRequest(message, param=param, code=code)


def _wrong_type(param: str, expected: str) -> NoReturn:
    _invalid(f"Invalid type for '{param}': expected {expected}.", param, "invalid_type")


def _missing(param: str) -> NoReturn:
    _invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _string(body: dict[str, Any], key: str, param: str | None = None) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        _wrong_type(param or key, "a string")
    return value


def _number(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        _wrong_type(key, "a number")


def _boolean(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        _wrong_type(key, "a boolean")
    return value


def _input_part(part: Any, param: str) -> Any:
    """A user/system/developer content part as its chat-completions part."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        _wrong_type(param, "an object with a 'type'")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        if not isinstance(part.get("text"), str):
            _wrong_type(f"{param}.text", "a string")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            _invalid(
                "Only 'input_image' parts with an 'image_url' (a URL or a data URL) can be sent to a "
                "chat-completions upstream; 'file_id' images are not supported.",
                f"{param}.image_url",
                "unsupported_value",
            )
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}}
    if kind == "input_file":
        keys = ("file_id", "filename", "file_data")
        return {"type": "file", "file": {key: part[key] for key in keys if part.get(key) is not None}}
    if kind == "input_audio":
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    _invalid(f"Unsupported content part type '{kind}'.", f"{param}.type", "unsupported_value")


def _content(content: Any, role: str, param: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        _wrong_type(param, "a string or an array of content parts")
    if role == "assistant":
        return _assistant_text(content, param)
    parts = [_input_part(part, f"{param}[{index}]") for index, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]  # one text part equals a string: the same stored message either way
    return parts


def _assistant_text(content: list[Any], param: str) -> str:
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            _wrong_type(where, "an object with a 'type'")
        if part.get("type") in ("output_text", "input_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            _invalid("Assistant content parts must be 'output_text' or 'refusal'.", f"{where}.type")
    return "".join(texts)


def _message(item: dict[str, Any], param: str) -> Message:
    role = item.get("role")
    if role is None:
        _missing(f"{param}.role")
    if role not in INPUT_ROLES:
        _invalid(
            f"Invalid value for '{param}.role': expected one of {', '.join(sorted(INPUT_ROLES))}.",
            f"{param}.role",
        )
    if item.get("content") is None:
        _missing(f"{param}.content")
    return {"role": role, "content": _content(item["content"], role, f"{param}.content")}


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    for key in ("call_id", "name", "arguments"):
        if item.get(key) is None:
            _missing(f"{param}.{key}")
        _string(item, key, f"{param}.{key}")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _tool_output(item: dict[str, Any], param: str) -> Message:
    if item.get("call_id") is None:
        _missing(f"{param}.call_id")
    _string(item, "call_id", f"{param}.call_id")
    output = item.get("output")
    if output is None:
        _missing(f"{param}.output")
    if not isinstance(output, str):
        if not isinstance(output, list):
            _wrong_type(f"{param}.output", "a string or an array of content parts")
        output = [_input_part(part, f"{param}.output[{index}]") for index, part in enumerate(output)]
        if all(part["type"] == "text" for part in output):
            output = "".join(part["text"] for part in output)
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def input_messages(value: Any) -> list[Message]:
    """The chat messages of a Responses `input`: a string, or a list of message and function items.

    Consecutive `function_call` items join the assistant message before them (or start one), as a
    chat completion carries an assistant's text and its tool calls in one message.
    """
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        _wrong_type("input", "a string or an array of input items")
    messages: list[Message] = []
    for index, item in enumerate(value):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            _wrong_type(param, "an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, param))
        elif kind == "function_call":
            call = _function_call(item, param)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not _answered(messages):
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(_tool_output(item, param))
        elif kind == "reasoning":
            continue  # reasoning a chat upstream can neither read nor continue; it changes no answer
        elif kind is None:
            _missing(f"{param}.type")
        else:
            _invalid(
                f"Input items of type '{kind}' are not supported: this gateway translates the Responses "
                "API to chat completions, which carry messages, function calls and their outputs only.",
                f"{param}.type",
                "unsupported_value",
            )
    return messages


def _answered(messages: list[Message]) -> bool:
    """False while the last message is the assistant's (tool calls may still join it)."""
    return bool(messages[-1]["role"] != "assistant")


def chat_tools(value: Any) -> list[dict[str, Any]]:
    """Function tools in the chat-completions shape; any other tool type is a 400 naming it."""
    if not isinstance(value, list):
        _wrong_type("tools", "an array")
    tools = []
    for index, tool in enumerate(value):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            _wrong_type(param, "an object")
        if tool.get("type") != "function":
            _invalid(
                f"Tool type '{tool.get('type')}' is not supported: this gateway translates the Responses API "
                "to chat completions, which only take 'function' tools.",
                f"{param}.type",
                "unsupported_value",
            )
        if not isinstance(tool.get("name"), str):
            _missing(f"{param}.name")
        function = {
            key: tool[key]
            for key in ("name", "description", "parameters", "strict")
            if tool.get(key) is not None
        }
        tools.append({"type": "function", "function": function})
    return tools


def chat_tool_choice(value: Any) -> Any:
    """`tool_choice` in the chat-completions shape (modes, one function, or allowed functions)."""
    if isinstance(value, str):
        if value not in TOOL_CHOICE_MODES:
            _invalid(f"Invalid value for 'tool_choice': {value!r}.", "tool_choice")
        return value
    if not isinstance(value, dict):
        _wrong_type("tool_choice", "a string or an object")
    kind = value.get("type")
    if kind == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    if kind == "allowed_tools" and isinstance(value.get("tools"), list):
        allowed = []
        for tool in value["tools"]:
            if (
                not isinstance(tool, dict)
                or tool.get("type") != "function"
                or not isinstance(tool.get("name"), str)
            ):
                _invalid(
                    "Only function tools can be allowed tools.", "tool_choice.tools", "unsupported_value"
                )
            allowed.append({"type": "function", "function": {"name": tool["name"]}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": value.get("mode") or "auto", "tools": allowed},
        }
    _invalid(
        f"tool_choice of type '{kind}' is not supported: only 'auto', 'none', 'required', a function "
        "or allowed function tools translate to chat completions.",
        "tool_choice",
        "unsupported_value",
    )


def response_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as the chat-completions `response_format` (None for plain text)."""
    if not isinstance(text, dict):
        _wrong_type("text", "an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        _wrong_type("text.format", "an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str):
            _missing("text.format.name")
        if not isinstance(fmt.get("schema"), dict):
            _missing("text.format.schema")
        keys = ("name", "schema", "strict", "description")
        return {
            "type": "json_schema",
            "json_schema": {key: fmt[key] for key in keys if fmt.get(key) is not None},
        }
    _invalid(f"Invalid value for 'text.format.type': {kind!r}.", "text.format.type")


def _conversation_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if value is None:
            _missing("conversation.id")
    if not isinstance(value, str):
        _wrong_type("conversation", "a string or an object with an 'id'")
    if CONVERSATION_ID_PATTERN.fullmatch(value) is None:
        _invalid(
            "A conversation id is 1-128 characters of letters, digits, '.', '_', ':' or '-'.",
            "conversation",
            "invalid_conversation_id",
        )
    return value


def _chat_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions fields other than model, messages and stream."""
    fields: dict[str, Any] = {}
    for key in PASSED_ON:
        (_string if key in PASSED_ON_STRINGS else _number)(body, key)
        if body.get(key) is not None:
            fields[key] = body[key]
    if body.get("tools") is not None:
        tools = chat_tools(body["tools"])
        if tools:
            fields["tools"] = tools
            if _boolean(body, "parallel_tool_calls") is not None:
                fields["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        fields["tool_choice"] = chat_tool_choice(body["tool_choice"])
    maximum = body.get("max_output_tokens")
    if maximum is not None:
        if isinstance(maximum, bool) or not isinstance(maximum, int):
            _wrong_type("max_output_tokens", "an integer")
        fields["max_completion_tokens"] = maximum
    if body.get("text") is not None:
        fmt = response_format(body["text"])
        if fmt is not None:
            fields["response_format"] = fmt
        if body["text"].get("verbosity") is not None:
            fields["verbosity"] = body["text"]["verbosity"]
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            _wrong_type("reasoning", "an object")
        if reasoning.get("effort") is not None:
            fields["reasoning_effort"] = reasoning["effort"]
    return fields


def _check_refused(body: dict[str, Any]) -> None:
    if body.get("background") is True:
        _invalid(
            "background: true is not supported: this gateway answers each response in the request "
            "that creates it.",
            "background",
            "unsupported_value",
        )
    for key in REFUSED:
        if body.get(key) is not None:
            _invalid(
                f"'{key}' is not supported: this gateway translates the Responses API to chat completions.",
                key,
                "unsupported_parameter",
            )


def parse_request(raw_body: dict[str, Any]) -> ResponsesRequest:
    """Validate a `POST /v1/responses` body and split it; a 400 names the first field that is wrong."""
    body = {key: value for key, value in raw_body.items() if value is not None}
    model = body.get("model")
    if model is None:
        _missing("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        _wrong_type("model", "a non-empty string of at most 200 characters")
    _check_refused(body)
    previous = _string(body, "previous_response_id")
    conversation = _conversation_id(body.get("conversation"))
    if previous is not None and conversation is not None:
        _invalid(
            "Mutually exclusive parameters: 'previous_response_id' and 'conversation' cannot both be set.",
            "previous_response_id",
            "mutually_exclusive_parameters",
        )
    if body.get("input") is None and previous is None and conversation is None:
        _missing("input")
    messages = input_messages(body["input"]) if body.get("input") is not None else []
    check_metadata(body.get("metadata"))
    echo = {
        key: body[key]
        for key in (*IGNORED, "metadata", "text", "reasoning", "tools", "tool_choice")
        if key in body
    }
    for key in ("parallel_tool_calls", "max_output_tokens", *PASSED_ON):
        if key in body:
            echo[key] = body[key]
    return ResponsesRequest(
        model=model,
        messages=messages,
        instructions=_string(body, "instructions"),
        previous_response_id=previous,
        conversation_id=conversation,
        store=_boolean(body, "store") is not False,
        stream=_boolean(body, "stream") is True,
        chat_fields=_chat_fields(body),
        echo=echo,
    )
