"""Sharded keyed state behaves as Bytewax's per-key state, resumes from its shard files, and stays bounded."""

from __future__ import annotations

import pickle
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

import operators.sharded as sharded
from operators.sharded import SHARDS, ShardedState, shard_of, sharded_stateful
from operators.state_guard import StateLayoutError
from state.recovered import live_states, shard_files
from state.shard_store import ShardStore


class Tally(StatefulBatchLogic[int, Any, int]):
    """Per key: a running sum; 0 closes it (the key is discarded unless more follows in the batch); -1 asks to be
    woken at once (then the key ends, saying so). Its outputs do not depend on how values are batched."""

    def __init__(self, resume: int | None) -> None:
        self.total = resume or 0
        self.wake: datetime | None = None

    def on_batch(self, values: list[int]) -> tuple[list[Any], bool]:
        out: list[Any] = []
        for v in values:
            if v == 0:
                out.append(("end", self.total))
                self.total = 0
                continue
            if v == -1:
                self.wake = datetime.now(tz=UTC) - timedelta(seconds=1)
                continue
            self.total += v
            out.append(self.total)
        return out, self.total == 0 and self.wake is None

    def on_notify(self) -> tuple[list[Any], bool]:
        return [("woken", self.total)], True

    def on_eof(self) -> tuple[list[Any], bool]:
        return [], False

    def notify_at(self) -> datetime | None:
        return self.wake

    def snapshot(self) -> int:
        return self.total


def items(seed: int, n: int, keys: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(f"k{rng.randrange(keys)}", rng.choice([1, 2, 3, 5, 0])) for _ in range(n)]


def per_key(out: list[tuple[str, Any]]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for key, value in out:
        grouped.setdefault(key, []).append(value)
    return grouped


def run_sharded(
    source: list[tuple[str, int]],
    state: ShardedState,
    recovery: Path | None = None,
    batch_size: int = 7,
    scrubs: Callable[[int], bool] | None = None,
) -> list[tuple[str, Any]]:
    flow = Dataflow("t")
    up = op.input("in", flow, TestingSource(source, batch_size=batch_size))
    out: list[tuple[str, Any]] = []
    op.output("out", sharded_stateful("tally", up, None, Tally, state, scrubs=scrubs), TestingSink(out))
    config = RecoveryConfig(str(recovery)) if recovery is not None else None
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    return out


def run_per_key(source: list[tuple[str, int]], batch_size: int = 7) -> list[tuple[str, Any]]:
    flow = Dataflow("t")
    up = op.input("in", flow, TestingSource(source, batch_size=batch_size))
    out: list[tuple[str, Any]] = []
    op.output("out", op.stateful_batch("tally", up, Tally), TestingSink(out))
    run_main(flow)
    return out


def new_store(path: Path) -> Path:
    path.mkdir()
    init_db_dir(path, 2)
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_key_sees_what_bytewax_per_key_state_would_show_it(seed: int) -> None:
    source = items(seed, 3000, 300)
    assert per_key(run_sharded(source, ShardedState())) == per_key(run_per_key(source))


def test_a_key_due_is_woken_while_others_of_its_shard_keep_going() -> None:
    shard = shard_of("sleeper")
    neighbour = next(f"n{i}" for i in range(10_000) if shard_of(f"n{i}") == shard)
    source = [("sleeper", 4), ("sleeper", -1)] + [(neighbour, 1)] * 50
    got = per_key(run_sharded(source, ShardedState(), batch_size=1))
    assert got["sleeper"] == [4, ("woken", 4)]
    assert got[neighbour] == list(range(1, 51))


def test_a_resume_continues_every_key_from_the_shard_files(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    source = items(7, 2000, 200)
    first = run_sharded(source[:1200], ShardedState(store), store)
    assert list(shard_files(store)), "the keys' state lives in shard files"
    # A version no epoch committed (a crash after the shard wrote, before Bytewax did) is ignored.
    step, path = next(iter(shard_files(store)))
    ShardStore(path).write(10_000, {"k1": 999_999}, full=True)
    rest = run_sharded(source, ShardedState(store), store)  # TestingSource resumes after the first 1200
    assert per_key(first + rest) == per_key(run_per_key(source))
    assert all(v != 999_999 for _, v in rest)


def test_a_store_of_per_key_snapshots_is_refused_not_misread(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    flow = Dataflow("t")
    up = op.input("in", flow, TestingSource([("a", 1)]))
    op.output("out", op.stateful_batch("tally", up, Tally), TestingSink([]))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(store)))
    with pytest.raises(Exception, match="not a shard") as err:
        run_sharded([("a", 1), ("b", 2)], ShardedState(store), store)
    assert isinstance(err.value, StateLayoutError) or "StateLayoutError" in repr(err.value)


def test_shard_files_stay_bounded_over_many_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharded, "FULL_MIN_BYTES", 64)
    monkeypatch.setattr(sharded, "FULL_RATIO", 1.0)
    monkeypatch.setattr(sharded, "COLLECT_MIN_AGE_S", 0.0)
    monkeypatch.setattr(sharded, "MARKS_MAX_AGE_S", 0.0)
    store = new_store(tmp_path / "recovery")
    rng = random.Random(5)
    source = [(f"k{rng.randrange(40)}", 1) for _ in range(4000)]
    run_sharded(source, ShardedState(store), store, batch_size=5)  # ~800 epochs
    rows = [len(ShardStore(path).rows()) for _, path in shard_files(store)]
    versions = len(source) / len(rows)  # about one row per item a shard got, were nothing collected
    assert rows and max(rows) < 0.6 * versions, (rows, versions)  # collection lags Bytewax's checkpoints
    held = {live.key: live.state for live in live_states(store, "t.tally")}
    assert sum(held.values()) == len(source)  # and what is held is every key's whole tally


