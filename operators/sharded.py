"""Keyed state in a fixed number of shards: Bytewax holds one small mark per shard, not one row per person.

``sharded_stateful`` behaves as ``op.stateful_batch`` keyed by ``key`` (each
key has its own logic, built by ``build``, with its own ``notify_at`` (or
``notify_at_s``, the same in epoch seconds, which it prefers), and its values
arrive in order), but Bytewax only sees ``SHARDS`` keys per step. Each
shard's ``ShardLogic`` keeps its keys' logics in a dict and its due times in a
heap; at each snapshot it writes the changed keys' states to the shard's file
(``state.shard_store``) and gives Bytewax a ``ShardMark`` naming that version.
So the snapshot pause grows with the keys changed in the epoch, not with the
keys held (Bytewax's per-epoch garbage collection scans all its rows), and
Bytewax's own per-key bookkeeping (~236 B and a few microseconds per event per
step) is gone.

Without a shard store directory (``ShardedState(None)``, e.g. a library run
without recovery), a snapshot hands Bytewax the shard's whole state instead
(``ShardInline``): still recoverable, at a cost that grows with the state.

``SHARDS`` and the shard of a key (``shard_of``) are part of the recovery
contract, like step ids: changing them moves keys away from their state.

>>> from bytewax.testing import TestingSource, TestingSink, run_main
>>> from bytewax.dataflow import Dataflow
>>> import bytewax.operators as op
>>> class Count:  # a per-key logic, as op.stateful_batch would take
...     def __init__(self, resume): self.n = resume or 0
...     def on_batch(self, values): self.n += len(values); return [self.n], False
...     def on_notify(self): return [], False
...     def on_eof(self): return [], False
...     def notify_at(self): return None
...     def snapshot(self): return self.n
>>> flow = Dataflow("doc")
>>> words = op.input("in", flow, TestingSource(["a", "b", "a", "a"]))
>>> counts = sharded_stateful("count", words, lambda w: w, Count, ShardedState(None))
>>> out = []
>>> op.output("out", counts, TestingSink(out))
>>> run_main(flow)
>>> dict(out)  # each key counted on its own, in order
{'a': 3, 'b': 1}
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar
from zlib import crc32

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import StatefulBatchLogic
from mypy_extensions import mypyc_attr

from state.recovered import shard_file
from state.shard_store import SHARD_LAYOUT, ShardInline, ShardMark, ShardStore, ShardStoreError, oldest_marks
from state.wake_time import SecondsWake

log = logging.getLogger(__name__)

SHARDS = 64
"""Shards per sharded step. Part of the recovery contract: a store written with another count is refused."""

_NAMES = [f"s{i:02d}" for i in range(SHARDS)]

FULL_MIN_BYTES = 1024 * 1024
FULL_RATIO = 2.0
"""A full row is written once the deltas since the last one exceed FULL_RATIO x max(its size, FULL_MIN_BYTES)
(x1-2 per shard, so shards do not all write theirs in one epoch): the file holds at most about
(1 + 2 x FULL_RATIO) x the shard's state, and a resume reads as much."""
FULL_MAX_AGE_S = 600.0
"""A shard that discarded keys (expired, erased) writes a full row at least this often, so their bytes leave
the file within this much time plus Bytewax's backup interval (an erasure writes one at once)."""
COLLECT_MIN_AGE_S = 120.0
"""Rows are never collected past a full row younger than this: a second guard besides Bytewax's marks,
which are read without locks (``state.shard_store.oldest_marks``)."""
MARKS_MAX_AGE_S = 5.0
"""A process reads Bytewax's marks (for collection) at most this often, for all its shards at once."""
COLLECT_RETRY_S = 10.0
"""While rows older than the last full one remain, the shard wakes this often to collect them (they go once
Bytewax's store no longer holds a mark before that full row: about its backup interval later)."""

X = TypeVar("X")


