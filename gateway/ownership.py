"""Which proxied endpoints a gateway key may use, and which upstream objects it owns (pure).

With the upstream key held by the gateway, every caller shares one upstream account, so the gateway
decides what a key may reach. Every proxied path below `/v1` is one of:

- **stateless** (`models` read-only, `embeddings`, `moderations`, `images`, `audio`, `completions`):
  forwarded as is;
- **tracked** (files, uploads, batches, responses, vector stores, fine-tuning jobs, containers, stored chat
  completions, assistants, threads, videos): creating one records its id with the caller; any path naming
  an id answers 404 (like a missing one) unless the caller created it; lists show only the caller's own;
  ids named in a JSON body (`file_id`, `previous_response_id`, ...) must be the caller's too;
- **allowed** by the operator (`GATEWAY_PROXY_ALLOW` path prefixes): forwarded as is, shared by all keys;
- anything else: 403 `path_not_allowed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from gateway.errors import Forbidden, NotFound

STATELESS = ("embeddings", "moderations", "images", "audio", "completions")
# Collection path below /v1 -> the kind of object its POST creates.
TRACKED: dict[str, str] = {
    "files": "file",
    "uploads": "upload",
    "batches": "batch",
    "responses": "response",
    "vector_stores": "vector_store",
    "fine_tuning/jobs": "fine_tuning.job",
    "containers": "container",
    "chat/completions": "chat.completion",
    "assistants": "assistant",
    "threads": "thread",
    "videos": "video",
}
# Below a tracked collection but not tracked: `threads/runs` makes a thread the gateway cannot see created.
UNTRACKED = ("threads/runs",)
# Paths right below a tracked collection that are actions, not object ids.
ACTIONS: dict[str, frozenset[str]] = {"responses": frozenset({"input_tokens", "compact"})}
# Body keys that name upstream objects: the caller must own what they name.
REFERENCE_KEYS = frozenset(
    {
        "file_id",
        "file_ids",
        "input_file_id",
        "training_file",
        "validation_file",
        "previous_response_id",
        "response_id",
        "vector_store_id",
        "vector_store_ids",
        "container_id",
        "assistant_id",
        "thread_id",
        "conversation",
    }
)
# Answer keys naming objects the upstream made for an object the caller owns (a batch's output file).
DERIVED_KEYS = ("output_file_id", "error_file_id", "result_files")
_CONTAINER_ID = re.compile(r"cntr_[A-Za-z0-9_-]+")

Action = Literal["plain", "create", "list", "object"]


@dataclass(frozen=True)
class Access:
    """How one proxied request is handled in gateway-key mode."""

    action: Action
    kind: str = ""
    object_id: str | None = None


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def classify(method: str, path: str, allow: tuple[str, ...]) -> Access:
    """The handling of `method path` (path below /v1, no leading slash); 403 when a key may not use it."""
    if _under(path, "models") and method in ("GET", "HEAD"):
        return Access("plain")
    if any(_under(path, prefix) for prefix in STATELESS):
        return Access("plain")
    for collection, kind in TRACKED.items():
        if not _under(path, collection) or any(_under(path, prefix) for prefix in UNTRACKED):
            continue
        rest = path[len(collection) + 1 :]
        if not rest:
            if method == "POST":
                return Access("create", kind)
            if method in ("GET", "HEAD"):
                return Access("list", kind)
            return Access("plain", kind)
        first = rest.split("/", 1)[0]
        if first in ACTIONS.get(collection, ()):
            return Access("create", kind)
        return Access("object", kind, first)
    if any(_under(path, prefix) for prefix in allow):
        return Access("plain")
    raise Forbidden(
        f"/v1/{path} is not available with a gateway key: it is neither stateless nor tracked per key, and "
        "all keys share one upstream account. The operator can allow it with GATEWAY_PROXY_ALLOW.",
        code="path_not_allowed",
    )


def not_found(object_id: str, param: str = "id") -> NotFound:
    """The 404 for an id the caller does not own, the same whether it exists or not."""
    return NotFound(f"No such object: '{object_id[:200]}'.", param=param)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))
    elif isinstance(value, dict) and isinstance(value.get("id"), str):
        yield value["id"]


def references(body: Any) -> list[tuple[str, str]]:
    """(key, id) of every upstream object a JSON body names, at any depth (iteratively: no recursion)."""
    found: list[tuple[str, str]] = []
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in REFERENCE_KEYS:
                    found.extend((key, ref) for ref in _strings(value))
                elif key == "container" and isinstance(value, str) and _CONTAINER_ID.fullmatch(value):
                    found.append((key, value))
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, dict | list))
    return found


# Names the gateway's own Responses API resolves itself (its stored responses and conversations).
GATEWAY_REFERENCES = frozenset({"previous_response_id", "response_id", "conversation"})


def upstream_references(body: Any) -> list[tuple[str, str]]:
    """`references` but those the gateway's own Responses API resolves: the ids of upstream objects."""
    return [(key, ref) for key, ref in references(body) if key not in GATEWAY_REFERENCES]


def message_file_ids(messages: Any) -> list[tuple[str, str]]:
    """(param, id) of the uploaded files named by chat messages (`{"type": "file", "file": {...}}` parts)."""
    found: list[tuple[str, str]] = []
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            file = part.get("file") if isinstance(part, dict) else None
            if isinstance(file, dict) and isinstance(file.get("file_id"), str):
                found.append((f"messages[{index}].content", file["file_id"]))
    return found


def made_ids(answer: Any, *, include_own_id: bool) -> list[str]:
    """Ids an answer hands the caller: its own `id` (a creation), a nested `file`, derived output files."""
    if not isinstance(answer, dict):
        return []
    ids: list[str] = []
    if include_own_id and isinstance(answer.get("id"), str):
        ids.append(answer["id"])
    nested = answer.get("file")
    if isinstance(nested, dict) and isinstance(nested.get("id"), str):
        ids.append(nested["id"])
    for key in DERIVED_KEYS:
        ids.extend(_strings(answer.get(key)) if key == "result_files" else _strings_only(answer.get(key)))
    return ids


def _strings_only(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else []


def list_ids(answer: Any) -> list[str]:
    """The ids of a list answer's `data` items."""
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        return []
    items = answer["data"]
    return [item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)]


def filter_list(answer: dict[str, Any], owned: set[str]) -> dict[str, Any]:
    """The list answer with only the caller's items; `first_id`/`last_id` (when present) follow the data."""
    data = [item for item in answer["data"] if isinstance(item, dict) and item.get("id") in owned]
    out = {**answer, "data": data}
    for key, index in (("first_id", 0), ("last_id", -1)):
        if key in answer:
            out[key] = data[index]["id"] if data else None
    return out