def test_an_erasing_item_leaves_no_older_copy_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasing snapshot is a full row without the key; the rows before it go once Bytewax's store (as of its
    last checkpoint) no longer holds a mark from before it: here in the next run, when the shard next writes."""
    monkeypatch.setattr(sharded, "COLLECT_RETRY_S", 0.0)
    monkeypatch.setattr(sharded, "COLLECT_MIN_AGE_S", 0.0)
    monkeypatch.setattr(sharded, "MARKS_MAX_AGE_S", 0.0)
    store = new_store(tmp_path / "recovery")
    secret = 123_456_789
    shard = shard_of("victim")
    neighbour = next(f"n{i}" for i in range(10_000) if shard_of(f"n{i}") == shard)

    def run(flow_items: list[tuple[str, int]]) -> None:  # a 0 (what the key's logic gets) erases the key
        run_sharded(flow_items, ShardedState(store), store, batch_size=1, scrubs=lambda value: value == 0)

    first = [("victim", secret), ("victim", 1), (neighbour, 2), ("victim", 0)]
    run(first)
    assert {live.key for live in live_states(store, "t.tally")} == {neighbour}  # gone from the live state at once
    run([*first, (neighbour, 1), (neighbour, 1)])  # resumes after `first`
    path = next(p for _, p in shard_files(store) if p.stem == shard)
    with sqlite3.connect(path) as db:
        payloads = [pickle.loads(b) for (b,) in db.execute("SELECT payload FROM shard_rows")]
    assert not any("victim" in p for p in payloads), payloads
    assert {live.key: live.state for live in live_states(store, "t.tally")} == {neighbour: 4}


@pytest.mark.parametrize("min_age_s", [120.0, 0.0])
def test_bytewax_marks_are_read_only_once_a_full_row_is_old_enough_to_collect_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, min_age_s: float
) -> None:
    monkeypatch.setattr(sharded, "COLLECT_RETRY_S", 0.0)  # every snapshot may try to collect
    monkeypatch.setattr(sharded, "COLLECT_MIN_AGE_S", min_age_s)
    store = new_store(tmp_path / "recovery")
    state = ShardedState(store)
    reads_of_marks = ShardedState.oldest_mark  # each reads a copy of Bytewax's store, on the worker thread

    def counting(self: ShardedState, step_id: str, shard: str) -> int | None:
        self.mark_reads = getattr(self, "mark_reads", 0) + 1  # type: ignore[attr-defined]
        return reads_of_marks(self, step_id, shard)

    monkeypatch.setattr(ShardedState, "oldest_mark", counting)  # not a subclass: compiled code refuses one
    run_sharded([(f"k{i % 30}", 1) for i in range(600)], state, store, batch_size=5)
    reads = getattr(state, "mark_reads", 0)
    assert (reads == 0) if min_age_s else (reads > 0), reads  # no full row is 120 s old within this run


def test_shard_of_spreads_keys_over_every_shard() -> None:
    counts: dict[str, int] = {}
    for i in range(64_000):
        shard = shard_of(f"acme\x1fu:{i}")
        counts[shard] = counts.get(shard, 0) + 1
    assert len(counts) == SHARDS
    assert max(counts.values()) < 1.2 * 64_000 / SHARDS


def test_unreadable_bytewax_marks_delay_collection_instead_of_stopping_the_flow(tmp_path: Path) -> None:
    store = new_store(tmp_path / "recovery")
    (store / "part-0.sqlite3").write_bytes(b"not a database, e.g. caught mid-rewrite" * 100)
    state = ShardedState(store)
    assert state.oldest_mark("t.tally", "s01") is None  # logged; the shard tries again later


class Rescheduling(StatefulBatchLogic[int, Any, int]):
    """Each value moves the key's wake-up later (as an idle TTL does at each event)."""

    def __init__(self, resume: int | None) -> None:
        self.n = resume or 0

    def on_batch(self, values: list[int]) -> tuple[list[Any], bool]:
        self.n += len(values)
        return [], False

    def on_notify(self) -> tuple[list[Any], bool]:
        return [], True

    def on_eof(self) -> tuple[list[Any], bool]:
        return [], False

    def notify_at(self) -> datetime | None:
        return datetime(2100, 1, 1, tzinfo=UTC) + timedelta(seconds=self.n)

    def snapshot(self) -> int:
        return self.n


