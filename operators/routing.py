"""Which worker Bytewax gives a key, so a producer can put a device's events where its state is.

Bytewax 0.21.1 sends each item of a keyed step (``op.stateful_batch``) to worker
``siphash13(key) % workers``: Rust's ``DefaultHasher`` (SipHash-1-3, keys 0, 0)
over the key's UTF-8 bytes and a closing ``0xff`` byte, as Rust hashes a
``str``. Our sharded steps key Bytewax by shard name (``operators.sharded``),
so a state key's worker follows from its shard.

A partitioned source's partition is read by the worker that lists it
(``sources.redis_streams``: process *i* of *P* lists the streams whose index
is *i* modulo *P*). A producer that writes each event to partition
``partition_of(...)`` of *N* (with *P* dividing *N*) puts it where its device's
state is, so the device graph step, the costliest keyed step every event
passes, runs without sending the event to another process. Any other
partitioning is as correct, only slower: items then cross between processes,
pickled one by one.

>>> bytewax_worker("s00", 1)
0
>>> shards = ("s00", "s01", "s02", "s03")
>>> [shard_worker(s, 2) for s in shards] == [bytewax_worker(s, 2) for s in shards]
True
>>> partition_of("acme", 4, anonymous_id="a-1") == partition_of("acme", 4, anonymous_id="a-1", user_id="u-9")
True
"""

from __future__ import annotations

from functools import cache

from operators.sharded import shard_of
from state.device_graph import device_person, device_state_key

_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 of ``data`` (Rust's ``DefaultHasher``, whose keys are 0 and 0).

    >>> hex(siphash13(b""))  # Rust: DefaultHasher::new().finish()
    '0xd1fba762150c532c'
    """
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def round_() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        round_()
        v0 ^= m
    last = int.from_bytes(data[whole:], "little") | ((len(data) & 0xFF) << 56)
    v3 ^= last
    round_()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        round_()
    return v0 ^ v1 ^ v2 ^ v3


def _key_hash(key: str) -> int:
    """Rust's ``DefaultHasher`` over a ``str``: its UTF-8 bytes, then ``0xff``."""
    return siphash13(key.encode("utf-8") + b"\xff")


def bytewax_worker(key: str, workers: int) -> int:
    """The worker (of ``workers``) that Bytewax 0.21.1's keyed steps send ``key`` to."""
    return _key_hash(key) % workers


_shard_hash = cache(_key_hash)
"""``_key_hash`` of a shard name: there are ``operators.sharded.SHARDS`` of them."""


def shard_worker(shard: str, workers: int) -> int:
    """The worker of a sharded step's shard (``operators.sharded.shard_of``); cached per shard."""
    return _shard_hash(shard) % workers


def partition_of(
    tenant_id: str,
    partitions: int,
    device_id: str = "",
    anonymous_id: str = "",
    user_id: str = "",
) -> int:
    """The partition (of ``partitions``) to write an event to: the one read where its device's state is.

    Give the event's tenant and identifiers as they are in the event. An event
    naming no identifier (ad spend) may go to any partition. With ``P``
    processes, ``partitions`` should be a multiple of ``P`` for every event to
    land in its device's process. This assumes the tenant's identity graph is
    on (the default); with it off, events naming a user are keyed by the user
    and still processed correctly, only with one more hop.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1 (got {partitions})")
    key = device_state_key(tenant_id, device_person(device_id, anonymous_id, user_id))
    return _shard_hash(shard_of(key)) % partitions
