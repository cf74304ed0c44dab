"""The Kubernetes emulator the operator and gateway tests stand on: kubectl and plain HTTP
see the API behaviours kopf and client-go rely on (tests/support/kube.py lists the fixes)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.operator.conftest import resource, secret
from tests.support.gateway import free_port
from tests.support.kube import TOKEN, KubeAPI, KubeEmulator

MOCK = resource("LLMProvider", "mock", {"type": "Mock"})


def test_kubectl_apply_get_patch_replace_delete(kube: KubeEmulator, kube_api: KubeAPI) -> None:
    manifest = json.dumps(MOCK)
    assert "created" in kube.kubectl("apply", "-f", "-", input=manifest).stdout
    got = json.loads(kube.kubectl("get", "llmp", "mock", "-o", "json").stdout)
    meta = got["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"].endswith("Z")

    kube.kubectl("patch", "llmp", "mock", "--type=merge", "-p", '{"spec":{"baseURL":"http://h"}}')
    kube.kubectl("patch", "llmp", "mock", "--type=merge", "-p", '{"metadata":{"labels":{"a":"b"}}}')
    status = '{"status":{"observedGeneration":2}}'
    kube.kubectl("patch", "llmp", "mock", "--subresource=status", "--type=merge", "-p", status)
    got = kube_api.get("LLMProvider", "mock")
    assert got is not None
    assert got["metadata"]["generation"] == 2  # spec changed once; labels and status do not count
    assert int(got["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert got["status"] == {"observedGeneration": 2}

    # The main resource ignores status, the status subresource ignores everything else.
    kube_api.patch("LLMProvider", "mock", {"status": {"observedGeneration": 9}})
    kube_api.patch("LLMProvider", "mock", {"spec": {"type": "OpenAI"}}, subresource="status")
    got = kube_api.get("LLMProvider", "mock")
    assert got is not None
    assert got["status"] == {"observedGeneration": 2} and got["spec"]["type"] == "Mock"

    got["spec"]["baseURL"] = "http://other"
    kube.kubectl("replace", "-f", "-", input=json.dumps(got))
    assert kube_api.get("LLMProvider", "mock")["spec"]["baseURL"] == "http://other"  # type: ignore[index]
    stale = kube.kubectl("replace", "-f", "-", input=json.dumps(got), check=False)
    assert stale.returncode != 0 and "modified" in stale.stderr  # optimistic concurrency

    kube.kubectl("delete", "llmp", "mock")
    assert kube_api.get("LLMProvider", "mock") is None
    assert kube.kubectl("get", "llmp", "-o", "name").stdout == ""


def test_json_patch_test_operations_check_the_resource_version(kube_api: KubeAPI) -> None:
    created = kube_api.create(MOCK)
    path = "/apis/kubellm.io/v1alpha1/namespaces/default/llmproviders/mock"
    headers = {"Content-Type": "application/json-patch+json"}
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}]
    assert kube_api.http.patch(path, json=stale, headers=headers).status_code == 422
    version = created["metadata"]["resourceVersion"]
    current = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    response = kube_api.http.patch(path, json=current, headers=headers)
    assert response.status_code == 200 and response.json()["metadata"]["labels"] == {"x": "y"}


def test_secrets_store_string_data_as_base64_data(kube_api: KubeAPI) -> None:
    created = kube_api.create(secret("s", token="abc"))
    assert "stringData" not in created
    assert base64.b64decode(created["data"]["token"]) == b"abc"
    kube_api.patch("Secret", "s", {"stringData": {"more": "d"}})
    got = kube_api.get("Secret", "s")
    assert got is not None and set(got["data"]) == {"token", "more"}


def test_create_answers_201_names_from_generate_name_and_selectors_filter(
    kube_api: KubeAPI,
) -> None:
    response = kube_api.http.post(
        "/api/v1/namespaces/default/events",
        json={"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "ev-"}},
    )
    assert response.status_code == 201
    assert response.json()["metadata"]["name"].startswith("ev-")
    kube_api.create(resource("LLMModel", "a", {}, labels={"tier": "x"}))
    kube_api.create(resource("LLMModel", "b", {}))
    assert [m["metadata"]["name"] for m in kube_api.list("LLMModel", label_selector="tier=x")] == [
        "a"
    ]
    assert [m["metadata"]["name"] for m in kube_api.list("LLMModel", label_selector="!tier")] == [
        "b"
    ]
    listing = kube_api.http.get("/apis/kubellm.io/v1alpha1/llmmodels").json()
    assert listing["kind"] == "LLMModelList" and listing["apiVersion"] == "kubellm.io/v1alpha1"


def test_watch_resumes_from_a_resource_version_and_times_out(kube_api: KubeAPI) -> None:
    first = kube_api.create(resource("LLMModel", "a", {}))
    kube_api.create(resource("LLMModel", "b", {}))
    params = {
        "watch": "true",
        "resourceVersion": first["metadata"]["resourceVersion"],
        "timeoutSeconds": "1",
    }
    started = time.monotonic()
    response = kube_api.http.get(
        "/apis/kubellm.io/v1alpha1/namespaces/default/llmmodels", params=params
    )
    assert time.monotonic() - started < 5
    assert response.headers["content-type"].startswith("application/json")
    events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_a_watch_from_before_a_compaction_gets_410_gone_and_ends(
    kube: KubeEmulator, kube_api: KubeAPI
) -> None:
    kube_api.create(resource("LLMModel", "a", {}))
    kube_api.create(resource("LLMModel", "b", {}))
    kube_api.delete("LLMModel", "a")
    path = "/apis/kubellm.io/v1alpha1/namespaces/default/llmmodels"
    latest = kube_api.http.get(path).json()["metadata"]["resourceVersion"]
    kube.compact()
    params = {"watch": "true", "timeoutSeconds": "5"}
    started = time.monotonic()
    # Even the newest version handed out before the compaction is too old now.
    response = kube_api.http.get(path, params={**params, "resourceVersion": latest})
    assert time.monotonic() - started < 2  # ended by the server, not by timeoutSeconds
    events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ERROR"]
    status = events[0]["object"]
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status",
        "Failure",
        "Expired",
        410,
    )
    assert status["message"].startswith("too old resource version: ")

    # From a list made after the compaction, and from "any version", watches work as before.
    listed = kube_api.http.get(path).json()["metadata"]["resourceVersion"]
    kube_api.create(resource("LLMModel", "c", {}))
    params["timeoutSeconds"] = "1"
    for since, names in ((listed, ["c"]), ("0", ["b", "c"])):
        response = kube_api.http.get(path, params={**params, "resourceVersion": since})
        events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", name) for name in names
        ]


def test_kubectl_get_watch_sees_changes(
    kube: KubeEmulator, kube_api: KubeAPI, tmp_path: Path
) -> None:
    config = kube.kubeconfig(tmp_path / "kubeconfig")
    watch = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(config), "get", "llmm", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1)  # kubectl lists, then watches
        kube_api.create(resource("LLMModel", "seen", {}))
        kube_api.delete("LLMModel", "seen")
        time.sleep(1)
    finally:
        watch.terminate()
        out, err = watch.communicate(timeout=10)
    assert out.split() == ["llmmodel.kubellm.io/seen", "llmmodel.kubellm.io/seen"], err


def test_suspend_and_resume_keep_the_objects_and_the_port(
    kube: KubeEmulator, kube_api: KubeAPI
) -> None:
    kube_api.create(MOCK)
    port = kube.port
    kube.suspend()
    with pytest.raises(httpx2.TransportError):
        httpx2.get(kube.url + "/version", timeout=2)
    kube.resume()
    assert kube.port == port
    assert kube_api.get("LLMProvider", "mock") is not None


def test_objects_change_while_suspended_and_clients_see_it_on_resume(
    kube: KubeEmulator, kube_api: KubeAPI
) -> None:
    kube_api.create(MOCK)
    kube.suspend()
    with kube.api_while_suspended() as side:
        assert side.delete("LLMProvider", "mock")
        side.create(resource("LLMModel", "new", {}))
        with pytest.raises(httpx2.TransportError):
            httpx2.get(kube.url + "/version", timeout=2)  # the clients' port stays down
    kube.resume()
    assert kube_api.get("LLMProvider", "mock") is None
    assert kube_api.get("LLMModel", "new") is not None


def test_as_a_process_it_serves_and_exits_promptly_on_sigterm_with_watches_open() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kube", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert (
            process.stdout.readline().strip() == f"kubernetes emulator at http://127.0.0.1:{port}"
        )
        url = f"http://127.0.0.1:{port}/apis/kubellm.io/v1alpha1/llmmodels?watch=true"
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx2.stream("GET", url, headers=auth, timeout=10) as watch:
            assert watch.status_code == 200
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}"])
def test_a_request_without_the_token_is_unauthorized(
    kube: KubeEmulator, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx2.get(
        kube.url + "/api/v1/namespaces/default/secrets", headers=headers, timeout=5
    )
    assert response.status_code == 401
    assert response.json()["reason"] == "Unauthorized"
    accepted = {"authorization": f"bearer {TOKEN}"}  # the scheme in any case, as in-cluster
    assert httpx2.get(
        kube.url + "/api/v1/namespaces/default/secrets", headers=accepted, timeout=5
    ).is_success
