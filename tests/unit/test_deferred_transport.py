"""The upstream transport's library (aiohttp) is loaded after start-up, and a request that comes first waits
for it: what a module loads shows only in a new interpreter."""

from __future__ import annotations

from tests.helpers import fresh_python

SCRIPT = """
import asyncio, sys
import httpx
from gateway.upstream import translate_errors
from gateway.upstream_transport import AiohttpTransport
import gateway.app  # everything a serving process imports before its port is bound

async def answer(reader, writer):
    await reader.readuntil(b"\\r\\n\\r\\n")
    writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok")
    await writer.drain()
    writer.close()

async def main():
    print("before", "aiohttp" in sys.modules)
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        response = await client.get(f"http://127.0.0.1:{port}/v1/models")
        print("answer", response.status_code, response.text)
        server.close()
        await server.wait_closed()
        try:
            with translate_errors():
                await client.get(f"http://127.0.0.1:{port}/v1/models")
        except Exception as exc:
            print("refused", type(exc).__name__)
    print("after", "aiohttp" in sys.modules)

asyncio.run(main())
"""


def test_aiohttp_loads_at_the_first_request_when_no_warm_up_has_loaded_it() -> None:
    done = fresh_python(SCRIPT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "before False",
        "answer 200 ok",
        "refused UpstreamUnreachable",
        "after True",
    ]
