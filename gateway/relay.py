"""Sans-I/O relay of a chat stream: fed upstream bytes, it says what the client gets now and, at the end,
what the stream amounted to.

The machine holds no socket and no clock: `TurnService` reads the upstream, feeds each chunk, sends what
`feed` returns, and stores the turn (or logs the failure) from `outcome()`. Decoding a chunk's events is
CPU work proportional to `pending + len(chunk)` bytes (no event it completes can be longer), so the shell
runs `feed` in a worker thread above offload.THREAD_THRESHOLD (see offload.py), as for any big input.

The client sees the upstream's bytes unchanged, except:
- the chunk carrying a finish_reason, and anything after it, is held back until the turn is stored, then
  sent with [DONE] (`StreamFinished.held`), so a client never sees a finished reply the gateway lost;
- the usage-only chunk is dropped when the gateway asked for it and the client did not (`hide_usage`);
- an upstream error event goes out as a plain `data:` event (never `event: error`), nothing held after it;
- a failure (size limit, an event that is not JSON, a malformed chunk, no [DONE]) sends nothing more of
  the chunk that caused it: the shell ends the stream with the failure's error event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import (
    GatewayError,
    UpstreamErrorEvent,
    UpstreamProtocolError,
    UpstreamStreamBroken,
)
from gateway.sse import (
    MalformedChunk,
    SseSplitter,
    StreamAssembler,
    data_only,
    error_event,
    has_finish_reason,
    is_usage_only,
)


@dataclass(frozen=True)
class StreamFailure:
    """Why a stream ended without a stored turn: the request log's status and error, the client's event."""

    status: int
    message: str
    error_type: str = "server_error"
    code: str | None = None

    @classmethod
    def of(cls, error: GatewayError) -> StreamFailure:
        """The failure a gateway error stands for (its status, message, type and code)."""
        return cls(error.status_code, str(error), error.error_type, error.code)

    def event(self) -> bytes:
        """The `data:` error event that ends the client's stream."""
        return error_event(self.message, self.error_type, self.code)


@dataclass(frozen=True)
class StreamFinished:
    """A stream that reached [DONE]: the bytes held back for the end, and the reply it assembled."""

    held: bytes
    completion: dict[str, Any]  # the chat.completion a non-streamed request would have received
    message: dict[str, Any]  # choice 0's assistant message
    generated: str  # every generated text, to estimate the completion when no usage came


@dataclass(frozen=True)
class StreamFailed:
    """A stream that failed (or was abandoned): why, and what it reported before (for the request log)."""

    failure: StreamFailure
    reported: dict[str, Any]  # the stream's `usage` and `model` so far
    generated: str


StreamOutcome = StreamFinished | StreamFailed


class StreamRelay:
    """Feed upstream bytes; get bytes for the client; at the end, what happened."""

    def __init__(self, *, max_bytes: int, hide_usage: bool) -> None:
        self.max_bytes = max_bytes
        self.hide_usage = hide_usage  # the gateway asked for usage the client did not ask for
        self.assembler = StreamAssembler()
        self._splitter = SseSplitter()
        self._held: list[bytes] = []
        self._size = 0
        self._finished = False
        self._failure: StreamFailure | None = None

    @property
    def done(self) -> bool:
        """True once [DONE] or a failure arrived: nothing more is read from the upstream."""
        return self._finished or self._failure is not None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete event waiting for the rest (the next feed decodes at most this more)."""
        return len(self._splitter.buffer)

    def feed(self, chunk: bytes) -> bytes:
        """Take the next upstream bytes; return what the client gets now (possibly nothing)."""
        if self.done:
            return b""
        self._size += len(chunk)
        if self._size > self.max_bytes:
            self.fail(
                StreamFailure.of(
                    UpstreamProtocolError(
                        f"The upstream stream exceeded the size limit of {self.max_bytes} bytes "
                        "(GATEWAY_MAX_RESPONSE_BYTES)."
                    )
                )
            )
            return b""
        out: list[bytes] = []
        for event in self._splitter.feed(chunk):
            if event.is_done:
                self._finished = True
                break
            payload = event.json()
            problem = self._observe(payload, event.data is not None)
            if problem is not None:
                self.fail(StreamFailure.of(UpstreamProtocolError(problem)))
                return b""  # nothing more of this chunk: the error event follows
            if self.assembler.error is not None:
                self._held = []  # no held finish chunk may reach the client after an error
                out.append(data_only(event))
                message = self.assembler.error.get("message") or "upstream stream error"
                self._failure = StreamFailure.of(UpstreamErrorEvent(str(message)))
                break
            if self.hide_usage and is_usage_only(payload):
                continue
            if self._held or has_finish_reason(payload):
                self._held.append(event.raw)
            else:
                out.append(event.raw)
        return b"".join(out)

    def _observe(self, payload: Any, has_data: bool) -> str | None:
        """Take one decoded event in; what is wrong with it, or None."""
        if payload is None and has_data:
            return "The upstream sent a stream event that is not JSON."
        try:
            self.assembler.observe(payload)
        except MalformedChunk as exc:
            return f"The upstream sent a malformed stream chunk: {exc}."
        return None

    def fail(self, failure: StreamFailure) -> None:
        """End the stream as failed: a transport error, the client leaving, or the turn not stored.

        The last failure wins: a client that leaves after an upstream error is logged as gone (499).
        """
        self._failure = failure

    def outcome(self) -> StreamOutcome:
        """What the stream amounted to so far: finished at [DONE], else failed (no [DONE]: 502)."""
        assembler = self.assembler
        if self._failure is None and self._finished:
            return StreamFinished(
                b"".join(self._held), assembler.completion(), assembler.message(), assembler.generated_text()
            )
        failure = self._failure or StreamFailure.of(
            UpstreamStreamBroken("The upstream stream ended before [DONE].")
        )
        reported = {"usage": assembler.usage, "model": assembler.model}
        return StreamFailed(failure, reported, assembler.generated_text())


__all__ = ["StreamFailed", "StreamFailure", "StreamFinished", "StreamOutcome", "StreamRelay"]
