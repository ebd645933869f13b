"""A freshly started server is measured only once its start-up work in the background is done."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import benchmark_module

# Answers at once, then works for a while in a thread (as the gateway builds its tokenizer), then notes it.
BUSY_AFTER_START = """
import http.server, sys, threading, time
def work():
    end = time.process_time() + 0.8
    while time.process_time() < end:
        pass
    open(sys.argv[2], "w").close()
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=work, daemon=True).start()
server.serve_forever()
"""


def test_settle_waits_for_the_work_a_server_does_after_it_answers(tmp_path: Path) -> None:
    processes = benchmark_module("processes")
    done = tmp_path / "done"
    port = processes.free_port()
    argv = [sys.executable, "-c", BUSY_AFTER_START, str(port), str(done)]
    server = processes.Server("busy", argv, port, health_path="/")
    with processes.running([server]):
        server.start(tmp_path)
        assert not done.exists()  # it answered while still at work
        waited = server.settle(timeout=60.0)
        assert done.exists(), waited
        assert server.settle(timeout=60.0) < 1.0  # idle now: one window
