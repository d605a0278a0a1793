"""The crossing-cost benchmark: both encodings give the events back, and it reports what it timed."""

from __future__ import annotations

import pickle

import pytest

from loadtest import pickle_cost


def test_the_benchmark_times_both_encodings_of_decoded_traffic() -> None:
    r = pickle_cost.measure(events=400, runs=2, say=lambda _: None)
    assert r["items"] > 300  # a few records of the traffic are broken on purpose (dead letters)
    assert r["flat_us"] > 0 and r["positional_us"] > 0
    # the ratio of the unrounded medians: the rounded figures give it back to within rounding
    assert r["flat_over_positional"] == pytest.approx(r["flat_us"] / r["positional_us"], abs=2e-3)
    assert r["bytes_flat"] < r["bytes_positional"]  # one class reference per event instead of several


def test_items_are_what_the_identity_step_receives() -> None:
    items = pickle_cost.decoded_items(200)
    key, ev = items[0]
    assert key.startswith(ev.tenant_id + "\x1f")
    assert pickle.loads(pickle_cost._dumps_positional(items[0])) == items[0]
