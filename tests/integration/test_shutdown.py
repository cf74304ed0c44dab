"""Graceful shutdown: SIGTERM fails readiness, then closes the listener, then lets
streams in flight finish within --shutdown-grace and cuts the rest at the grace.

What a rolling update does to a pod, done to a real gateway process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import openai
import pytest

from tests.conftest import StartGateway
from tests.support.gateway import GatewayProcess, new_key
from tests.support.manifests import api_key, backend, dump, model, policy, provider

KEY = new_key()
WORDS = [f"w{i}" for i in range(25)]


def manifests(words_per_second: float) -> str:
    return dump(
        provider(
            "mock", "Mock", mock={"tokensPerSecond": words_per_second, "text": " ".join(WORDS)}
        ),
        model("slow", [backend("mock", "slow-v1")]),
        api_key("tester", KEY, groups=["testers"]),
        policy("all", [("Group", "testers")], models=["*"]),
    )


class StreamInThread:
    """One streaming chat completion through the official SDK, read in a thread."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
        self.words: list[str] = []
        self.error: Exception | None = None
        self.ended_at = 0.0
        self.first_word = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.first_word.wait(10), "the stream did not start"

    def _read(self) -> None:
        try:
            stream = self.client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "talk slowly"}], stream=True
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.words.append(chunk.choices[0].delta.content.strip())
                    self.first_word.set()
        except Exception as exc:  # the assertions look at it
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first_word.set()
            self.client.close()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the stream still runs after {timeout}s"


def refused(gateway: GatewayProcess) -> bool:
    try:
        httpx2.get(gateway.url + "/healthz", timeout=2)
    except httpx2.ConnectError:
        return True
    except (httpx2.RemoteProtocolError, httpx2.ReadError):
        # Accepted in the moment the listener closed, then closed unanswered as an
        # idle connection (uvicorn's shutdown; clients retry these): not yet refused.
        return False
    return False


def wait_refused(gateway: GatewayProcess, timeout: float) -> float:
    """When new connections started being refused, waiting at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refused(gateway):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"the gateway still accepts connections after {timeout}s")


def test_a_stream_in_flight_finishes_after_sigterm(start_gateway: StartGateway) -> None:
    # 25 words at 5 per second: the stream outlives the 2 s delay by about 3 s.
    gateway = start_gateway(
        manifests(5), extra_args=("--shutdown-delay", "2", "--shutdown-grace", "20")
    )
    assert gateway.http.get("/readyz").status_code == 200
    stream = StreamInThread(gateway)

    gateway.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Readiness fails first, while the listener still answers.
    ready = httpx2.get(gateway.url + "/readyz", timeout=2)
    assert (ready.status_code, ready.json()) == (503, {"status": "shutting down"})
    assert time.monotonic() - signalled < 1.5

    closed = wait_refused(gateway, timeout=6)
    assert closed - signalled >= 1.8, "the listener closed before the delay was over"
    assert stream.thread.is_alive(), "the stream should still be in flight"

    stream.join(20)
    assert stream.error is None
    assert stream.words == WORDS
    assert stream.ended_at > closed
    assert gateway.process.wait(10) == 0
    assert "readiness failed" in gateway.log()


def test_a_stream_longer_than_the_grace_is_cut_at_the_grace(start_gateway: StartGateway) -> None:
    # 25 words at 2 per second would take 12 s; the grace is 1 s.
    gateway = start_gateway(
        manifests(2), extra_args=("--shutdown-delay", "0", "--shutdown-grace", "1")
    )
    stream = StreamInThread(gateway)

    gateway.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_refused(gateway, timeout=2)
    stream.join(10)

    assert 0 < len(stream.words) < len(WORDS)
    assert stream.words == WORDS[: len(stream.words)]
    assert stream.error is not None, "a cut stream must not look complete to the client"
    assert 0.9 <= stream.ended_at - signalled < 5
    assert gateway.process.wait(10) == 0


def test_without_requests_in_flight_it_exits_at_once(start_gateway: StartGateway) -> None:
    gateway = start_gateway(manifests(0))
    gateway.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert gateway.process.wait(10) == 0
    assert time.monotonic() - signalled < 3


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--shutdown-grace", "-1"], {}, "--shutdown-grace -1: must be 0 or more"),
        (["--shutdown-delay", "-5"], {}, "--shutdown-delay -5: must be 0 or more"),
        (["--shutdown-grace", "1.5"], {}, "'1.5' is not a valid int (from --shutdown-grace"),
        ([], {"KUBELLM_SHUTDOWN_GRACE": "soon"}, "'soon' is not a valid int"),
    ],
)
def test_bad_shutdown_settings_are_refused(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubellm_gateway.cli", "--manifests", str(tmp_path), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
