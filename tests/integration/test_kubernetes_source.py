"""The gateway following a Kubernetes API live (`--source kubernetes`).

A real gateway process follows the emulator (tests/support/kube.py) through kopf;
resources go in with kubectl, as a platform team would, and the official openai SDK
checks what comes out. API keys get their status.keyHash from the test, as the
operator would write it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import StartGateway
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.kube import CRD_DIR, TOKEN, KubeAPI, KubeEmulator
from tests.support.manifests import backend, dump, model, openai_provider, policy, provider
from tests.support.traffic import Traffic

PROPAGATION_LIMIT = 1.0  # seconds, from the issue
KUBELLM = "kubellm.io/v1alpha1"


def apikey(name: str, user: str | None = None, **spec: Any) -> dict[str, Any]:
    """An APIKey as kubectl would apply it (the operator mints the key into its Secret)."""
    if user is not None:
        spec["user"] = user
    return {
        "apiVersion": KUBELLM,
        "kind": "APIKey",
        "metadata": {"name": name},
        "spec": {"secretName": f"{name}-key", **spec},
    }


def apply(kube: KubeEmulator, *objects: dict[str, Any] | list[dict[str, Any]]) -> None:
    kube.kubectl("apply", "-f", "-", input=dump(*objects))


def publish_key(kube: KubeEmulator, name: str, key: str, namespace: str = "default") -> None:
    """What the operator does after minting: the key's hash into the APIKey's status."""
    digest = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    patch = json.dumps({"status": {"keyHash": digest, "keyPrefix": key[:10]}})
    kube.kubectl(
        *("patch", "-n", namespace, "apikey", name, "--subresource=status"),
        *("--type=merge", "-p", patch),
    )


def ask(gw: GatewayProcess, model_id: str, key: str) -> int:
    response = gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model_id, "messages": [{"role": "user", "content": "x"}]},
    )
    return response.status_code


def within(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def crds(kube: KubeEmulator) -> KubeEmulator:
    """The CRD objects themselves, as a cluster has them once the chart is installed."""
    kube.kubectl("apply", "-f", str(CRD_DIR))
    return kube


@pytest.fixture
def start_following(
    crds: KubeEmulator, start_gateway: StartGateway, tmp_path: Path
) -> Callable[..., GatewayProcess]:
    config = crds.kubeconfig(tmp_path / "kubeconfig")

    def start(*extra: str) -> GatewayProcess:
        args = ("--source", "kubernetes", "--kubeconfig", str(config), *extra)
        return start_gateway(extra_args=args)

    return start


KEY = new_key()


@pytest.fixture
def base(crds: KubeEmulator) -> KubeEmulator:
    """A Mock provider, models a, b, c, and a key for group testers allowed every model."""
    apply(
        crds,
        provider("mock", "Mock"),
        [model(name, [backend("mock", f"{name}-v1")]) for name in "abc"],
        apikey("tester", groups=["testers"]),
        policy("testers", [("Group", "testers")], models=["*"]),
    )
    publish_key(crds, "tester", KEY)
    return crds


def test_kubectl_apply_then_the_sdk_is_routed(
    start_following: Callable[..., GatewayProcess], crds: KubeEmulator, fake_openai: FakeUpstream
) -> None:
    gw = start_following()
    key = new_key()
    apply(
        crds,
        openai_provider("openai", fake_openai.url, fake_openai.api_key),
        provider("mock", "Mock"),
        model("gpt", [backend("openai", "gpt-4o-mini")], model="gpt-4o", aliases=["gpt"]),
        model("small", [backend("mock", "small-v1")], labels={"tier": "standard"}),
        model("private", [backend("mock", "private-v1")]),
        apikey("ci-bot", groups=["ci"]),
        policy(
            "ci",
            [("Group", "ci")],
            models=["gpt-*"],
            modelSelector={"matchLabels": {"tier": "standard"}},
        ),
    )
    publish_key(crds, "ci-bot", key)
    within(lambda: ask(gw, "small", key) == 200, 5)
    with openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0) as client:
        assert sorted(m.id for m in client.models.list()) == ["gpt-4o", "small"]
        fake_openai.clear()
        reply = client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.model.startswith("gpt-4o-mini")
        upstream = fake_openai.wait_for(lambda r: r.method == "POST")
        assert upstream.body["model"] == "gpt-4o-mini"  # the backend's name, not the alias
        stream = client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text.startswith("Mock reply from small-v1")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="private", messages=[{"role": "user", "content": "hi"}]
            )
    stranger = openai.OpenAI(base_url=gw.base_url, api_key=new_key(), max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_edit_policy_delete_key_delete_model_each_within_a_second(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    gw = start_following()
    other = new_key()
    apply(
        base,
        apikey("other", groups=["others"]),
        policy("others", [("Group", "others")], models=["b", "c"]),
    )
    publish_key(base, "other", other)
    within(lambda: ask(gw, "b", other) == 200, 5)
    with Traffic(gw, "a", KEY) as traffic:
        # A policy edited: b is no longer granted to the others.
        kube_api.patch("AccessPolicy", "others", {"spec": {"models": ["c"]}})
        assert within(lambda: ask(gw, "b", other) == 404, PROPAGATION_LIMIT) < PROPAGATION_LIMIT
        assert ask(gw, "c", other) == 200
        # A key deleted.
        base.kubectl("delete", "apikey", "other")
        assert within(lambda: ask(gw, "c", other) == 401, PROPAGATION_LIMIT) < PROPAGATION_LIMIT
        # A model deleted.
        base.kubectl("delete", "llmmodel", "c")
        assert within(lambda: ask(gw, "c", KEY) == 404, PROPAGATION_LIMIT) < PROPAGATION_LIMIT
        # And a model edited to another backend.
        kube_api.patch("LLMModel", "b", {"spec": {"backends": [backend("mock", "b-v2")]}})
        within(lambda: "b-v2" in reply(gw, "b"), PROPAGATION_LIMIT)
    traffic.assert_all_served()


def reply(gw: GatewayProcess, model_id: str) -> str:
    response = gw.http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": model_id, "messages": [{"role": "user", "content": "x"}]},
    )
    if response.status_code != 200:
        return ""
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def test_api_server_outage_keeps_serving_and_catches_up(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    gw = start_following()
    with Traffic(gw, "a", KEY) as traffic:
        base.suspend()
        served = len(traffic.statuses)
        time.sleep(2)  # kopf's watches fail and retry with backoff meanwhile
        assert len(traffic.statuses) > served, "requests stopped during the outage"
        assert gw.http.get("/readyz").status_code == 200
        base.resume()
        # Made before the gateway's next reconnect attempt: it has not seen these yet.
        kube_api.create(model("d", [backend("mock", "d-v1")]))
        kube_api.patch("LLMModel", "b", {"spec": {"backends": [backend("mock", "b-v2")]}})
        within(lambda: "d-v1" in reply(gw, "d") and "b-v2" in reply(gw, "b"), 30)
        base.kubectl("delete", "llmmodel", "c")
        assert within(lambda: ask(gw, "c", KEY) == 404, PROPAGATION_LIMIT) < PROPAGATION_LIMIT
    traffic.assert_all_served()
    assert "410 Gone" not in gw.log()  # watches resumed: no re-list, so no restart


def test_what_is_deleted_while_the_watch_expires_goes_away(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    """After a long outage the API server has compacted the watches' history (410 Gone):
    kopf lists again, and what was deleted meanwhile is just absent, with no DELETED."""
    gw = start_following()
    revoked = new_key()
    apply(base, apikey("revoked", groups=["testers"]))
    publish_key(base, "revoked", revoked)
    within(lambda: ask(gw, "b", revoked) == 200, 5)
    with Traffic(gw, "a", KEY) as traffic:
        base.suspend()
        with base.api_while_suspended() as api:
            assert api.delete("APIKey", "revoked")
            assert api.delete("LLMModel", "c")
            api.create(model("d", [backend("mock", "d-v1")]))
        base.compact()
        base.resume()

        def ready_and(condition: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                assert gw.http.get("/readyz").status_code == 200  # the old table serves on
                return condition()

            return check

        within(ready_and(lambda: "d-v1" in reply(gw, "d")), 20)  # kopf has listed again
        within(ready_and(lambda: ask(gw, "b", revoked) == 401 and ask(gw, "c", KEY) == 404), 5)
    traffic.assert_all_served()
    assert gw.log().count("410 Gone") == 1  # one restart, whatever else was listed again


def test_a_relist_with_nothing_left_is_told_by_the_crd(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator
) -> None:
    """Lists that return no object show no re-list; the CRD's watch, which always has its
    one object, expired in the same outage."""
    gw = start_following()
    base.suspend()
    with base.api_while_suspended() as api:
        for kind, name in [
            ("APIKey", "tester"),
            ("AccessPolicy", "testers"),
            ("LLMProvider", "mock"),
            *[("LLMModel", name) for name in "abc"],
        ]:
            assert api.delete(kind, name)
    base.compact()
    base.resume()
    within(lambda: ask(gw, "a", KEY) == 401, 20)
    assert gw.http.get("/readyz").status_code == 200


def test_ready_only_with_everything_listed(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    for i in range(100):
        kube_api.create(model(f"m{i}", [backend("mock", "m")]))
    gw = start_following()
    # The first snapshot served already holds every object that existed at start.
    with openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0) as client:
        assert len(client.models.list().data) == 103
    assert gw.generation() == 1


def test_a_burst_of_changes_is_coalesced(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    gw = start_following()
    before = gw.generation()
    for i in range(100):
        kube_api.create(model(f"burst{i}", [backend("mock", "m")]))
    within(lambda: ask(gw, "burst99", KEY) == 200, 5)
    time.sleep(0.5)  # nothing more to come
    rebuilds = gw.generation() - before
    assert 1 <= rebuilds <= 25, f"{rebuilds} rebuilds for 100 changes"
    with openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0) as client:
        assert len(client.models.list().data) == 103


def test_invalid_resources_are_skipped_and_the_last_valid_version_kept(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    gw = start_following()
    with Traffic(gw, "a", KEY) as traffic:
        # The emulator does not validate (a real API server would mostly refuse these).
        kube_api.patch("LLMModel", "b", {"spec": {"backends": [backend("mock", "b-v2", weight=0)]}})
        kube_api.create(model("broken", [backend("mock", "x")], bogus=1))
        kube_api.create(model("fine", [backend("mock", "fine-v1")]))
        within(lambda: ask(gw, "fine", KEY) == 200, PROPAGATION_LIMIT)
        assert "b-v1" in reply(gw, "b")
        assert ask(gw, "broken", KEY) == 404
    traffic.assert_all_served()
    log = gw.log()
    assert (
        "LLMModel default/b: spec.backends[0].weight: Input should be greater than or equal to 1 "
        "(keeping its last valid version)" in log
    )
    assert "LLMModel default/broken: spec.bogus: Extra inputs are not permitted (skipped)" in log
    assert 'kubellm_config_invalid_resources{kind="LLMModel"} 2.0' in gw.metrics()


def test_keys_only_by_status_hash_never_from_secrets(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator, kube_api: KubeAPI
) -> None:
    gw = start_following()
    unpublished = new_key()
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "fresh-key"},
            "stringData": {"apiKey": unpublished},
        }
    )
    apply(base, apikey("fresh", groups=["testers"]))
    within(lambda: "APIKey default/fresh: no status.keyHash yet" in gw.log(), 5)
    assert ask(gw, "a", unpublished) == 401  # the key in its Secret is not used
    publish_key(base, "fresh", unpublished)
    assert within(lambda: ask(gw, "a", unpublished) == 200, PROPAGATION_LIMIT) < PROPAGATION_LIMIT


def test_the_gateway_never_writes(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator
) -> None:
    gw = start_following()
    base.kubectl("delete", "llmmodel", "c")
    within(lambda: ask(gw, "c", KEY) == 404, 5)
    from_gateway = [
        (r.method, r.url)
        for r in base.emulator._requests
        if r.headers.get("User-Agent", "").startswith("kopf")
    ]
    assert from_gateway, "no request from the gateway recorded"
    assert {method.value for method, _ in from_gateway} == {"GET"}, from_gateway


def test_namespaces_limit_what_is_followed(
    start_following: Callable[..., GatewayProcess], base: KubeEmulator
) -> None:
    base.kubectl(
        "apply",
        "-n",
        "team-a",
        "-f",
        "-",
        input=dump(
            provider("mock", "Mock"),
            model("team-model", [backend("mock", "t")]),
            apikey("team-key", groups=["team"]),
            policy("team", [("Group", "team")], models=["*"]),
        ),
    )
    team_key = new_key()
    publish_key(base, "team-key", team_key, namespace="team-a")
    gw = start_following("--namespaces", "team-a")
    assert ask(gw, "team-model", team_key) == 200
    assert ask(gw, "a", KEY) == 401  # default is not followed: its key is unknown here


def test_a_kubeconfig_with_an_exec_plugin_logs_in_through_it(
    base: KubeEmulator, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """kopf's own kubeconfig reader knows no exec plugins (EKS, GKE, OIDC helpers): the
    gateway then logs in through the kubernetes client, which runs the plugin. The plugin's
    token is the only credential in the kubeconfig, and the emulator answers 401 without it."""
    ran = tmp_path / "plugin-ran"
    plugin = (
        "import json, pathlib, sys; pathlib.Path(sys.argv[1]).touch(); print(json.dumps({"
        "'apiVersion': 'client.authentication.k8s.io/v1beta1', 'kind': 'ExecCredential',"
        f"'status': {{'token': '{TOKEN}'}}}}))"
    )
    config = base.kubeconfig(tmp_path / "kubeconfig")
    document = yaml.safe_load(config.read_text())
    document["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": ["-c", plugin, str(ran)],
            "interactiveMode": "Never",
        }
    }
    config.write_text(yaml.safe_dump(document))
    gw = start_gateway(extra_args=("--source", "kubernetes", "--kubeconfig", str(config)))
    assert ran.exists(), "the exec plugin never ran"
    assert ask(gw, "a", KEY) == 200
