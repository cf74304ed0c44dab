"""deploy/examples/ as a platform team applies it: kubectl against the emulator, the
operator reconciling, every resource Ready and both API keys minted."""

from __future__ import annotations

from kubellm_gateway.resources import parse_resource
from kubellm_operator.reconciler import Reconciler
from tests.operator.conftest import minted_key, wait_condition
from tests.support.examples import EXAMPLES, example_documents
from tests.support.kube import KubeAPI, KubeEmulator


def test_the_examples_parse_and_cover_every_kind() -> None:
    docs = example_documents()
    resources = [parse_resource(doc) for doc in docs]
    assert all(r is not None for r in resources)
    kinds = {doc["kind"] for doc in docs}
    assert kinds == {"Secret", "LLMProvider", "LLMModel", "AccessPolicy", "APIKey"}
    types = {d["spec"]["type"] for d in docs if d["kind"] == "LLMProvider"}
    assert types == {"OpenAI", "AzureOpenAI", "Mock"}
    placeholders = [d for d in docs if d["kind"] == "Secret"]
    assert placeholders and all("REPLACE-ME" in str(d["stringData"]) for d in placeholders)


def test_kubectl_apply_of_the_examples_ends_all_ready(
    operator: Reconciler, kube: KubeEmulator, kube_api: KubeAPI
) -> None:
    kube.kubectl("apply", "-f", str(EXAMPLES))
    docs = [d for d in example_documents() if d["kind"] != "Secret"]
    assert len(docs) >= 10
    for doc in docs:
        wait_condition(kube_api, doc["kind"], doc["metadata"]["name"], "Ready", "True", "Ready")
    kube.kubectl("wait", "--for=condition=Ready", "llmm", "--all", "--timeout=5s")

    for secret_name in ("ci-bot-api-key", "demo-api-key"):
        assert minted_key(kube_api, secret_name).startswith("sk-kl-")
    ready = kube.kubectl("get", "kubellm", "--no-headers").stdout.splitlines()
    assert len(ready) == len(docs)
    assert all(" True " in line for line in ready), ready
