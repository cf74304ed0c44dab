"""A real `kubellm-gateway` process for tests, with its manifests folder and log."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import httpx2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Every secret a test hands a gateway; no gateway log may ever contain one.
SECRETS: set[str] = set()


def new_key() -> str:
    """A fresh API key: test keys are made at run time, never committed."""
    key = "sk-kl-" + secrets.token_urlsafe(32)
    SECRETS.add(key)
    return key


def leaked_secrets(log: str) -> list[str]:
    return [s[:10] + "..." for s in SECRETS if s in log]


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        manifests: str = "",
        *,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.folder = workdir / "manifests"
        self.folder.mkdir()
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "gateway.log"
        if manifests:
            self.write("main.yaml", manifests)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubellm_gateway.cli",
                "--manifests",
                str(self.folder),
                "--port",
                str(self.port),
                "--metrics-port",
                str(self.metrics_port),
                "--reload-interval",
                "0.1",
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.http = httpx2.Client(base_url=self.url, timeout=10)
        try:
            self.wait_ready()
        except BaseException:
            # The fixtures stop only gateways that started: one that never got ready must
            # not outlive its test (a hung one did, holding its ports).
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def generation(self) -> int:
        try:
            response = self.http.get("/readyz")
        except httpx2.TransportError:
            return -1
        if response.status_code != 200:
            return -1
        generation: int = response.json()["generation"]
        return generation

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.process.returncode}:\n{self.log()}")
            if self.generation() >= 1:
                return
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready after {timeout}s:\n{self.log()}")

    def write(self, name: str, manifests: str) -> None:
        """Write a manifest file atomically (as editors and ConfigMap updates do)."""
        tmp = self.folder / f".{name}.tmp"
        tmp.write_text(dedent(manifests))
        tmp.replace(self.folder / name)

    def apply(self, name: str, manifests: str, timeout: float = 5) -> float:
        """Write a file and wait for the gateway to load it; returns the seconds it took."""
        before = self.generation()
        started = time.monotonic()
        self.write(name, manifests)
        return self._wait_generation(before, started, timeout)

    def remove(self, name: str, timeout: float = 5) -> float:
        before = self.generation()
        started = time.monotonic()
        (self.folder / name).unlink()
        return self._wait_generation(before, started, timeout)

    def _wait_generation(self, before: int, started: float, timeout: float) -> float:
        while time.monotonic() - started < timeout:
            if self.generation() > before:
                return time.monotonic() - started
            time.sleep(0.01)
        raise TimeoutError(f"no new configuration after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx2.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def stop(self) -> None:
        """Stop the process; fails if its log ever held a secret."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        self._log.close()
        leaked = leaked_secrets(self.log_path.read_text(errors="replace"))
        assert not leaked, f"secrets in the gateway log {self.log_path}: {leaked}"
