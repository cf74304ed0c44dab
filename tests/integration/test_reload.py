"""Hot reload of the manifests folder: live within a second, broken edits contained."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest

from tests.conftest import StartGateway
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider
from tests.support.traffic import Traffic

KEY = new_key()
PROPAGATION_LIMIT = 1.0  # seconds, from the issue


@pytest.fixture
def gateway(start_gateway: StartGateway) -> GatewayProcess:
    gw = start_gateway(
        dump(
            provider("mock", "Mock"),
            api_key("tester", KEY, groups=["testers"]),
            policy("all", [("Group", "testers")], models=["*"]),
        )
    )
    gw.apply("a.yaml", dump(model("a", [backend("mock", "a-v1")])))
    return gw


def ask(gw: GatewayProcess, model_id: str, key: str = KEY) -> httpx2.Response:
    return gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model_id, "messages": [{"role": "user", "content": "x"}]},
    )


def served_by(gw: GatewayProcess, model_id: str) -> str:
    response = ask(gw, model_id)
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content.split(":", maxsplit=1)[0].removeprefix("Mock reply from ")


@pytest.fixture
def traffic(gateway: GatewayProcess) -> Iterator[Traffic]:
    with Traffic(gateway, "a", KEY) as t:
        yield t
    t.assert_all_served()


def test_add_edit_delete_take_effect_within_a_second(
    gateway: GatewayProcess, traffic: Traffic
) -> None:
    assert ask(gateway, "b").status_code == 404
    assert gateway.apply("b.yaml", dump(model("b", [backend("mock", "b-v1")]))) < PROPAGATION_LIMIT
    assert served_by(gateway, "b") == "b-v1"
    assert gateway.apply("b.yaml", dump(model("b", [backend("mock", "b-v2")]))) < PROPAGATION_LIMIT
    assert served_by(gateway, "b") == "b-v2"
    assert gateway.remove("b.yaml") < PROPAGATION_LIMIT
    assert ask(gateway, "b").status_code == 404


def test_keys_and_policies_follow_the_folder(gateway: GatewayProcess, traffic: Traffic) -> None:
    other = new_key()
    assert ask(gateway, "a", other).status_code == 401
    gateway.apply("k.yaml", dump(api_key("other", other, groups=["outsiders"])))
    assert ask(gateway, "a", other).status_code == 404  # known now, but granted nothing
    gateway.apply("p.yaml", dump(policy("outsiders", [("Group", "outsiders")], models=["a"])))
    assert ask(gateway, "a", other).status_code == 200
    gateway.remove("k.yaml")
    assert ask(gateway, "a", other).status_code == 401


def test_unparsable_file_keeps_its_last_good_version(
    gateway: GatewayProcess, traffic: Traffic
) -> None:
    gateway.apply("a.yaml", "kind: LLMModel\n  this: [is not yaml")
    assert served_by(gateway, "a") == "a-v1"
    assert "a.yaml cannot be read (keeping its last good version)" in gateway.log()


def test_invalid_resource_keeps_its_last_valid_version(
    gateway: GatewayProcess, traffic: Traffic
) -> None:
    gateway.apply("a.yaml", dump(model("a", [backend("mock", "a-v2", weight=0)])))
    assert served_by(gateway, "a") == "a-v1"
    log = gateway.log()
    assert "a.yaml document 1: LLMModel default/a: spec.backends[0].weight" in log
    assert "keeping its last valid version" in log


def test_invalid_document_is_skipped_and_the_rest_loads(gateway: GatewayProcess) -> None:
    gateway.apply(
        "mixed.yaml",
        dump(model("c", [backend("mock", "c")], bogus=1), model("d", [backend("mock", "d-v1")])),
    )
    assert served_by(gateway, "d") == "d-v1"
    assert ask(gateway, "c").status_code == 404
    assert (
        "mixed.yaml document 1: LLMModel default/c: spec.bogus: Extra inputs are not permitted"
        in gateway.log()
    )
    metrics = gateway.metrics()
    assert 'kubellm_config_invalid_resources{kind="LLMModel"} 1.0' in metrics


def test_missing_provider_or_secret_is_unroutable_and_says_why(gateway: GatewayProcess) -> None:
    gateway.apply(
        "broken.yaml",
        dump(
            model("orphan", [backend("ghost", "x")]),
            provider("locked", "OpenAI", apiKeySecretRef={"name": "absent", "key": "apiKey"}),
            model("locked-model", [backend("locked", "x")]),
        ),
    )
    for model_id in ("orphan", "locked-model"):
        response = ask(gateway, model_id)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_healthy_backend"
    log = gateway.log()
    assert "LLMModel default/orphan: spec.backends[0]: LLMProvider default/ghost is missing" in log
    assert "LLMProvider default/locked: Secret default/absent not found" in log


def test_duplicate_model_id_keeps_the_first(gateway: GatewayProcess) -> None:
    gateway.apply("dup.yaml", dump(model("a2", [backend("mock", "imposter")], model="a")))
    assert served_by(gateway, "a") == "a-v1"
    assert "model id 'a' is already served by LLMModel default/a" in gateway.log()
