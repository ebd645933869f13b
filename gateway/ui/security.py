"""The dashboard's browser-facing rules: security headers, cookies, and the checks a sign-in POST passes.

- Content-Security-Policy allows only the gateway's own script and stylesheet: no inline script or style, no
  event-handler attributes, nothing from another origin, no framing.
- The session cookie holds a random value (never the key), is HttpOnly and SameSite=Strict, lives under
  `/ui` only, expires, and is Secure whenever the request came over HTTPS.
- POSTs (sign-in, sign-out) must come from the dashboard itself: the Origin header (or, without one,
  Sec-Fetch-Site) must say same-origin, and the form's token must equal the CSRF cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "gateway_ui_session"
CSRF_COOKIE = "gateway_ui_csrf"
COOKIE_PATH = "/ui"
CSRF_MAX_AGE = 24 * 3600
MAX_COOKIE_CHARS = 128

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
PAGE_HEADERS = {**SECURITY_HEADERS, "cache-control": "no-store"}


def new_token() -> str:
    """A fresh random cookie value (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database stores for a session cookie: its hex SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def cookie_value(request: Request, name: str) -> str | None:
    """A cookie's value when it looks like one of ours (bounded, URL-safe), else None."""
    value = request.cookies.get(name)
    if not value or len(value) > MAX_COOKIE_CHARS or not value.isascii():
        return None
    return value


def is_https(request: Request) -> bool:
    """True when the browser reached the gateway over HTTPS (uvicorn applies proxy headers it trusts)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """Set one of the dashboard's cookies: HttpOnly, SameSite=Strict, path /ui, expiring."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    """Expire one of the dashboard's cookies now."""
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=is_https(request))


def same_origin(request: Request) -> bool:
    """True when the browser says the request comes from a page of this same host.

    Sec-Fetch-Site (set by the browser, no page can forge it) decides where present; otherwise the Origin
    header must name this host. A request with neither (not a browser) still needs the CSRF token.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    _, _, origin_host = origin.partition("://")
    return bool(host) and origin_host == host


def csrf_matches(request: Request, submitted: str | None) -> bool:
    """True when the form's token equals the CSRF cookie (which another site can neither read nor send)."""
    expected = cookie_value(request, CSRF_COOKIE)
    if expected is None or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "replace"))
