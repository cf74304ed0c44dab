"""Incremental server-sent-events parsing: bytes in, `data` payloads out."""

from __future__ import annotations

MAX_EVENT_BYTES = 8 * 1024 * 1024


class SSEError(Exception):
    pass


class SSEParser:
    """Splits a byte stream into event payloads; comments and other fields are dropped."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # A "\r" left at the end stays in the buffer and pairs with the next "\n".
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            block = buffer[start:end]
            start = end + 2
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append(block[6:])  # the shape every OpenAI-style server sends
            elif (data := _data(block)) is not None:
                events.append(data)
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise SSEError(f"an event exceeds {MAX_EVENT_BYTES} bytes")
        return events

    @property
    def pending(self) -> bool:
        return bool(self._buffer.strip())


def _data(block: bytes) -> bytes | None:
    lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE = b"[DONE]"
