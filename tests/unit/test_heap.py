"""gateway/heap.py's memory policy applies in a serving process only, never in a host that embeds the app."""

from __future__ import annotations

import gc

import pytest

from gateway import heap
from tests.helpers import fresh_python


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(heap, "_serving", False)
    made: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *args: made.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: made.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: made.append("unfreeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *limits: made.append(f"threshold{limits}"))
    monkeypatch.setattr(heap, "_malloc_trim", lambda: lambda pad: made.append(f"trim({pad})") or 1)
    return made


def test_an_embedding_process_keeps_its_heap_as_it_is(calls: list[str]) -> None:
    heap.release()
    heap.freeze()
    heap.unfreeze()
    assert calls == []


def test_a_serving_process_collects_trims_and_freezes(calls: list[str]) -> None:
    heap.serving()
    heap.release()
    heap.freeze()
    heap.unfreeze()
    _, *older = gc.get_threshold()
    young = f"threshold{(heap.SERVING_GEN0_THRESHOLD, *older)}"
    assert calls == ["collect", "trim(0)", "freeze", young, "unfreeze"]


def test_gateway_serve_applies_the_policy() -> None:
    script = (
        "from gateway import heap\n"
        "from gateway.cli.serve import keep_process_small\n"
        "assert not heap._serving\n"
        "keep_process_small()\n"
        "assert heap._serving\n"
    )
    done = fresh_python(script)
    assert done.returncode == 0, done.stderr
