"""The flow process's collector: young collections only, survivors frozen, and the flow leaves no cycles to leak."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.attribution import FlowSettings, build_flow
from flows.gc_policy import GC_THRESHOLDS, tune_gc, untune_gc
from loadtest.flow_cpu import READ_BATCH, records


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        untune_gc()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.payload = [0]
        self.peer: _Node | None = None


def test_survivors_are_frozen_so_no_collection_walks_them_again(tuned: None) -> None:
    assert gc.get_threshold() == GC_THRESHOLDS
    frozen = gc.get_freeze_count()
    kept = [_Node() for _ in range(3 * GC_THRESHOLDS[0])]  # enough allocations for a few collections
    assert gc.get_freeze_count() - frozen >= len(kept) // 2  # most of them left the generations
    assert sum(gc.get_count()[1:]) <= 1  # nothing waits in the older generations


def test_a_cycle_that_dies_young_is_still_collected(tuned: None) -> None:
    collected: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected.append(info["collected"])

    frozen = gc.get_freeze_count()
    gc.callbacks.append(count)
    try:
        for _ in range(2 * GC_THRESHOLDS[0]):
            a, b = _Node(), _Node()
            a.peer, b.peer = b, a
        gc.collect(1)
    finally:
        gc.callbacks.remove(count)
    assert sum(collected) > 3 * GC_THRESHOLDS[0]  # the automatic collections freed the dead pairs (4 objects each)
    # at most what was alive at each collection (the pair, the test's own objects) was frozen, not 400k objects
    assert gc.get_freeze_count() - frozen < 1_000


def test_the_flow_makes_no_cycles_per_event() -> None:
    """The premise of freezing: with Python's own collector saving all it finds, a run of 8,000 events leaves
    the same garbage cycles as a run of 1,000 (the dataflow graph's own: ports, operators, closures)."""

    def garbage_cycles(events: int) -> int:
        recs, out = records(events, rate=events), []  # held here: only what the run made can be garbage
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            flow = build_flow(TestingSource(recs, batch_size=READ_BATCH), TestingSink(out), FlowSettings())
            run_main(flow)
            del flow
            gc.collect()
            return len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            assert out  # the flow did its work

    garbage_cycles(300)  # imports and caches settle
    small, large = garbage_cycles(1_000), garbage_cycles(8_000)
    assert large <= small + 50, (small, large)
