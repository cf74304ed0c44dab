"""Shared fixtures: real processes on 127.0.0.1, never a patched client.

`start_gateway` starts `kubellm-gateway` as a subprocess on free ports over a
temporary manifests folder that tests may rewrite while it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.otlp import FakeCollector
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway import GatewayProcess, new_key
from tests.support.kube import KubeAPI, KubeEmulator
from tests.support.redis import BINARY as REDIS_BINARY
from tests.support.redis import RedisServer

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=new_key()) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_azure() -> Iterator[FakeUpstream]:
    with FakeUpstream("azure", api_key=new_key()) as fake:
        yield fake


def _starter(factory: pytest.TempPathFactory) -> tuple[StartGateway, list[GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(manifests: str = "", **kwargs: Any) -> GatewayProcess:
        process = GatewayProcess(factory.mktemp("gateway"), manifests, **kwargs)
        started.append(process)
        return process

    return start, started


@pytest.fixture
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    start, started = _starter(tmp_path_factory)
    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def start_module_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Like start_gateway, shared by a module's tests (a process start costs ~1 s)."""
    start, started = _starter(tmp_path_factory)
    yield start
    for process in started:
        process.stop()


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    """A fake OpenTelemetry collector on 127.0.0.1 (fakes/otlp.py)."""
    with FakeCollector() as c:
        yield c


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """A fresh Kubernetes API emulator on 127.0.0.1 with kubellm's CRDs (support/kube.py)."""
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
def kube_api(kube: KubeEmulator) -> Iterator[KubeAPI]:
    """A small HTTP client of `kube`, by kind and name, in namespace default."""
    api = KubeAPI(kube.url)
    yield api
    api.close()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server of our own on a free 127.0.0.1 port (tests/support/redis.py)."""
    if REDIS_BINARY is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server; .ci/run does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
