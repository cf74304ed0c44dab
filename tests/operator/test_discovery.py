"""Azure deployment discovery in the operator: kopf for real against the Kubernetes emulator,
Entra ID and Resource Manager faked on 127.0.0.1 (tests/fakes/azure_control.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubellm_gateway.kube_credentials import load_config
from kubellm_gateway.resources import LLMProvider, parse_resource
from kubellm_operator.kubeapi import Cluster
from kubellm_operator.main import build_registry
from kubellm_operator.reconciler import Reconciler
from tests.fakes.azure_control import FakeAzureControl, deployment
from tests.operator.conftest import (
    condition,
    events_of,
    message,
    resource,
    secret,
    settle,
    wait_condition,
    wait_event,
)
from tests.support.gateway import free_port, new_key
from tests.support.kube import KubeAPI, KubeEmulator, run_kopf

TENANT, CLIENT = "tenant-1", "client-1"
ACCOUNT = ("sub-1", "rg-ai", "contoso-openai")
OTHER_ACCOUNT = ("sub-1", "rg-ai", "fabrikam-openai")
LABEL = "kubellm.io/discovered-by"


@pytest.fixture
def client_secret() -> str:
    return new_key()


@pytest.fixture
def arm(client_secret: str) -> Iterator[FakeAzureControl]:
    with FakeAzureControl(TENANT, {CLIENT: client_secret}) as fake:
        fake.deployments[ACCOUNT] = [deployment(f"dep-{i}", f"gpt-{i}") for i in range(3)]
        yield fake


def azure(
    arm: FakeAzureControl,
    *,
    interval: str = "1s",
    create_models: bool = False,
    tenant: str = TENANT,
    authority: str | None = None,
) -> dict[str, Any]:
    subscription, group, name = ACCOUNT
    entra = {
        "tenantID": tenant,
        "clientID": CLIENT,
        "clientSecretRef": {"name": "entra", "key": "clientSecret"},
        "authorityHost": authority or arm.url,
    }
    discovery = {
        "subscriptionID": subscription,
        "resourceGroup": group,
        "accountName": name,
        "interval": interval,
        "createModels": create_models,
        "armEndpoint": arm.url,
    }
    spec = {
        "type": "AzureOpenAI",
        "baseURL": "http://127.0.0.1:9",
        "azure": {"entraID": entra, "discovery": discovery},
    }
    return resource("LLMProvider", "azure", spec)


def listed(api: KubeAPI, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """status.discoveredDeployments once it has `count` entries."""
    obj = api.wait(
        "LLMProvider",
        "azure",
        lambda o: len(((o or {}).get("status") or {}).get("discoveredDeployments") or []) == count,
        timeout=timeout,
    )
    assert obj is not None
    found: list[dict[str, Any]] = obj["status"]["discoveredDeployments"]
    return found


def wait_discovered(api: KubeAPI, text: str, timeout: float = 10) -> dict[str, Any]:
    """The provider once its Discovered condition is True with this message."""
    obj = api.wait(
        "LLMProvider",
        "azure",
        lambda o: (
            condition(o, "Discovered") == ("True", "Discovered")
            and message(o or {}, "Discovered") == text
        ),
        timeout=timeout,
    )
    assert obj is not None
    return obj


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def discovered_models(api: KubeAPI) -> list[str]:
    return sorted(m["metadata"]["name"] for m in api.list("LLMModel", label_selector=LABEL))


def wait_gone(api: KubeAPI, kind: str, name: str) -> None:
    api.wait(kind, name, lambda o: o is None)


def test_deployments_are_listed_across_pages_with_one_token(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    arm.deployments[ACCOUNT] = [deployment(f"dep-{i}", f"gpt-{i}") for i in range(5)]
    arm.page_size = 2  # three pages
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm))
    assert [d["name"] for d in listed(kube_api, 5)] == [f"dep-{i}" for i in range(5)]
    assert listed(kube_api, 5)[4] == {
        "name": "dep-4",
        "model": "gpt-4",
        "version": "2024-08-06",
        "provisioningState": "Succeeded",
    }
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert message(obj, "Discovered") == "5 deployments listed"
    assert condition(obj, "Ready") == ("True", "Ready")
    assert [c["type"] for c in obj["status"]["conditions"]] == [
        "Accepted",
        "ResolvedRefs",
        "Ready",
        "Discovered",
    ]

    # The next listing (1 s later) sees a new deployment, with the token of the first.
    arm.deployments[ACCOUNT].append(deployment("dep-5", "gpt-5"))
    listed(kube_api, 6)
    wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert arm.token_requests == 1
    assert kube_api.list("LLMModel") == []  # createModels is off


def test_create_models_keeps_one_owned_model_per_deployment(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    backends = [{"provider": "azure", "model": "dep-1"}]
    kube_api.create(resource("LLMModel", "mine", {"model": "mine", "backends": backends}))
    other = resource("LLMModel", "other-dep-1", {"model": "o", "backends": backends})
    other["metadata"]["labels"] = {LABEL: "other"}
    kube_api.create(other)
    provider = kube_api.create(azure(arm, create_models=True))

    for i in range(3):
        model = kube_api.wait("LLMModel", f"azure-dep-{i}", lambda o: o is not None)
        assert model is not None
        assert model["spec"] == {
            "model": f"dep-{i}",
            "backends": [{"provider": "azure", "model": f"dep-{i}"}],
        }
        assert model["metadata"]["labels"] == {LABEL: "azure"}
        assert model["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "kubellm.io/v1alpha1",
                "kind": "LLMProvider",
                "name": "azure",
                "uid": provider["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        wait_condition(kube_api, "LLMModel", f"azure-dep-{i}", "Ready", "True", "Ready")
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert message(obj, "Discovered") == "3 deployments listed, an LLMModel for each"

    # What discovery decides is put back; what people add to a discovered model stays.
    pricing = {"inputPerMillion": 1.0, "outputPerMillion": 2.0}
    wrong = {"backends": [{"provider": "azure", "model": "elsewhere"}], "pricing": pricing}
    kube_api.patch("LLMModel", "azure-dep-0", {"spec": wrong})
    restored = kube_api.wait(
        "LLMModel",
        "azure-dep-0",
        lambda o: (o or {})["spec"]["backends"] == [{"provider": "azure", "model": "dep-0"}],
    )
    assert restored is not None and restored["spec"]["pricing"] == pricing

    # A deployment gone between two listings: its model goes, nobody else's.
    del arm.deployments[ACCOUNT][1]
    wait_gone(kube_api, "LLMModel", "azure-dep-1")
    assert [d["name"] for d in listed(kube_api, 2)] == ["dep-0", "dep-2"]
    settle(1.5)  # another listing
    assert discovered_models(kube_api) == ["azure-dep-0", "azure-dep-2", "other-dep-1"]
    assert kube_api.get("LLMModel", "mine") is not None


def test_a_deployment_gets_its_model_once_it_is_provisioned(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    properties = arm.deployments[ACCOUNT][2]["properties"]
    properties["provisioningState"] = "Creating"
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, create_models=True))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert message(obj, "Discovered") == (
        "3 deployments listed, an LLMModel for each of the 2 provisioned"
    )
    assert listed(kube_api, 3)[2]["provisioningState"] == "Creating"
    assert discovered_models(kube_api) == ["azure-dep-0", "azure-dep-1"]

    properties["provisioningState"] = "Succeeded"
    kube_api.wait("LLMModel", "azure-dep-2", lambda o: o is not None)
    wait_discovered(kube_api, "3 deployments listed, an LLMModel for each")


def test_a_model_of_the_same_name_made_by_hand_is_left_alone(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    spec = {"model": "custom", "backends": [{"provider": "azure", "model": "dep-0"}]}
    kube_api.create(resource("LLMModel", "azure-dep-0", spec))
    kube_api.create(azure(arm, create_models=True))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert message(obj, "Discovered") == (
        "3 deployments listed, an LLMModel for each; "
        "LLMModel default/azure-dep-0 exists, not made by discovery"
    )
    kube_api.wait("LLMModel", "azure-dep-2", lambda o: o is not None)
    settle(1.5)
    mine = kube_api.get("LLMModel", "azure-dep-0")
    assert mine is not None and mine["spec"] == spec and "labels" not in mine["metadata"]


def test_two_deployments_with_one_model_name_get_one_model(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    arm.deployments[ACCOUNT] = [deployment("GPT.4", "gpt-4"), deployment("gpt-4", "gpt-4")]
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, create_models=True))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    assert message(obj, "Discovered") == (
        "2 deployments listed, an LLMModel for each; "
        "deployment 'gpt-4' has no LLMModel: azure-gpt-4 is taken"
    )
    model = kube_api.get("LLMModel", "azure-gpt-4")
    assert model is not None and model["spec"]["model"] == "GPT.4"
    settle(1.5)  # the next listing leaves it so
    assert discovered_models(kube_api) == ["azure-gpt-4"]


def test_a_wrong_client_secret_is_credentials_rejected_until_it_is_fixed(
    arm: FakeAzureControl,
    client_secret: str,
    operator: Reconciler,
    kube_api: KubeAPI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = new_key()
    kube_api.create(secret("entra", clientSecret=wrong))
    kube_api.create(
        resource("LLMModel", "gpt", {"backends": [{"provider": "azure", "model": "d"}]})
    )
    # A long interval: the first listing is at once, and the fixed secret is tried at once.
    kube_api.create(azure(arm, interval="1h"))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Ready", "False", "CredentialsRejected")
    rejected = (
        "Entra ID refused the client credentials: AADSTS7000215: Invalid client secret provided."
    )
    assert message(obj, "Ready") == rejected
    assert condition(obj, "Discovered") == ("False", "CredentialsRejected")
    assert message(obj, "Discovered") == rejected
    assert condition(obj, "ResolvedRefs") == ("True", "ResolvedRefs")
    assert "discoveredDeployments" not in obj["status"]
    wait_condition(kube_api, "LLMModel", "gpt", "Ready", "False", "ProviderNotReady")
    wait_event(kube_api, "azure", "CredentialsRejected")
    settle()
    assert [e for e in events_of(kube_api, "azure") if e[0] == "Warning"] == [
        ("Warning", "CredentialsRejected", f"Ready is False: {rejected}"),
        ("Warning", "CredentialsRejected", f"Discovered is False: {rejected}"),
    ]

    kube_api.patch("Secret", "entra", {"stringData": {"clientSecret": client_secret}})
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Ready", "True", "Ready", timeout=5)
    assert condition(obj, "Discovered") == ("True", "Discovered")
    assert len(listed(kube_api, 3)) == 3
    wait_condition(kube_api, "LLMModel", "gpt", "Ready", "True", "Ready")
    wait_event(kube_api, "azure", "Discovered")
    settle()
    assert [e[1] for e in events_of(kube_api, "azure")] == [
        "Ready",
        "CredentialsRejected",
        "CredentialsRejected",
        "Ready",
        "Discovered",
    ]

    everything = str(kube_api.get("LLMProvider", "azure")) + str(kube_api.list("Event"))
    everything += caplog.text
    assert "AADSTS7000215" in caplog.text  # the operator's log says why
    for value in (wrong, client_secret):
        assert value not in everything and value[10:30] not in everything


@pytest.mark.parametrize(
    ("tenant", "nothing_listens", "reason", "expected"),
    [
        ("elsewhere", False, "CredentialsRejected", "AADSTS90002: Tenant 'elsewhere' not found."),
        (TENANT, True, "DiscoveryFailed", "Entra ID token endpoint http://127.0.0.1:"),
    ],
    ids=["unknown-tenant", "token-endpoint-unreachable"],
)
def test_token_failures_say_whose_fault_they_are(
    arm: FakeAzureControl,
    client_secret: str,
    operator: Reconciler,
    kube_api: KubeAPI,
    tenant: str,
    nothing_listens: bool,
    reason: str,
    expected: str,
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    authority = f"http://127.0.0.1:{free_port()}" if nothing_listens else None
    kube_api.create(azure(arm, tenant=tenant, authority=authority))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "False", reason)
    assert expected in message(obj, "Discovered")
    # Only refused credentials make the provider unusable for inference.
    ready = ("False", reason) if reason == "CredentialsRejected" else ("True", "Ready")
    assert condition(obj, "Ready") == ready


def test_resource_manager_failures_are_discovery_failed_and_delete_nothing(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, create_models=True))
    wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    kube_api.wait("LLMModel", "azure-dep-2", lambda o: o is not None)

    arm.down = True  # the token is cached: Resource Manager itself answers 503
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "False", "DiscoveryFailed")
    assert message(obj, "Discovered").startswith("Resource Manager answered 503")
    assert condition(obj, "Ready") == ("True", "Ready")  # inference does not go through ARM
    assert discovered_models(kube_api) == ["azure-dep-0", "azure-dep-1", "azure-dep-2"]
    assert len(listed(kube_api, 3)) == 3  # the last listing stands
    assert wait_event(kube_api, "azure", "DiscoveryFailed")[0] == "Warning"

    arm.down = False
    wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")


def test_a_missing_secret_is_waited_for_and_its_creation_acted_on(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(azure(arm, interval="1h"))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Ready", "False", "SecretNotFound")
    assert condition(obj, "Discovered") == ("Unknown", "SecretNotFound")
    assert message(obj, "Discovered") == (
        "deployments not listed: spec.azure.entraID.clientSecretRef: Secret default/entra not found"
    )
    settle()
    assert arm.token_requests == 0

    kube_api.create(secret("entra", clientSecret=client_secret))
    wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered", timeout=5)
    listed(kube_api, 3)


def test_a_new_spec_is_listed_at_once_not_at_the_next_interval(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    arm.deployments[OTHER_ACCOUNT] = [deployment("only", "gpt-4o")]
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, interval="1h"))
    listed(kube_api, 3)
    account = {"accountName": OTHER_ACCOUNT[2]}
    kube_api.patch("LLMProvider", "azure", {"spec": {"azure": {"discovery": account}}})
    assert [d["name"] for d in listed(kube_api, 1, timeout=5)] == ["only"]
    wait_discovered(kube_api, "1 deployment listed")


def test_switching_models_and_then_discovery_off_tidies_up(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, create_models=True))
    kube_api.wait("LLMModel", "azure-dep-2", lambda o: o is not None)

    off = {"spec": {"azure": {"discovery": {"createModels": False}}}}
    kube_api.patch("LLMProvider", "azure", off)
    for i in range(3):
        wait_gone(kube_api, "LLMModel", f"azure-dep-{i}")
    obj = wait_discovered(kube_api, "3 deployments listed")
    assert len(obj["status"]["discoveredDeployments"]) == 3

    kube_api.patch("LLMProvider", "azure", {"spec": {"azure": {"discovery": None}}})
    retired = kube_api.wait(
        "LLMProvider",
        "azure",
        lambda o: (
            "discoveredDeployments" not in (o or {})["status"]
            and condition(o, "Discovered") is None
        ),
    )
    assert retired is not None and condition(retired, "Ready") == ("True", "Ready")
    settle(1.5)  # more than an interval: no listing comes back
    later = kube_api.get("LLMProvider", "azure")
    assert later is not None and "discoveredDeployments" not in later["status"]


def test_a_restarted_operator_keeps_the_verdict_until_its_first_listing(
    arm: FakeAzureControl, kube: KubeEmulator, kube_api: KubeAPI, tmp_path: Path
) -> None:
    kube_api.create(secret("entra", clientSecret=new_key()))  # not the one Entra ID knows
    kube_api.create(azure(arm, interval="1h"))
    cluster = Cluster(load_config(kube.kubeconfig(tmp_path / "kubeconfig")))
    try:
        with run_kopf(kube.url, build_registry(Reconciler(cluster))):
            before = wait_condition(
                kube_api, "LLMProvider", "azure", "Ready", "False", "CredentialsRejected"
            )
            settle()
        # The new operator's first reconciliation comes before its first listing.
        with run_kopf(kube.url, build_registry(Reconciler(cluster))):
            wait_until(lambda: arm.token_requests == 2)
            settle()
    finally:
        cluster.close()
    # No flap to Ready (and back): the same conditions, no more Events.
    after = kube_api.get("LLMProvider", "azure")
    assert after is not None and after["status"]["conditions"] == before["status"]["conditions"]
    assert [e[1] for e in events_of(kube_api, "azure")] == [
        "Ready",
        "CredentialsRejected",
        "CredentialsRejected",
    ]


def test_a_provider_being_discovered_can_be_deleted_at_once(
    arm: FakeAzureControl, client_secret: str, operator: Reconciler, kube_api: KubeAPI
) -> None:
    kube_api.create(secret("entra", clientSecret=client_secret))
    kube_api.create(azure(arm, interval="1h"))
    obj = wait_condition(kube_api, "LLMProvider", "azure", "Discovered", "True", "Discovered")
    # kopf holds the provider with a finalizer while its daemon runs, and lets go when the
    # daemon has stopped: promptly, not after the interval or a cancellation timeout.
    assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    kube_api.delete("LLMProvider", "azure")
    kube_api.wait("LLMProvider", "azure", lambda o: o is None, timeout=3)


def test_the_readme_example_is_a_valid_provider() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Azure deployment discovery.**", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    manifest = {
        "apiVersion": "kubellm.io/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": "azure", "namespace": "default"},
        **yaml.safe_load(example),
    }
    provider = parse_resource(manifest)
    assert isinstance(provider, LLMProvider) and provider.spec.azure is not None
    discovery = provider.spec.azure.discovery
    assert discovery is not None and discovery.createModels and discovery.interval == 600
