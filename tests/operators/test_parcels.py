"""operators.parcels: a batch's items per key travel as one item, and arrive complete and in order."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main
from hypothesis import given
from hypothesis import strategies as st

from operators.parcels import UnparcelLogic, items_of, parcels, unparcel
from operators.state_guard import guarded_keyed_step


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers())))
def test_parcels_keep_every_item_and_each_keys_order(items: list[tuple[str, int]]) -> None:
    grouped = parcels(items, lambda kv: kv[0])
    assert [k for k, _ in grouped] == list(dict.fromkeys(k for k, _ in items))  # keys in first-seen order
    for k, parcel in grouped:
        assert parcel == [kv for kv in items if kv[0] == k]
    assert sorted(unparcel(p for _, p in grouped)) == sorted(items)


def test_items_of_flattens_parcels_among_single_items() -> None:
    assert items_of([1, [2, 3], [], 4]) == [1, 2, 3, 4]
    assert items_of([(1, 2), [(3, 4)]]) == [(1, 2), (3, 4)]  # a tuple is an item, not a parcel


class _Log:
    """Per key: every value it got, in order; notify, eof and snapshot answer what the wrapper must pass on."""

    def __init__(self, resume: list[int] | None) -> None:
        self.seen: list[int] = list(resume or [])

    def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
        self.seen.extend(values)
        return [len(self.seen)], False

    def on_notify(self) -> tuple[list[int], bool]:
        return [-1], True

    def on_eof(self) -> tuple[list[int], bool]:
        return [-2], False

    def notify_at(self) -> None:
        return None

    def snapshot(self) -> list[int]:
        return list(self.seen)


def test_unparcel_logic_hands_one_batch_and_passes_the_rest_through() -> None:
    logic = UnparcelLogic(_Log([7]))
    assert logic.on_batch([[1, 2], [3]]) == ([4], False)
    assert logic.snapshot() == [7, 1, 2, 3]
    assert (logic.on_notify(), logic.on_eof(), logic.notify_at()) == (([-1], True), ([-2], False), None)


class _Echo(_Log):
    def on_batch(self, values: list[int]) -> tuple[list[int], bool]:
        return values, False

    def on_eof(self) -> tuple[list[int], bool]:
        return [], False


def test_a_keyed_batch_step_across_workers_gets_each_keys_items_complete_and_in_order() -> None:
    """Three workers: each key's items leave the reading worker in parcels and reach its logic in order."""
    items = [(f"k{i % 7}", i) for i in range(600)]
    flow = Dataflow("parcels_test")
    up = op.input("in", flow, TestingSource(items, batch_size=16))
    out = guarded_keyed_step("echo", up, lambda kv: kv[0], 1, _Echo, batch=True, unkey=lambda kv: kv)
    seen: list[tuple[str, tuple[str, int]]] = []
    op.output("out", out, TestingSink(seen))
    cluster_main(flow, [], 0, worker_count_per_proc=3)
    for j in range(7):
        key = f"k{j}"
        assert [kv for k, kv in seen if k == key] == [kv for kv in items if kv[0] == key]
