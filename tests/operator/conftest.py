"""The operator under test: real kopf in its own thread, against the Kubernetes emulator."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubellm_gateway.kube_credentials import load_config
from kubellm_operator.kubeapi import Cluster
from kubellm_operator.main import build_registry
from kubellm_operator.reconciler import Reconciler
from tests.support.kube import KubeAPI, KubeEmulator, run_kopf

KUBELLM = "kubellm.io/v1alpha1"


@pytest.fixture
def operator(kube: KubeEmulator, tmp_path: Path) -> Iterator[Reconciler]:
    cluster = Cluster(load_config(kube.kubeconfig(tmp_path / "kubeconfig")))
    reconciler = Reconciler(cluster)
    with run_kopf(kube.url, build_registry(reconciler)):
        yield reconciler
    cluster.close()


def resource(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": KUBELLM, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


def secret(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": values}


def condition(obj: dict[str, Any] | None, type_: str) -> tuple[str, str] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


def wait_condition(
    api: KubeAPI, kind: str, name: str, type_: str, status: str, reason: str, timeout: float = 10
) -> dict[str, Any]:
    obj = api.wait(kind, name, lambda o: condition(o, type_) == (status, reason), timeout=timeout)
    assert obj is not None
    return obj


def message(obj: dict[str, Any], type_: str) -> str:
    return str(next(c["message"] for c in obj["status"]["conditions"] if c["type"] == type_))


def events_of(api: KubeAPI, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about objects named `name`, oldest first."""
    events = [e for e in api.list("Event") if e["involvedObject"]["name"] == name]
    events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"], e["message"]) for e in events]


def wait_event(api: KubeAPI, name: str, reason: str, timeout: float = 5) -> tuple[str, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in events_of(api, name) if e[1] == reason]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no Event {reason} about {name}: {events_of(api, name)}")
        time.sleep(0.05)


def minted_key(api: KubeAPI, secret_name: str) -> str:
    obj = api.get("Secret", secret_name)
    assert obj is not None
    return base64.b64decode(obj["data"]["apiKey"]).decode()


def settle(seconds: float = 0.5) -> None:
    """Give the operator time to do what it must not do (a second mint, a spurious Event)."""
    time.sleep(seconds)
