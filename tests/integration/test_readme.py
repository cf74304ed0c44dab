"""The README's quickstart snippets, run as written against the example folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import StartGateway
from tests.support.gateway import GatewayProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "local"


def snippet(kind: str) -> str:
    """The fenced block right after `<!-- readme-test: kind -->` in README.md."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- readme-test: {kind} -->\n```\w+\n(.*?)```", readme, re.DOTALL)
    assert found, f"README.md has no {kind} snippet"
    return found.group(1)


@pytest.fixture(scope="module")
def gateway(start_module_gateway: StartGateway) -> GatewayProcess:
    manifests = "\n---\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml")))
    return start_module_gateway(manifests)


def as_written(code: str, gateway: GatewayProcess) -> str:
    # The README targets `make run`'s port; only the port differs here.
    assert "127.0.0.1:8080" in code
    return code.replace("127.0.0.1:8080", f"127.0.0.1:{gateway.port}")


def test_curl_snippet(gateway: GatewayProcess) -> None:
    result = subprocess.run(
        ["sh", "-c", as_written(snippet("curl"), gateway)],
        capture_output=True,
        check=True,
        timeout=30,
    )
    reply = orjson.loads(result.stdout)
    assert reply["choices"][0]["message"]["content"] == "Mock reply from mock-small-v1: Hello!"


def test_python_snippet(gateway: GatewayProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-c", as_written(snippet("python"), gateway)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    )
    models, text = result.stdout.splitlines()
    assert models == "['mock/large', 'mock/small']"
    assert text == "Mock reply from mock-small-v1: Stream a reply, please."
