"""`kubellm-operator` as a process, the way a Deployment runs it: kubeconfig, kopf peering
through its ClusterKopfPeering, reconciliation, a prompt and clean exit on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.operator.conftest import minted_key, resource, wait_condition
from tests.support.kube import KubeAPI, KubeEmulator


def test_the_operator_process_peers_reconciles_and_stops(
    kube: KubeEmulator, kube_api: KubeAPI, tmp_path: Path
) -> None:
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubellm_operator.main",
                "--kubeconfig",
                str(kube.kubeconfig(tmp_path / "kubeconfig")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            kube_api.create(resource("LLMProvider", "mock", {"type": "Mock"}))
            kube_api.create(resource("APIKey", "ci", {"secretName": "ci-key"}))
            wait_condition(kube_api, "LLMProvider", "mock", "Ready", "True", "Ready", timeout=20)
            wait_condition(kube_api, "APIKey", "ci", "Ready", "True", "Ready")
            peering = kube_api.http.get("/apis/kopf.dev/v1/clusterkopfpeerings/kubellm")
            assert peering.status_code == 200
            deadline = time.monotonic() + 10
            while not peering.json().get("status") and time.monotonic() < deadline:
                time.sleep(0.1)  # kopf announces itself in the peering object's status
                peering = kube_api.http.get("/apis/kopf.dev/v1/clusterkopfpeerings/kubellm")
            assert peering.json().get("status"), "the operator never announced itself"
        finally:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert time.monotonic() - started < 15
    text = log_path.read_text()
    key = minted_key(kube_api, "ci-key")
    assert key not in text and key[10:] not in text
    assert "new key " + key[:10] in text