def shard_of(key: str) -> str:
    """The shard (Bytewax key) of a state key: stable across processes and runs.

    >>> shard_of("acme\\x1fu:ann"), shard_of("acme\\x1fu:ann") == shard_of("acme\\x1fu:ann")
    ('s36', True)
    """
    return _NAMES[crc32(key.encode("utf-8", "surrogatepass")) % SHARDS]


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass
class ShardedState:
    """Where a flow's sharded steps keep their state: ``<recovery dir>/shards/<step id>/<shard>.sqlite3``.

    ``recovery_dir`` is Bytewax's recovery directory of the run (also read to
    learn which rows no resume can need any more, ``state.shard_store.oldest_marks``).
    Without one, snapshots carry each shard's whole state (``ShardInline``), or,
    with ``recoverable=False`` (a run without recovery), only a mark that no
    resume can load.
    """

    recovery_dir: Path | None = None
    recoverable: bool = True

    def __post_init__(self) -> None:
        self._stores: dict[tuple[str, str], ShardStore] = {}
        self._marks: dict[tuple[str, str], int] = {}
        self._marks_read_at: float | None = None

    def store(self, step_id: str, shard: str) -> ShardStore | None:
        if self.recovery_dir is None:
            return None
        found = self._stores.get((step_id, shard))
        if found is None:
            found = self._stores[(step_id, shard)] = ShardStore(shard_file(self.recovery_dir, step_id, shard))
        return found

    def oldest_mark(self, step_id: str, shard: str) -> int | None:
        """The oldest version Bytewax still holds for the shard (``state.shard_store.oldest_marks``), read for all
        shards of the process at most every ``MARKS_MAX_AGE_S``."""
        if self.recovery_dir is None:
            return None
        now = time.monotonic()
        if self._marks_read_at is None or now - self._marks_read_at > MARKS_MAX_AGE_S:
            self._marks_read_at = now
            try:
                self._marks = oldest_marks(self.recovery_dir)
            except (sqlite3.Error, OSError) as exc:  # Bytewax's files are busy or in flux: collect later
                log.warning(
                    "could not read Bytewax's marks in %s (%s); shard rows are collected later", self.recovery_dir, exc
                )
                self._marks = {}
        return self._marks.get((step_id, shard))


class _Step:
    """What every shard of one step shares: the per-key builder, the store, the full step id.

    (Items reach a shard grouped by state key, ``{state key: [value, ...]}``: the step's ``shard`` map
    computed the keys, ``by_shard``.)
    """

    def __init__(
        self,
        build: Callable[[Any], Any],
        state: ShardedState,
        batch: bool,
        scrubs: Callable[[Any], bool] | None,
        unkey: Callable[[tuple[str, Any]], Any] | None = None,
    ) -> None:
        self.build = build
        self.state = state
        self.batch = batch
        self.scrubs = scrubs
        self.unkey = unkey
        """What a ``(state key, output)`` becomes (``None``: the pair itself; ``value_of``: the output alone)."""
        self.step_id = ""  # set once Bytewax has named the step
        self.seconds: bool | None = None
        """Whether the logics give their timers in epoch seconds (``SecondsWake.notify_at_s``), a cheaper
        path than ``notify_at``'s datetime; learnt from the first logic."""


