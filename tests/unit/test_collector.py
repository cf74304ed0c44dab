"""Collector: collections paused during builds, the configuration frozen after them, and a
full sweep once what is frozen has grown by half, which frees cycles that died frozen."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from kubellm_gateway.collector import Collector


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with nothing frozen
    gc.enable()


class Node:
    def __init__(self) -> None:
        self.peer: Node = self  # a reference cycle: only the collector frees it


def test_paused_disables_collection_and_restores_it_on_errors() -> None:
    collector = Collector()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("a build failed")
    assert gc.isenabled()


def test_settle_freezes_and_sweeps_only_after_growth() -> None:
    collector = Collector(growth=0.5)
    assert collector.settle()  # the first settle sweeps: nothing was swept before
    assert collector.swept > 0
    assert gc.get_freeze_count() > 0  # everything alive is frozen
    assert not collector.settle()  # little changed: frozen again, no full pass
    kept = [[i] for i in range(collector.swept)]  # at least doubles the heap
    assert collector.settle()
    assert collector.swept >= len(kept)


def test_a_cycle_that_died_frozen_is_freed_by_the_next_sweep() -> None:
    collector = Collector(growth=0.5)
    collector.settle()
    node = Node()
    alive = weakref.ref(node)
    assert not collector.settle()  # the cycle is frozen while alive
    del node
    gc.collect()
    assert alive() is not None  # dead, but frozen: no collection sees it
    kept = [[i] for i in range(collector.swept)]
    assert collector.settle()
    assert alive() is None
    assert kept
