"""Raw-ASGI helpers: reading a bounded body, parsing it, and the edge layer (request ids)."""

from typing import Any

import pytest

from kubellm_gateway.asgi import (
    REQUEST_ID_KEY,
    ASGIApp,
    ClientGone,
    Edge,
    Message,
    Receive,
    Scope,
    Send,
    parse_json_object,
    read_body,
)
from kubellm_gateway.errors import APIError


class Script:
    """A receive() that hands out the given messages, counting the calls."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages)
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        return self.messages.pop(0)


def part(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def http_scope(*headers: tuple[bytes, bytes]) -> Scope:
    return {"type": "http", "headers": list(headers)}


async def test_single_part_body() -> None:
    receive = Script(part(b'{"a":1}', more=False))
    assert await read_body(http_scope(), receive, 100) == b'{"a":1}'


async def test_multi_part_body_is_joined() -> None:
    receive = Script(part(b"ab"), part(b""), part(b"cd"), part(b"e", more=False))
    assert await read_body(http_scope(), receive, 5) == b"abcde"  # exactly the limit
    assert receive.calls == 4


async def test_message_without_body_or_more_body() -> None:
    assert await read_body(http_scope(), Script({"type": "http.request"}), 10) == b""


async def test_declared_length_over_limit_fails_before_reading() -> None:
    receive = Script()
    with pytest.raises(APIError) as caught:
        await read_body(http_scope((b"content-length", b"101")), receive, 100)
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")
    assert "100 bytes" in caught.value.message
    assert receive.calls == 0


@pytest.mark.parametrize("declared", [b"100", b"5", b"not-a-number", b"-1"])
async def test_declared_length_within_limit_or_unreadable_is_read(declared: bytes) -> None:
    receive = Script(part(b"x" * 3, more=False))
    assert await read_body(http_scope((b"content-length", declared)), receive, 100) == b"xxx"


async def test_chunked_body_fails_at_the_part_that_crosses_the_limit() -> None:
    receive = Script(part(b"x" * 4), part(b"x" * 4), part(b"x" * 4), part(b"x" * 4, more=False))
    with pytest.raises(APIError) as caught:
        await read_body(http_scope(), receive, 10)
    assert caught.value.status == 413
    assert receive.calls == 3


async def test_understated_length_is_still_bounded() -> None:
    receive = Script(part(b"x" * 8), part(b"x" * 8, more=False))
    with pytest.raises(APIError):
        await read_body(http_scope((b"content-length", b"4")), receive, 10)


@pytest.mark.parametrize("before", [0, 2])
async def test_disconnect_while_reading(before: int) -> None:
    receive = Script(*[part(b"x")] * before, {"type": "http.disconnect"})
    with pytest.raises(ClientGone):
        await read_body(http_scope(), receive, 100)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
)
def test_parse_json_object_refusals(body: bytes, fragment: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_json_object(body)
    assert caught.value.status == 400
    assert fragment in caught.value.message


def test_parse_json_object() -> None:
    assert parse_json_object(b'{"model":"m","n":1}') == {"model": "m", "n": 1}


# --- Edge: request ids and the fast lane ----------------------------------------------------


def request(*headers: tuple[bytes, bytes], method: str = "GET", path: str = "/x") -> Scope:
    return {**http_scope(*headers), "method": method, "path": path}


async def run_edge(scope: Scope) -> tuple[Scope, list[Message]]:
    """The scope the framework app saw (empty if the fast lane took it) and what was sent."""
    seen: dict[str, Any] = {}
    sent: list[Message] = []

    def answering(name: bytes, record: bool) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if record:
                seen.update(scope)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"a", name)]})
            await send({"type": "http.response.body", "body": b"ok"})

        return app

    async def receive() -> Message:
        raise AssertionError("not read")

    async def send(message: Message) -> None:
        sent.append(message)

    edge = Edge(answering(b"framework", True), {"/v1/chat/completions": answering(b"fast", False)})
    await edge(scope, receive, send)
    return seen, sent


@pytest.mark.parametrize("rid", [b"abc-123", b"x" * 128, b"with spaces and : / ="])
async def test_sane_request_id_is_echoed(rid: bytes) -> None:
    seen, sent = await run_edge(request((b"x-request-id", rid)))
    assert seen[REQUEST_ID_KEY] == rid.decode()
    assert sent[0]["headers"] == [(b"a", b"framework"), (b"x-request-id", rid)]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}


@pytest.mark.parametrize(
    "rid", [None, b"", b"x" * 129, b"a\x00b", b"line\r\nx-evil: 1", b"tab\there", "é".encode()]
)
async def test_unusable_request_id_is_replaced(rid: bytes | None) -> None:
    headers = [] if rid is None else [(b"x-request-id", rid)]
    seen, sent = await run_edge(request(*headers))
    generated = seen[REQUEST_ID_KEY]
    assert len(generated) == 24
    int(generated, 16)
    assert sent[0]["headers"][-1] == (b"x-request-id", generated.encode())


async def test_each_request_gets_its_own_id() -> None:
    ids = {(await run_edge(request()))[0][REQUEST_ID_KEY] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("method", "path", "served_by"),
    [
        ("POST", "/v1/chat/completions", b"fast"),
        ("GET", "/v1/chat/completions", b"framework"),
        ("POST", "/v1/chat/completions/", b"framework"),
        ("POST", "/v1/models", b"framework"),
    ],
)
async def test_fast_lane_only_for_posts_to_its_paths(
    method: str, path: str, served_by: bytes
) -> None:
    scope = request((b"x-request-id", b"rid-1"), method=method, path=path)
    _, sent = await run_edge(scope)
    assert sent[0]["headers"] == [(b"a", served_by), (b"x-request-id", b"rid-1")]
    assert scope[REQUEST_ID_KEY] == "rid-1"


async def test_non_http_scopes_pass_through() -> None:
    seen, sent = await run_edge({"type": "lifespan"})
    assert REQUEST_ID_KEY not in seen
    assert sent[0]["headers"] == [(b"a", b"framework")]