class ShardLogic(StatefulBatchLogic[Any, tuple[str, Any], Any]):
    """The logics of every key of one shard, as one Bytewax key."""

    def __init__(self, step: _Step, resume: object) -> None:  # object: a foreign snapshot gets the error below
        self._step = step
        self._logics: dict[str, Any] = {}
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # bound: rebuilt from _due at 2x its size (+64)
        self._dirty: set[str] = set()
        self._version = 0
        self._since_full = 0
        self._full_size = 0
        self._gone = 0  # keys discarded since the last full row
        self._full_now = False
        self._collect_from: int | None = None  # the last full row's version, while older rows remain
        self._collect_at = 0.0  # wall time of the next collection attempt
        self._collect_woken = False
        self._fulls: deque[tuple[float, int]] = deque()  # (wall time, version) of the last full rows: the newest,
        # and those younger than COLLECT_MIN_AGE_S before it (trimmed at each collection)
        self._shard: str | None = None
        self._store: ShardStore | None = None
        if resume is None:
            return
        if getattr(resume, "layout", None) != SHARD_LAYOUT or not isinstance(resume, (ShardMark, ShardInline)):
            from operators.state_guard import StateLayoutError

            msg = (
                f"sharded step {step.step_id!r}: its snapshot is {type(resume).__name__}, not a shard of layout "
                f"{SHARD_LAYOUT} (a store written by a creditflow before sharded state, or another layout). "
                "Start fresh explicitly (creditflow run --fresh-state) or with a new recovery directory."
            )
            raise StateLayoutError(msg)
        self._shard = resume.shard
        if isinstance(resume, ShardInline):
            states = resume.states
        else:
            self._store = step.state.store(step.step_id, resume.shard)
            if self._store is None:
                msg = (
                    f"sharded step {step.step_id!r}: Bytewax resumes shard {resume.shard} from a shard store, "
                    "but this run has none (FlowSettings.shards = ShardedState(<recovery dir>)), or the "
                    "snapshot was taken by a run without recovery. Pass the recovery directory the snapshots "
                    "were written with, or start fresh."
                )
                raise ShardStoreError(msg)
            states = self._store.load(resume.version)
            self._version = resume.version
            self._full_now = True  # start the chain over from what was loaded
        for key, state in states.items():
            logic = self._logics[key] = step.build(state)
            self._timer(key, logic)

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[dict[str, list[Any]]]) -> tuple[Iterable[Any], bool]:
        # The shard's items of each upstream batch (``by_shard``), grouped by state key, in order.
        groups = values[0] if len(values) == 1 else _merged(values)
        if self._shard is None:  # a fresh shard: whatever its file holds is from a run that never committed
            self._open(shard_of(next(iter(groups))))
        step = self._step
        if step.scrubs is not None and not self._full_now:
            scrubs = step.scrubs
            self._full_now = any(scrubs(v) for group in groups.values() for v in group)
        out: list[Any] = []
        dirty = self._dirty
        if not step.batch:  # a StatefulLogic takes one value at a time; after a discard, the next value starts anew
            for k, group in groups.items():
                dirty.add(k)
                for value in group:
                    self._feed(k, value, out)
            return out, False
        # The batch path, with the timer's seconds path inline: it runs for every key of every batch.
        logics = self._logics
        build = step.build
        for k, group in groups.items():
            dirty.add(k)
            logic = logics.get(k)
            if logic is None:
                logic = logics[k] = build(None)
            emits, discard = logic.on_batch(group)
            if emits:
                self._emit(k, emits, out)
            if discard or not step.seconds:  # step.seconds is None until _timer asked the first logic
                self._settle(k, logic, discard)
            else:
                self._set_due(k, logic.notify_at_s())
        return out, False

    def _feed(self, k: str, value: Any, out: list[Any]) -> None:
        """One value to a key's ``StatefulLogic`` (a step with ``batch=False``)."""
        logic = self._logics.get(k)
        if logic is None:
            logic = self._logics[k] = self._step.build(None)
        emits, discard = logic.on_item(value)
        if emits:
            self._emit(k, emits, out)
        self._settle(k, logic, discard)

    def _emit(self, k: str, emits: Iterable[Any], out: list[Any]) -> None:
        """The key's outputs, as the step passes them on (``_Step.unkey``)."""
        unkey = self._step.unkey
        if unkey is value_of:
            out.extend(emits)
        elif unkey is None:
            out.extend(zip(repeat(k), emits))
        else:
            out.extend([unkey((k, e)) for e in emits])

    def on_notify(self) -> tuple[Iterable[Any], bool]:
        now = time.time()
        if self._collect_from is not None and self._collect_at <= now:
            self._collect_woken = True  # awake, so Bytewax snapshots this shard at the epoch's end: it collects
        out: list[Any] = []
        while (head := self._live_head()) is not None and head <= now:
            k = heapq.heappop(self._heap)[1]  # self._heap: _settle below may rebuild it
            del self._due[k]
            logic = self._logics[k]
            emits, discard = logic.on_notify()
            if emits:
                self._emit(k, emits, out)
            self._dirty.add(k)
            self._settle(k, logic, discard)
        return out, False

    def on_eof(self) -> tuple[Iterable[Any], bool]:
        out: list[Any] = []
        for k, logic in list(self._logics.items()):
            emits, discard = logic.on_eof()
            self._emit(k, emits, out)
            self._dirty.add(k)
            self._settle(k, logic, discard)
        return out, False

    def notify_at(self) -> datetime | None:
        at = self._live_head()  # not a stale lower bound: Bytewax does not wake the shard early
        if self._collect_from is not None and not self._collect_woken and (at is None or self._collect_at < at):
            at = self._collect_at
        return None if at is None else datetime.fromtimestamp(at, tz=UTC)

    def snapshot(self) -> ShardMark | ShardInline:
        assert self._shard is not None, "Bytewax snapshots only shards that saw an item"
        logics = self._logics
        if self._store is None:
            self._dirty.clear()
            if not self._step.state.recoverable:
                return ShardMark(self._shard, 0)
            return ShardInline(self._shard, {k: logic.snapshot() for k, logic in logics.items()})
        version = self._version + 1
        now = time.time()
        fulls = self._fulls
        full = self._full_now or (self._gone > 0 and (not fulls or now - fulls[-1][0] > FULL_MAX_AGE_S))
        if not full:
            delta = {k: (logics[k].snapshot() if k in logics else None) for k in self._dirty}
            self._since_full += self._store.write(version, delta, full=False)
            full = self._since_full > self._full_threshold()  # then the full row replaces this one
        self._dirty.clear()
        if full:
            everything = {k: logic.snapshot() for k, logic in logics.items()}
            self._full_size = self._store.write(version, everything, full=True)
            self._since_full = self._gone = 0
            self._full_now = False
            self._collect_from = version
            fulls.append((now, version))
        self._version = version
        if self._collect_from is not None and (full or self._collect_woken or self._collect_at <= now):
            self._collect(now)
        return ShardMark(self._shard, version)

    # -- inner ---------------------------------------------------------
    def _open(self, shard: str) -> None:
        self._shard = shard
        self._store = self._step.state.store(self._step.step_id, shard)
        if self._store is not None:
            self._store.load(None)
            self._full_now = True

    def _settle(self, k: str, logic: Any, discard: bool) -> None:
        if discard:
            del self._logics[k]
            self._due.pop(k, None)
            self._gone += 1
            return
        self._timer(k, logic)

    def _live_head(self) -> float | None:
        """The earliest due time, after bringing the heap's head up to date: entries of keys with no
        timer any more are dropped, and a lower bound is moved up to its key's due time."""
        heap = self._heap
        due = self._due
        while heap:
            head, k = heap[0]
            when = due.get(k)
            if when is None:  # no timer any more (discarded, or its logic asked for none)
                heapq.heappop(heap)
            elif when > head:  # the entry was a lower bound: the key's timer moved later since
                heapq.heapreplace(heap, (when, k))
            else:
                return head
        return None

    def _timer(self, k: str, logic: Any) -> None:
        """Record the key's next timer. The heap holds, for every key with a timer, an entry at or before
        it (a lower bound): a timer that moves later, as an idle TTL does at each event, costs no push;
        the entry is moved up when it reaches the head. Only a timer that moves earlier is pushed."""
        seconds = self._step.seconds
        if seconds is None:  # every logic of a step is of one kind: ask the first
            seconds = self._step.seconds = isinstance(logic, SecondsWake)
        if seconds:
            when: float | None = logic.notify_at_s()
        else:
            at = logic.notify_at()
            when = None if at is None else at.timestamp()
        self._set_due(k, when)

    def _set_due(self, k: str, when: float | None) -> None:
        """The key's next timer is ``when`` (``None``: none); only a timer that moves earlier is pushed."""
        due = self._due
        if when is None:
            due.pop(k, None)
            return
        before = due.get(k)
        due[k] = when
        if before is not None and when >= before:
            return
        heap = self._heap
        heapq.heappush(heap, (when, k))
        if len(heap) > 2 * len(due) + 64:  # entries of gone or moved timers outnumber live ones
            self._heap = [(t, key) for key, t in due.items()]
            heapq.heapify(self._heap)

    def _full_threshold(self) -> float:
        jitter = 1.0 + (int(self._shard[1:]) if self._shard else 0) / SHARDS  # shards do not go full together
        return FULL_RATIO * max(self._full_size, FULL_MIN_BYTES) * jitter

    def _collect(self, now: float) -> None:
        assert self._store is not None and self._shard is not None and self._collect_from is not None
        self._collect_woken = False
        self._collect_at = now + COLLECT_RETRY_S
        fulls = self._fulls
        while len(fulls) > 1 and now - fulls[1][0] >= COLLECT_MIN_AGE_S:
            fulls.popleft()
        # Never past a full row younger than COLLECT_MIN_AGE_S, whatever the (lock-free) read said.
        if not fulls or now - fulls[0][0] < COLLECT_MIN_AGE_S:
            # Nothing can go yet: no marks read (a copy of Bytewax's store, tens of ms on the worker thread),
            # no query; the next attempt is when the oldest full row kept is old enough.
            if fulls:
                self._collect_at = max(self._collect_at, fulls[0][0] + COLLECT_MIN_AGE_S)
            return
        oldest = self._step.state.oldest_mark(self._step.step_id, self._shard)
        if oldest is None:
            return
        keep_from = min(oldest, fulls[0][1])
        self._store.collect(keep_from)
        if keep_from >= self._collect_from:
            self._collect_from = None  # nothing before the last full row is left


