"""The golden pairs in tests/golden/anthropic/: each mapping rule, checked both ways.

Each case's output must be exactly what the translator makes of its input, and both
sides must be what the official openai and anthropic packages' types describe (requests
validated against their request types, answers and events against their models).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
import yaml
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParams

from kubellm_gateway.errors import APIError
from kubellm_gateway.providers import anthropic_openai, anthropic_wire, openai_anthropic
from kubellm_gateway.providers.anthropic_request import messages_request
from kubellm_gateway.providers.base import FailureReason, UpstreamFailure
from kubellm_gateway.proxy import client_error, exhausted
from kubellm_gateway.telemetry.metrics import Call
from tests.fakes.anthropic_upstream import request_problems
from tests.support import sdk_types

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "anthropic"
CREATED = 1767225600  # the `created` of every chunk and completion in the files
OPENAI_REQUEST: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(CompletionCreateParams)
ANTHROPIC_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
# Events the package has no model for: Anthropic's keep-alive and errors, future types.
UNMODELLED_EVENTS = {"ping", "error", "some_future_event"}


def cases(name: str) -> list[Any]:
    loaded = yaml.safe_load((GOLDEN / name).read_text())
    return [pytest.param(case, id=f"{i}") for i, case in enumerate(loaded)]


def test_every_golden_file_is_checked() -> None:
    checked = {
        f"{side}/{kind}.yaml"
        for side in ("openai-clients", "anthropic-clients")
        for kind in ("requests", "refused", "responses", "streams", "errors")
    }
    assert {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*.yaml")} == checked


def openai_request_ok(body: dict[str, Any]) -> None:
    assert sdk_types.problems(OPENAI_REQUEST, body) == []


def anthropic_request_ok(body: dict[str, Any]) -> None:
    # 2023-06-01: the version the gateway pins, which takes temperature and top_p.
    assert request_problems(body, "2023-06-01") == []


def anthropic_event_ok(event: dict[str, Any]) -> None:
    if event["type"] not in UNMODELLED_EVENTS:
        ANTHROPIC_EVENT.validate_python(event)


def anthropic_error_ok(body: dict[str, Any]) -> None:
    # Anthropic documents 413 as request_too_large; the package's types lack it.
    if body["error"]["type"] != "request_too_large":
        ErrorResponse.model_validate(body)


def openai_chunk_ok(payload: Any) -> None:
    if payload != "[DONE]" and "error" not in payload:
        ChatCompletionChunk.model_validate(payload)


# --- OpenAI clients on Anthropic ----------------------------------------------------------------


@pytest.mark.parametrize("case", cases("openai-clients/requests.yaml"))
def test_openai_request_to_anthropic(case: dict[str, Any]) -> None:
    openai_request_ok(case["openai"])
    stream = case["openai"].get("stream") is True
    assert (
        messages_request(copy.deepcopy(case["openai"]), "claude-x", stream, 4096)
        == case["anthropic"]
    )
    anthropic_request_ok(case["anthropic"])


@pytest.mark.parametrize("case", cases("openai-clients/refused.yaml"))
def test_openai_request_refused(case: dict[str, Any]) -> None:
    body = {
        "model": "claude",
        "messages": [{"role": "user", "content": "Hello!"}],
        **case["openai"],
    }
    openai_request_ok(body)  # a request OpenAI would take: the refusal is Anthropic's
    with pytest.raises(APIError) as caught:
        messages_request(body, "claude-x", False, 4096)
    error = caught.value
    assert {"status": error.status, "param": error.param, "message": error.message} == case["error"]


@pytest.mark.parametrize("case", cases("openai-clients/responses.yaml"))
def test_anthropic_message_to_openai(case: dict[str, Any]) -> None:
    Message.model_validate(case["anthropic"])
    assert (
        openai_anthropic.chat_response(copy.deepcopy(case["anthropic"]), CREATED) == case["openai"]
    )
    ChatCompletion.model_validate(case["openai"])


@pytest.mark.parametrize("case", cases("openai-clients/streams.yaml"))
def test_anthropic_events_to_openai(case: dict[str, Any]) -> None:
    translate = openai_anthropic.ChunkStream(CREATED)
    out: list[Any] = []
    for event in case["anthropic"]:
        anthropic_event_ok(event)
        try:
            payloads = translate([orjson.dumps(event)])
        except UpstreamFailure as failure:  # what the proxy ends the stream with
            out.append(client_error(failure).payload())
            continue
        out += [p.decode() if p == b"[DONE]" else orjson.loads(p) for p in payloads]
    assert out == case["openai"]
    for payload in out:
        openai_chunk_ok(payload)


@pytest.mark.parametrize("case", cases("openai-clients/errors.yaml"))
def test_anthropic_error_to_openai(case: dict[str, Any]) -> None:
    status, body = case["anthropic"]["status"], case["anthropic"]["body"]
    anthropic_error_ok(body)
    failure = openai_anthropic.openai_failure(
        UpstreamFailure(
            FailureReason.status, body["error"]["message"], status=status, error=body["error"]
        )
    )
    if failure.retryable:  # after three attempts; a spend limit is tried once
        error = exhausted(failure, Call("chat", "rid", attempts=1 if failure.final else 3))
    else:
        error = client_error(failure)
    assert {"status": error.status, "headers": error.headers, "body": error.payload()} == case[
        "openai"
    ]


# --- Anthropic clients on OpenAI-shaped backends ------------------------------------------------


@pytest.mark.parametrize("case", cases("anthropic-clients/requests.yaml"))
def test_anthropic_request_to_openai(case: dict[str, Any]) -> None:
    anthropic_request_ok(case["anthropic"])
    assert anthropic_openai.chat_request(copy.deepcopy(case["anthropic"])) == case["openai"]
    openai_request_ok(case["openai"])


@pytest.mark.parametrize("case", cases("anthropic-clients/refused.yaml"))
def test_anthropic_request_refused(case: dict[str, Any]) -> None:
    body = {
        "model": "gpt",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Hello!"}],
        **case["anthropic"],
    }
    with pytest.raises(APIError) as caught:
        anthropic_openai.chat_request(body)
    error = caught.value
    got = {
        "status": error.status,
        "type": anthropic_wire.error_type(error),
        "message": error.message,
    }
    assert got == case["error"]


@pytest.mark.parametrize("case", cases("anthropic-clients/responses.yaml"))
def test_openai_completion_to_anthropic(case: dict[str, Any]) -> None:
    ChatCompletion.model_validate(case["openai"])
    assert anthropic_openai.message_response(copy.deepcopy(case["openai"])) == case["anthropic"]
    Message.model_validate(case["anthropic"])


@pytest.mark.parametrize("case", cases("anthropic-clients/streams.yaml"))
def test_openai_chunks_to_anthropic(case: dict[str, Any]) -> None:
    translate = anthropic_openai.EventStream()
    out: list[dict[str, Any]] = []
    for chunk in case["openai"]:
        openai_chunk_ok(chunk)
        data, _ = translate([b"[DONE]" if chunk == "[DONE]" else orjson.dumps(chunk)])
        for frame in filter(None, data.split(b"\n\n")):
            name, payload = frame.split(b"\n")
            out.append(
                {
                    "event": name.removeprefix(b"event: ").decode(),
                    "data": orjson.loads(payload.removeprefix(b"data: ")),
                }
            )
    assert out == case["anthropic"]
    for event in out:
        assert event["event"] == event["data"]["type"]
        anthropic_event_ok(event["data"])


@pytest.mark.parametrize("case", cases("anthropic-clients/errors.yaml"))
def test_gateway_errors_in_anthropic_shape(case: dict[str, Any]) -> None:
    openai_error = case["openai"]["error"]
    error = APIError(case["status"], openai_error["message"], type=openai_error["type"])
    assert error.payload() == case["openai"]
    assert orjson.loads(anthropic_wire.error_body(error, "req-1")) == case["anthropic"]
    anthropic_error_ok(case["anthropic"])
