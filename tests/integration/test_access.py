"""Authentication, access policies and bad input: every refusal in OpenAI's envelope."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import openai
import pytest

from tests.conftest import StartGateway
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider

KEYS = {name: new_key() for name in ("alice", "bob", "ci", "expired", "disabled", "nobody")}


@pytest.fixture(scope="module")
def gateway(start_module_gateway: StartGateway) -> GatewayProcess:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return start_module_gateway(
        dump(
            provider("mock", "Mock"),
            model("std", [backend("mock", "m1")], model="std/one", labels={"tier": "standard"}),
            model("std2", [backend("mock", "m2")], model="std/two", labels={"tier": "standard"}),
            model("premium", [backend("mock", "m3")], model="premium", labels={"tier": "premium"}),
            model("secret-project", [backend("mock", "m4")], model="internal/x"),
            api_key("alice", KEYS["alice"], groups=["team-a"], expiresAt=future),
            api_key("bob", KEYS["bob"], user="bob", groups=["team-b"]),
            api_key("ci", KEYS["ci"]),
            api_key("expired", KEYS["expired"], groups=["team-a"], expiresAt=past),
            api_key("disabled", KEYS["disabled"], groups=["team-a"], disabled=True),
            api_key("nobody", KEYS["nobody"]),
            # By label selector, for a group.
            policy(
                "standard",
                [("Group", "team-a")],
                modelSelector={"matchLabels": {"tier": "standard"}},
            ),
            # By glob, for a user.
            policy("bob", [("User", "bob")], models=["premium", "std/t*"]),
            # For one key by name.
            policy("ci", [("APIKey", "ci")], models=["internal/*"]),
        ),
        extra_args=("--max-body-bytes", "2048"),
    )


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def chat(gateway: GatewayProcess, key: str, model: str) -> str:
    reply = client(gateway, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("alice", ["std/one", "std/two"]),
        ("bob", ["premium", "std/two"]),
        ("ci", ["internal/x"]),
        ("nobody", []),  # default deny
    ],
)
def test_models_list_exactly_what_the_caller_may_use(
    gateway: GatewayProcess, who: str, expected: list[str]
) -> None:
    assert [m.id for m in client(gateway, KEYS[who]).models.list()] == expected


def test_granted_model_is_served(gateway: GatewayProcess) -> None:
    assert chat(gateway, KEYS["alice"], "std/one").startswith("Mock reply from m1")
    assert chat(gateway, KEYS["ci"], "internal/x").startswith("Mock reply from m4")


def test_forbidden_and_unknown_models_look_the_same(gateway: GatewayProcess) -> None:
    errors = []
    for model_id in ("premium", "does-not-exist"):
        with pytest.raises(openai.NotFoundError) as caught:
            chat(gateway, KEYS["alice"], model_id)
        errors.append(caught.value)
    bodies = [e.body for e in errors]
    assert all(b["code"] == "model_not_found" for b in bodies)  # type: ignore[index]
    assert bodies[0]["message"].replace("premium", "X") == bodies[1]["message"].replace(  # type: ignore[index]
        "does-not-exist", "X"
    )
    with pytest.raises(openai.NotFoundError):
        client(gateway, KEYS["alice"]).models.retrieve("premium")


def test_api_key_header_for_azure_style_clients(gateway: GatewayProcess) -> None:
    response = gateway.http.get("/v1/models", headers={"api-key": KEYS["alice"]})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic YWxpY2U6cGFzcw=="},
        {"authorization": f"Bearer {new_key()}"},  # well-formed, unknown
        {"authorization": f"Bearer {KEYS['alice']}x"},
        {"authorization": f"Bearer {KEYS['expired']}"},
        {"authorization": f"Bearer {KEYS['disabled']}"},
    ],
    ids=["none", "empty", "basic", "unknown", "altered", "expired", "disabled"],
)
def test_bad_credentials_get_401(gateway: GatewayProcess, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        response = gateway.http.request(method, path, headers=headers, json={"model": "std/one"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_sdk_sees_authentication_error(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, new_key(), "std/one")


def post(gateway: GatewayProcess, body: bytes, **headers: str) -> tuple[int, dict[str, object]]:
    response = gateway.http.post(
        "/v1/chat/completions",
        content=body,
        headers={
            "authorization": f"Bearer {KEYS['alice']}",
            "content-type": "application/json",
            **headers,
        },
    )
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return response.status_code, error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 7, "messages": []}', "model"),
        (b'{"model": "std/one"}', "messages"),
        (b'{"model": "std/one", "messages": []}', "messages"),
        (b'{"model": "std/one", "messages": "hi"}', "messages"),
        (
            b'{"model": "std/one", "messages": [{"role": "user", "content": "x"}], "stream": 1}',
            "stream",
        ),
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "no-model",
        "model-type",
        "no-messages",
        "empty-messages",
        "messages-type",
        "stream-type",
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    gateway: GatewayProcess, body: bytes, param: str | None
) -> None:
    status, error = post(gateway, body)
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if param:
        assert f"`{param}`" in str(error["message"])


def test_oversized_body_gets_413(gateway: GatewayProcess) -> None:
    big = b'{"model": "std/one", "messages": [{"role": "user", "content": "' + b"x" * 4096 + b'"}]}'
    status, error = post(gateway, big)
    assert status == 413
    assert error["code"] == "request_too_large"


def test_oversized_chunked_body_gets_413_without_reading_it_all(gateway: GatewayProcess) -> None:
    # No content-length: the limit must hold while the body streams in.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
            b"authorization: Bearer " + KEYS["alice"].encode() + b"\r\n\r\n"
        )
        for _ in range(4):
            s.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        reply = s.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")


def test_unknown_route_and_wrong_method_use_the_envelope(gateway: GatewayProcess) -> None:
    missing = gateway.http.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = gateway.http.get("/v1/chat/completions")
    assert wrong.status_code == 405
    assert set(wrong.json()["error"]) == {"message", "type", "param", "code"}


def test_no_key_material_in_responses_or_logs(gateway: GatewayProcess) -> None:
    for key in KEYS.values():
        gateway.http.get("/v1/models", headers={"authorization": f"Bearer {key}"})
    log = gateway.log()
    for key in KEYS.values():
        assert key not in log
        assert key[:16] not in log
