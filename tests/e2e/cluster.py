"""A kind cluster with kubellm installed, driven through the same commands the README gives
a user: kind, docker, helm (from .tools/bin) and kubectl."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.chart import tools

ROOT = tools.ROOT
NAME = os.environ.get("KUBELLM_E2E_CLUSTER", "kubellm-e2e")
IMAGE = "kubellm:e2e"
NAMESPACE = RELEASE = "kubellm"
GATEWAY = f"{RELEASE}-gateway"


def run(*args: str | Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stderr}")
    return result.stdout


class Cluster:
    """One kind cluster; `install()` builds and loads the image, then installs the chart."""

    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.created = False

    def create(self) -> None:
        if NAME not in run("kind", "get", "clusters").split():
            run(
                "kind",
                "create",
                "cluster",
                "--name",
                NAME,
                "--config",
                ROOT / "deploy" / "kind" / "cluster.yaml",
                "--wait",
                "120s",
                timeout=600,
            )
            self.created = True
        self.kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", NAME))

    def delete(self) -> None:
        # KUBELLM_E2E_KEEP=1 keeps the cluster for a look around (kind delete cluster --name ...).
        if self.created and os.environ.get("KUBELLM_E2E_KEEP") != "1":
            run("kind", "delete", "cluster", "--name", NAME, timeout=300)

    def kubectl(self, *args: str | Path, timeout: float = 120) -> str:
        return run("kubectl", "--kubeconfig", self.kubeconfig, *args, timeout=timeout)

    def helm(self, *args: str | Path, timeout: float = 600) -> str:
        return run(tools.HELM, "--kubeconfig", self.kubeconfig, *args, timeout=timeout)

    def install(self) -> None:
        run("docker", "build", "-f", ROOT / "deploy" / "Dockerfile", "-t", IMAGE, ROOT, timeout=900)
        run("kind", "load", "docker-image", IMAGE, "--name", NAME, timeout=300)
        self.helm(
            "upgrade",
            "--install",
            RELEASE,
            ROOT / "helm" / "kubellm",
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "image.tag=e2e",
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout",
            "5m",
        )

    def apply(self, *paths: Path) -> None:
        for path in paths:
            self.kubectl("apply", "--namespace", NAMESPACE, "-f", path)

    def wait_ready(self, *resources: str, timeout: int = 180) -> None:
        self.kubectl(
            "wait",
            "--namespace",
            NAMESPACE,
            "--for=condition=Ready",
            f"--timeout={timeout}s",
            *resources,
            timeout=timeout + 30,
        )

    def minted_key(self, apikey: str) -> str:
        """The README's two commands: the APIKey's Secret, then its apiKey entry."""
        secret = self.kubectl(
            "get", "--namespace", NAMESPACE, "apikey", apikey, "-o", "jsonpath={.spec.secretName}"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            encoded = subprocess.run(
                [
                    "kubectl",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "get",
                    "--namespace",
                    NAMESPACE,
                    "secret",
                    secret,
                    "-o",
                    "jsonpath={.data.apiKey}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            if encoded:
                return base64.b64decode(encoded).decode()
            time.sleep(1)
        raise AssertionError(f"no key in Secret {secret} after 60s")

    @contextlib.contextmanager
    def port_forward(self, target: str = f"svc/{GATEWAY}", port: int = 80) -> Iterator[str]:
        """`kubectl port-forward` to 127.0.0.1; yields the base URL of the OpenAI API."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            local = s.getsockname()[1]
        process = subprocess.Popen(
            [
                "kubectl",
                "--kubeconfig",
                str(self.kubeconfig),
                "port-forward",
                "--namespace",
                NAMESPACE,
                "--address",
                "127.0.0.1",
                target,
                f"{local}:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", local), 1),
                ):
                    break
                if process.poll() is not None:
                    assert process.stderr is not None
                    raise AssertionError(f"port-forward failed: {process.stderr.read()!r}")
                assert time.monotonic() < deadline, f"port-forward to {target}: no port after 30s"
                time.sleep(0.2)
            yield f"http://127.0.0.1:{local}/v1"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