def test_a_shards_timers_stay_bounded_when_keys_keep_moving_their_wake_up() -> None:
    from operators.sharded import ShardLogic, _Step

    logic = ShardLogic(_Step(Rescheduling, ShardedState(), True, None), None)
    for i in range(5000):
        logic.on_batch([{f"k{i % 10}": [1]}])
    assert len(logic._heap) <= 2 * 10 + 64 + 1
    assert logic.notify_at() == datetime(2100, 1, 1, tzinfo=UTC) + timedelta(
        seconds=500
    )  # every key moved to its 500th value


class Alarm(StatefulBatchLogic[float | None, tuple[str, float], None]):
    """Rings once at the last time it was set to (epoch seconds); ``None`` unsets it."""

    def __init__(self, resume: None) -> None:
        self.at: float | None = None

    def on_batch(self, values: list[float | None]) -> tuple[list[tuple[str, float]], bool]:
        self.at = values[-1]
        return [], False

    def on_notify(self) -> tuple[list[tuple[str, float]], bool]:
        assert self.at is not None
        return [("rang", self.at)], True

    def on_eof(self) -> tuple[list[tuple[str, float]], bool]:
        return [], False

    def notify_at(self) -> datetime | None:
        return None if self.at is None else datetime.fromtimestamp(self.at, tz=UTC)

    def snapshot(self) -> None:
        return None


def test_a_timer_rings_at_its_latest_time_whether_it_moved_later_earlier_or_was_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from operators.sharded import ShardLogic, _Step

    now = [0.0]
    monkeypatch.setattr(sharded.time, "time", lambda: now[0])
    logic = ShardLogic(_Step(Alarm, ShardedState(recoverable=False), True, None), None)
    logic.on_batch([{"later": [100.0], "earlier": [300.0], "unset": [120.0]}])
    logic.on_batch([{"later": [200.0], "earlier": [150.0], "unset": [None]}])
    assert logic.notify_at() == datetime.fromtimestamp(150.0, tz=UTC)
    now[0] = 160.0
    assert list(logic.on_notify()[0]) == [("earlier", ("rang", 150.0))]
    assert logic.notify_at() == datetime.fromtimestamp(200.0, tz=UTC)  # not the 100 "later" once asked for
    now[0] = 250.0
    assert list(logic.on_notify()[0]) == [("later", ("rang", 200.0))]
    assert logic.notify_at() is None and not logic._heap
