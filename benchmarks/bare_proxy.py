"""The baseline: a bare Starlette + httpx pass-through of /v1/chat/completions (no database, no parsing).

It is what "a proxy that adds nothing" costs: the request body and headers go to the upstream as they came,
with httpx's default AsyncClient (default pool and limits), and the reply comes back unchanged, streamed
when the upstream streams.

    python benchmarks/bare_proxy.py --port 8101 --upstream http://127.0.0.1:8100/v1
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

FORWARDED = ("authorization", "content-type")
RETURNED_SKIP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)


def create_bare_app(upstream: str) -> Starlette:
    """The pass-through app: one default httpx.AsyncClient, opened and closed by the lifespan."""
    clients: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as client:
            clients["upstream"] = client
            yield

    async def chat(request: Request) -> Response:
        client = clients["upstream"]
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        upstream_request = client.build_request(
            "POST", f"{upstream}/chat/completions", headers=headers, content=await request.body()
        )
        response = await client.send(upstream_request, stream=True)
        returned = {k: v for k, v in response.headers.items() if k not in RETURNED_SKIP}
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(
                response.aiter_raw(),
                response.status_code,
                returned,
                background=BackgroundTask(response.aclose),
            )
        body = await response.aread()
        await response.aclose()
        return Response(body, response.status_code, returned)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    """Serve the bare pass-through with uvicorn (uvloop and httptools when installed, like the gateway)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--upstream", default="http://127.0.0.1:8100/v1")
    args = parser.parse_args()
    uvicorn.run(
        create_bare_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
