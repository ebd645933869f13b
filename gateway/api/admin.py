"""The admin API (bearer = GATEWAY_ADMIN_KEY): /admin/keys list, create, revoke; and `require_admin`."""

from __future__ import annotations

import functools
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.common import exact_json_response, read_limited_body, services
from gateway.chat_request import parse_json_object
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.identity import bearer_token, caller_identity
from gateway.keys import MAX_BUDGET_USD, new_secret, validate_key_name
from gateway.money import parse_usd
from gateway.store.keys import insert_key, list_keys, revoke_key
from gateway.views import key_object

CREATE_FIELDS = frozenset({"name", "budget_usd"})


async def require_admin(request: Request) -> None:
    """Let the admin key through; 401 for no or an invalid caller token, 403 for any other caller."""
    svc = services(request)
    token = bearer_token(request.headers.get("authorization"))
    if svc.auth.is_admin(token):
        return
    await svc.auth.identify(token)  # 401 unless this is a valid caller
    if svc.auth.admin_key is None:
        raise Forbidden("Admin endpoints are disabled: start the gateway with GATEWAY_ADMIN_KEY set.")
    raise Forbidden("This endpoint needs the admin key (GATEWAY_ADMIN_KEY) as the bearer token.")


async def list_all(request: Request) -> Response:
    """GET /admin/keys: every key, oldest first, with its spend (never a secret)."""
    await require_admin(request)
    keys = await services(request).db.run(list_keys)
    return exact_json_response({"object": "list", "data": [key_object(key) for key in keys]})


def _create_fields(body: dict[str, Any]) -> tuple[str, int | None]:
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0])
    if "name" not in body:
        raise InvalidRequest("Missing required parameter: 'name'.", param="name")
    budget = body.get("budget_usd")
    if isinstance(budget, str):  # JSON has numbers; a numeric string is only for the CLI's --budget-usd
        raise InvalidRequest(
            "Invalid type for 'budget_usd': expected a number.", param="budget_usd", code="invalid_type"
        )
    return validate_key_name(body["name"]), parse_usd(budget, "budget_usd", maximum=MAX_BUDGET_USD)


async def create(request: Request) -> Response:
    """POST /admin/keys {name, budget_usd?}: the new key, with its secret (shown this once)."""
    await require_admin(request)
    svc = services(request)
    body = parse_json_object(await read_limited_body(request, svc.settings.max_body_bytes))
    name, budget = _create_fields(body)
    secret = new_secret()
    key = await svc.db.run(
        functools.partial(
            insert_key, name=name, secret_hash=caller_identity(secret), budget_pusd=budget, now=time.time()
        )
    )
    return exact_json_response(key_object(key, secret))


async def revoke(request: Request) -> Response:
    """DELETE /admin/keys/{name}: revoke the key (idempotent); its caller is refused from then on."""
    await require_admin(request)
    svc = services(request)
    name = request.path_params["name"]
    missing = NotFound(f"No key found with name '{name[:64]}'.", param="name")
    try:
        validate_key_name(name)
    except InvalidRequest:
        raise missing from None
    key = await svc.db.run(functools.partial(revoke_key, name=name, now=time.time()))
    if key is None:
        raise missing
    svc.auth.forget(key.identity)
    return exact_json_response(key_object(key))
