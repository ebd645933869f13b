"""Signing in and out of the dashboard, and who the signed-in viewer is on every page.

A sign-in checks the key exactly like the API does (the admin key, or a caller the Authenticator accepts)
and stores a session row: the SHA-256 of a random cookie value, the identity (the SHA-256 of the key) and
an expiry. The key itself is never stored, never put in a cookie and never in a URL (the form is a POST).
Each page looks the session up again, so sign-out, expiry, a revoked key or a changed admin key end it.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.common import Services, read_limited_body, services
from gateway.errors import AuthenticationFailed, ClientError
from gateway.identity import caller_identity
from gateway.store.keys import find_active_key
from gateway.store.ui_sessions import delete_session, find_session, insert_session
from gateway.store.usage import has_calls
from gateway.ui import security, views

SIGN_IN_PATH = "/ui/sign-in"
HOME_PATH = "/ui/overview"
MAX_FORM_BYTES = 8192
MAX_KEY_CHARS = 4096
NO_CALLS_YET = (
    "This gateway forwards each caller's own API key to the upstream, which alone can check it: a key can "
    "sign in here once it has made a call through the gateway."
)


@dataclass(frozen=True)
class Viewer:
    """Who is looking: an identity, whether it is the admin, its key name, the CSRF token of its forms."""

    identity: str
    admin: bool
    key_name: str | None
    csrf: str

    @property
    def owner(self) -> str | None:
        """The owner to scope queries to: the caller's identity, or None (everyone) for the admin."""
        return None if self.admin else self.identity


def admin_identity(svc: Services) -> str | None:
    """The identity of the admin key, when one is configured."""
    return caller_identity(svc.auth.admin_key) if svc.auth.admin_key else None


def _is_admin(svc: Services, identity: str) -> bool:
    expected = admin_identity(svc)
    return expected is not None and hmac.compare_digest(identity, expected)


async def current_viewer(request: Request) -> Viewer | None:
    """The viewer of a still valid session cookie, or None (no cookie, unknown, expired, key revoked)."""
    token = security.cookie_value(request, security.SESSION_COOKIE)
    if token is None:
        return None
    svc = services(request)
    digest = security.token_hash(token)

    def unit(connection: Connection) -> Viewer | None:
        identity = find_session(connection, digest, time.time())
        if identity is None:
            return None
        if _is_admin(svc, identity):
            return Viewer(identity, True, None, _csrf(request))
        key_name = None
        if svc.auth.gateway_keys:
            key = find_active_key(connection, identity)
            key_name = key.name if key is not None else None
            valid = key is not None  # else revoked since the sign-in
        else:
            valid = has_calls(connection, identity)  # else a former admin key's session
        if not valid:
            delete_session(connection, digest)
            return None
        return Viewer(identity, False, key_name, _csrf(request))

    return await svc.db.run(unit)


def _csrf(request: Request) -> str:
    return security.cookie_value(request, security.CSRF_COOKIE) or security.new_token()


def _with_csrf(response: Response, request: Request, csrf: str) -> Response:
    """Keep the CSRF cookie set (a page renders forms that carry it)."""
    if security.cookie_value(request, security.CSRF_COOKIE) != csrf:
        security.set_cookie(response, request, security.CSRF_COOKIE, csrf, security.CSRF_MAX_AGE)
    return response


def page(body: bytes, status: int = 200) -> Response:
    """An HTML page with the dashboard's security headers."""
    media_type = "text/html; charset=utf-8"
    return Response(body, status_code=status, media_type=media_type, headers=security.PAGE_HEADERS)


def redirect(path: str) -> Response:
    """A 303 to another dashboard page (never echoes a request value into the location)."""
    return RedirectResponse(path, status_code=303, headers=security.PAGE_HEADERS)


PageHandler = Callable[[Request, Viewer], Awaitable[Response]]


def signed_in(handler: PageHandler) -> Callable[[Request], Awaitable[Response]]:
    """Run a page handler for the signed-in viewer; without a session, go to the sign-in page."""

    async def endpoint(request: Request) -> Response:
        viewer = await current_viewer(request)
        if viewer is None:
            response = redirect(SIGN_IN_PATH)
            if security.cookie_value(request, security.SESSION_COOKIE) is not None:
                security.clear_cookie(response, request, security.SESSION_COOKIE)
            return response
        return _with_csrf(await handler(request, viewer), request, viewer.csrf)

    return endpoint


async def home(request: Request) -> Response:
    """GET /ui: the overview when signed in, else the sign-in page."""
    return redirect(HOME_PATH if await current_viewer(request) is not None else SIGN_IN_PATH)


async def sign_in_form(request: Request) -> Response:
    """GET /ui/sign-in: the form (a query string is ignored: a key never travels in a URL)."""
    if await current_viewer(request) is not None:
        return redirect(HOME_PATH)
    csrf = _csrf(request)
    return _with_csrf(page(views.sign_in_page(csrf, None)), request, csrf)


def _refused(request: Request, message: str, status: int) -> Response:
    csrf = _csrf(request)
    return _with_csrf(page(views.sign_in_page(csrf, message), status), request, csrf)


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    raw = await read_limited_body(request, MAX_FORM_BYTES)
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    return {name: values[0] for name, values in fields.items() if values}


async def sign_in(request: Request) -> Response:
    """POST /ui/sign-in (form: key, csrf): check the key, store a session, set the cookie."""
    if not security.same_origin(request):
        return _refused(request, "This sign-in did not come from the dashboard's own page.", 403)
    try:
        form = await _form(request)
    except (ClientError, ValueError):
        return _refused(request, "The sign-in form could not be read.", 400)
    if not security.csrf_matches(request, form.get("csrf")):
        return _refused(request, "The sign-in form has expired: please try again.", 403)
    key = form.get("key", "").strip()
    svc = services(request)
    if not key or len(key) > MAX_KEY_CHARS:
        return _refused(request, "Enter an API key.", 400)
    admin = svc.auth.is_admin(key)
    try:
        identity = caller_identity(key) if admin else (await svc.auth.identify(key)).identity
    except AuthenticationFailed:
        return _refused(request, "That key was not accepted.", 401)
    token = security.new_token()
    now = time.time()
    lifetime = svc.settings.ui_session_seconds

    def unit(connection: Connection) -> bool:
        # Pass-through: only the upstream can judge a token, so one signs in once it has made a call (a
        # token the upstream refused records nothing); random tokens cannot fill the sessions table.
        if not admin and not svc.auth.gateway_keys and not has_calls(connection, identity):
            return False
        insert_session(connection, security.token_hash(token), identity, now, now + lifetime)
        return True

    if not await svc.db.run(unit):
        return _refused(request, NO_CALLS_YET, 401)
    response = redirect(HOME_PATH)
    security.set_cookie(response, request, security.SESSION_COOKIE, token, max(1, int(lifetime)))
    return response


async def sign_out(request: Request) -> Response:
    """POST /ui/sign-out (form: csrf): delete the session row and the cookie."""
    form = await _form(request) if security.same_origin(request) else {}
    if not security.csrf_matches(request, form.get("csrf")):
        return redirect(HOME_PATH)
    token = security.cookie_value(request, security.SESSION_COOKIE)
    if token is not None:
        forget = functools.partial(delete_session, token_hash=security.token_hash(token))
        await services(request).db.run(forget)
    response = redirect(SIGN_IN_PATH)
    security.clear_cookie(response, request, security.SESSION_COOKIE)
    return response
