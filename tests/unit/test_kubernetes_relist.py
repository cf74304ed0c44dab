"""The kubernetes source after 410 Gone: kopf's re-list told from its first list, and the
restart that follows (no cluster here; tests/integration/test_kubernetes_source.py has one)."""

from __future__ import annotations

import asyncio
import threading
import time

from kubellm_gateway.resources import Resource
from kubellm_gateway.sources.kubernetes import FirstList, KubernetesSource


def test_each_object_indexed_before_the_gate_is_owed_one_listed_event() -> None:
    first = FirstList()
    first.indexed("a")
    first.indexed("b")
    first.indexed("invalid")  # indexed, not stored: still owed its event
    assert not first.relisted("a")  # event handlers may run before the gate handler
    first.gate_opened()
    first.indexed("created-after")  # arrives as ADDED: never owed a listed event
    assert not first.relisted("b")
    assert not first.relisted("invalid")
    assert first.relisted("a")  # listed a second time
    assert first.relisted("created-during-an-outage")
    assert first.relisted("created-after")


def test_an_object_without_uid_never_counts_as_a_relist() -> None:
    first = FirstList()
    first.gate_opened()
    assert not first.relisted(None)


async def _no_apply(resources: list[Resource], invalid: dict[str, int]) -> None:
    pass


class Runs(KubernetesSource):
    """kopf runs replaced by outcomes: "relist" ends at once, "follow" until stopped."""

    def __init__(self, *outcomes: str) -> None:
        super().__init__(_no_apply, restart_backoff=(30.0, 30.0))
        self.outcomes = list(outcomes)
        self.started = 0
        self.following = threading.Event()

    async def _operate(
        self, serving_loop: asyncio.AbstractEventLoop, ready: asyncio.Event, stop: threading.Event
    ) -> bool:
        self.started += 1
        if self.outcomes.pop(0) == "relist":
            return True
        self.following.set()
        await asyncio.to_thread(stop.wait)
        return False


async def _follow_then_stop(source: Runs) -> float:
    """Seconds until a run follows (at most 5); then the source is stopped."""
    task = asyncio.create_task(source.run(asyncio.Event()))
    started = time.monotonic()
    await asyncio.to_thread(source.following.wait, 5)
    took = time.monotonic() - started
    task.cancel()
    stopping = time.monotonic()
    await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - stopping < 5, "the stop did not reach the running kopf"
    return took


def test_a_relist_restarts_kopf_at_once_and_a_stop_reaches_the_new_run() -> None:
    source = Runs("relist", "relist", "follow")
    assert asyncio.run(_follow_then_stop(source)) < 2  # no error backoff (30 s here)
    assert source.started == 3
