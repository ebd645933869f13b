"""The dashboard's routes under /ui: the pages, the static files, and its 404 page."""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.ui import conversations, overview, security, signin, views
from gateway.ui.signin import signed_in

ASSETS = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}


@functools.cache
def asset(name: str) -> bytes:
    """A static file of the package (read once per process)."""
    return resources.files("gateway.ui").joinpath("static", name).read_bytes()


async def static(request: Request) -> Response:
    """GET /ui/static/{name}: the dashboard's stylesheet or script (no data of anyone's in them)."""
    name = request.path_params["name"]
    if name not in ASSETS:
        return not_found(request)
    headers = {**security.SECURITY_HEADERS, "cache-control": "public, max-age=300"}
    return Response(asset(name), media_type=ASSETS[name], headers=headers)


def not_found(_request: Request) -> Response:
    """The dashboard's 404 page."""
    return signin.page(views.not_found_page("There is no such page."), 404)


async def unknown(request: Request) -> Response:
    """Any other path under /ui."""
    return not_found(request)


ROUTES = [
    Route("/ui", signin.home, methods=["GET"]),
    Route("/ui/", signin.home, methods=["GET"]),
    Route("/ui/sign-in", signin.sign_in_form, methods=["GET"]),
    Route("/ui/sign-in", signin.sign_in, methods=["POST"]),
    Route("/ui/sign-out", signin.sign_out, methods=["POST"]),
    Route("/ui/overview", signed_in(overview.overview), methods=["GET"]),
    Route("/ui/conversations", signed_in(conversations.conversation_list), methods=["GET"]),
    Route("/ui/conversations/{conversation_id}", signed_in(conversations.conversation_page), methods=["GET"]),
    Route("/ui/keys", signed_in(overview.keys), methods=["GET"]),
    Route("/ui/static/{name}", static, methods=["GET"]),
    Route("/ui/{rest:path}", unknown, methods=["GET"]),
]
