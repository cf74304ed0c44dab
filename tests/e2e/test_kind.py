"""kubellm on a kind cluster, end to end, as a user meets it (README, "Install on
Kubernetes"): image, chart, examples, a minted key, the official openai SDK through a
port-forward, a policy change, and a rolling update during a long stream.

`make e2e` runs it; tests/e2e/conftest.py says why it is skipped elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import yaml

from tests.e2e.cluster import GATEWAY, NAMESPACE, ROOT, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# A stream of ~12 s: longer than the preStop sleep, shorter than the drain grace (30 s).
SLOW_WORDS = [f"word{i}" for i in range(60)]
SLOW = [
    {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": "mock-slow"},
        "spec": {"type": "Mock", "mock": {"tokensPerSecond": 5, "text": " ".join(SLOW_WORDS)}},
    },
    {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "LLMModel",
        "metadata": {"name": "mock-slow"},
        "spec": {"model": "mock/slow", "backends": [{"provider": "mock-slow", "model": "slow"}]},
    },
]
EXAMPLE_RESOURCES = [
    "llmprovider/mock",
    "llmmodel/mock-small",
    "llmmodel/mock-large",
    "accesspolicy/developers",
    "apikey/demo",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("kind")
    cluster = Cluster(workdir)
    cluster.create()
    try:
        cluster.install()
        cluster.apply(ROOT / "deploy" / "examples")
        slow = workdir / "slow.yaml"
        slow.write_text(yaml.safe_dump_all(SLOW))
        cluster.apply(slow)
        cluster.wait_ready(*EXAMPLE_RESOURCES, "llmmodel/mock-slow")
        yield cluster
    finally:
        cluster.delete()


@pytest.fixture(scope="module")
def key(cluster: Cluster) -> str:
    return cluster.minted_key("demo")


def client(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def stream_words(sdk: openai.OpenAI, model: str) -> list[str]:
    stream = sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello from kind"}], stream=True
    )
    return [
        chunk.choices[0].delta.content.strip()
        for chunk in stream
        if chunk.choices and chunk.choices[0].delta.content
    ]


def test_minted_key_streams_through_a_port_forward(cluster: Cluster, key: str) -> None:
    assert key.startswith("sk-kl-")
    with cluster.port_forward() as base_url:
        sdk = client(base_url, key)
        models = {m.id for m in sdk.models.list()}
        assert {"mock/small", "small", "mock/large", "mock/slow"} <= models
        words = stream_words(sdk, "mock/small")
        assert " ".join(words).startswith("Mock reply from")
        with pytest.raises(openai.AuthenticationError):
            client(base_url, "sk-kl-not-a-key").models.list()


def test_a_policy_change_is_enforced(cluster: Cluster, key: str) -> None:
    original = json.loads(
        cluster.kubectl("get", "-n", NAMESPACE, "accesspolicy", "developers", "-o", "json")
    )["spec"]["models"]
    patch = json.dumps({"spec": {"models": ["mock/large"]}})
    cluster.kubectl(
        "patch", "-n", NAMESPACE, "accesspolicy", "developers", "--type=merge", "-p", patch
    )
    try:
        with cluster.port_forward() as base_url:
            sdk = client(base_url, key)
            deadline = time.monotonic() + 30
            while True:
                try:
                    stream_words(sdk, "mock/small")
                except openai.NotFoundError:
                    break
                assert time.monotonic() < deadline, "mock/small still served after 30 s"
                time.sleep(0.5)
            assert stream_words(sdk, "mock/large")
    finally:
        restore = json.dumps({"spec": {"models": original}})
        cluster.kubectl(
            "patch", "-n", NAMESPACE, "accesspolicy", "developers", "--type=merge", "-p", restore
        )


def test_rolling_the_gateway_loses_no_stream(cluster: Cluster, key: str) -> None:
    words: list[str] = []
    errors: list[BaseException] = []
    with cluster.port_forward() as base_url:
        sdk = client(base_url, key)
        first = threading.Event()

        def read() -> None:
            try:
                stream = sdk.chat.completions.create(
                    model="mock/slow", messages=[{"role": "user", "content": "go"}], stream=True
                )
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        words.append(chunk.choices[0].delta.content.strip())
                        first.set()
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert first.wait(60), "the stream did not start"
        cluster.kubectl("rollout", "restart", "-n", NAMESPACE, f"deployment/{GATEWAY}")
        reader.join(120)
        assert not reader.is_alive()
    assert not errors, errors
    assert words == SLOW_WORDS
    cluster.kubectl(
        "rollout", "status", "-n", NAMESPACE, f"deployment/{GATEWAY}", "--timeout=180s", timeout=200
    )
    with cluster.port_forward() as base_url:
        assert stream_words(client(base_url, key), "small")


def test_pods_run_as_the_chart_says(cluster: Cluster) -> None:
    pods = json.loads(
        cluster.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/instance=kubellm", "-o", "json"
        )
    )["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "gateway",
        "operator",
    }
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