def sharded_stateful(
    step_id: str,
    up: Stream[X],
    key: Callable[[X], str] | None,
    build: Callable[[Any], Any],
    state: ShardedState,
    batch: bool = True,
    scrubs: Callable[[X], bool] | None = None,
    unkey: Callable[[tuple[str, Any]], Any] | None = None,
) -> Stream[Any]:
    """A keyed stateful step whose state lives in shards; outputs ``(key, value)`` like ``op.stateful_batch``.

    ``key`` gives an item's state key; with ``key=None`` the items are ``(key, value)``
    pairs, as ``op.stateful_batch`` takes them. ``build(resume)`` makes one key's
    logic (a ``StatefulBatchLogic``, or a ``StatefulLogic`` with ``batch=False``).
    ``scrubs(value)`` (given what a key's logic gets) marks values after which no
    older copy of a shard's state may remain on disk (an erasure): the shard's
    next snapshot is a full row, and the rows before it are deleted as soon as
    no resume can need them. ``unkey``, if given, maps each ``(key, value)``
    output to the item passed on (``value_of``: the value alone, without a call per item).
    """
    step = _Step(build, state, batch, scrubs, unkey)
    by_shards = op.flat_map_batch("shard", up, by_shard(key))
    out: Stream[tuple[str, Any]] = op.stateful_batch(step_id, by_shards, lambda resume: ShardLogic(step, resume))
    step.step_id = out.stream_id.rsplit(".", 1)[0]
    return op.flat_map_batch("unkey", out, _outputs)  # a shard's outputs are already what the step passes on


