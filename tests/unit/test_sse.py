"""SSEParser: the same payloads however the byte stream is cut."""

import random

import pytest

from kubellm_gateway.providers import sse
from kubellm_gateway.providers.sse import DONE, SSEError, SSEParser, event

LF_STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive\n\n"
    b"event: message\nid: 7\ndata: line1\ndata:line2\ndata: \n\n"
    b"retry: 100\nevent: ping\n\n"  # no data: dropped
    b": comment before data\ndata: a: b\n\n"
    b"\n\n"  # an empty block is no event
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b"line1\nline2\n", b"a: b", DONE]
STREAMS = {"lf": LF_STREAM, "crlf": LF_STREAM.replace(b"\n", b"\r\n")}


def parse(chunks: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    out = [payload for chunk in chunks for payload in parser.feed(chunk)]
    assert not parser.pending
    return out


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_whole_stream(stream: bytes) -> None:
    assert parse([stream]) == EXPECTED


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_split_at_every_byte_boundary(stream: bytes) -> None:
    for i in range(len(stream) + 1):
        assert parse([stream[:i], stream[i:]]) == EXPECTED, f"split at {i}"


@pytest.mark.parametrize("stream", STREAMS.values(), ids=STREAMS.keys())
def test_byte_by_byte(stream: bytes) -> None:
    assert parse([stream[i : i + 1] for i in range(len(stream))]) == EXPECTED


@pytest.mark.parametrize("seed", range(100))
def test_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    stream = STREAMS["crlf" if seed % 2 else "lf"]
    cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert parse(chunks) == EXPECTED


def test_cr_at_chunk_end_pairs_with_lf_at_next_start() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == []
    assert parser.pending
    assert parser.feed(b"\ndata: y\r\n\r") == [b"x"]
    assert parser.feed(b"\n") == [b"y"]
    assert not parser.pending


def test_pending_until_the_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: x\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [b"x"]
    assert not parser.pending


def test_several_events_in_one_chunk_keep_order() -> None:
    payloads = [f'{{"i":{i}}}'.encode() for i in range(50)]
    assert parse([b"".join(event(p) for p in payloads)]) == payloads


@pytest.mark.parametrize("payload", [b"x", b'{"choices":[]}', DONE, b""])
def test_event_round_trip(payload: bytes) -> None:
    assert event(payload) == b"data: " + payload + b"\n\n"
    assert parse([event(payload)]) == [payload]


def test_oversized_event_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64)
    parser = SSEParser()
    assert parser.feed(b"data: " + b"x" * 50) == []
    with pytest.raises(SSEError, match="exceeds 64 bytes"):
        parser.feed(b"x" * 20)


def test_events_under_the_limit_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64)
    parser = SSEParser()
    for _ in range(10):  # the limit is per event, not per stream
        assert parser.feed(event(b"y" * 50)) == [b"y" * 50]
