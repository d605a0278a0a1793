"""operators.routing: our reading of Bytewax's key routing matches what a real cluster does."""

from __future__ import annotations

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from operators.routing import bytewax_worker, partition_of, shard_worker, siphash13
from operators.sharded import SHARDS, shard_of


def _workers_of(keys: list[str], workers: int) -> dict[str, int]:
    """Run ``keys`` through a keyed step of a ``workers``-thread Bytewax cluster: the worker each key reached."""
    flow = Dataflow("routing")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    held = op.stateful_map("held", keyed, lambda state, v: (state, v))
    seen: dict[str, int] = {}
    op.inspect_debug("where", held, lambda _s, kv, _e, worker: seen.__setitem__(kv[0], worker))
    op.output("out", held, TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


def test_siphash13_reference_vectors() -> None:
    """SipHash-1-3 with keys 0, 0, as the reference implementation (github.com/veorq/SipHash) gives it."""
    assert siphash13(b"") == 0xD1FBA762150C532C
    assert siphash13(b"\x00") == 0x68A914128E01E473
    assert siphash13(b"siphash") == 0x8264CEECCB16BCBE


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_every_shard_reaches_the_worker_predicted(workers: int) -> None:
    shards = [f"s{i:02d}" for i in range(SHARDS)]
    seen = _workers_of(shards, workers)
    assert seen == {s: shard_worker(s, workers) for s in shards}
    assert len(set(seen.values())) == workers  # the prediction is not trivially one worker


def test_arbitrary_keys_reach_the_worker_predicted() -> None:
    keys = ["", "a", "acme\x1fa:anon-1", "ünïcode ☃", "x" * 7, "y" * 8, "z" * 9, "w" * 100]
    assert _workers_of(keys, 3) == {k: bytewax_worker(k, 3) for k in keys}


def test_partition_of_puts_a_device_where_its_state_is() -> None:
    """With P processes dividing N partitions, partition p (read by worker p % P) holds the device's shard."""
    for n in range(40):
        tenant, anon = f"t{n % 3}", f"anon-{n}"
        shard = shard_of(f"{tenant}\x1fa:{anon}")
        for partitions, processes in [(4, 2), (4, 4), (8, 2), (6, 3)]:
            p = partition_of(tenant, partitions, anonymous_id=anon)
            assert 0 <= p < partitions
            assert p % processes == shard_worker(shard, processes)


def test_partition_of_follows_the_device_not_the_user() -> None:
    """A login names the user and the device: it is keyed (and so partitioned) by the device."""
    assert partition_of("t", 8, anonymous_id="a1", user_id="u1") == partition_of("t", 8, anonymous_id="a1")
    assert partition_of("t", 8, device_id="d1", anonymous_id="a1") == partition_of("t", 8, device_id="d1")


def test_partition_of_refuses_no_partitions() -> None:
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        partition_of("t", 0, anonymous_id="a1")