def value_of(kv: tuple[str, Any]) -> Any:
    """The value of a ``(key, value)`` output: as ``unkey`` of ``sharded_stateful``, a step passes on its
    logics' outputs as they are."""
    return kv[1]


def by_shard(key: Callable[[X], str] | None) -> Callable[[list[X]], list[tuple[str, dict[str, list[Any]]]]]:
    """A batch's items as one parcel per shard (``operators.parcels``): ``(shard, {state key: [item, ...]})``.

    ``key`` as in ``sharded_stateful``; the state key is computed once, here, and a key's items keep
    their order.

    >>> a, b = shard_of("a"), shard_of("b")
    >>> by_shard(lambda w: w)(["a", "b", "a"]) == [(a, {"a": ["a", "a"]}), (b, {"b": ["b"]})]
    True
    """

    def group(items: list[X]) -> list[tuple[str, dict[str, list[Any]]]]:
        shards: dict[str, dict[str, list[Any]]] = {}
        for item in items:
            if key is None:
                k, value = item  # type: ignore[misc]
            else:
                k, value = key(item), item
            shard = shard_of(k)
            keys = shards.get(shard)
            if keys is None:
                shards[shard] = {k: [value]}
                continue
            values = keys.get(k)
            if values is None:
                keys[k] = [value]
            else:
                values.append(value)
        return list(shards.items())

    return group


def _merged(parcels: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """One shard's parcels of several upstream batches as one, each key's items in order.

    The parcels' lists are extended in place: each parcel is read once, here.
    """
    groups: dict[str, list[Any]] = {}
    for parcel in parcels:
        for k, values in parcel.items():
            found = groups.get(k)
            if found is None:
                groups[k] = values
            else:
                found.extend(values)
    return groups


def _outputs(shard_outputs: list[tuple[str, Any]]) -> list[Any]:
    return [item for _shard, item in shard_outputs]
