"""A shard's rows: versions, fulls and deltas, resume at a mark, collection, read-only reads, rewrites."""

from __future__ import annotations

import pickle
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from state.shard_store import ShardMark, ShardStore, ShardStoreError, oldest_marks, read_states, rewrite_rows


def test_a_resume_loads_the_marked_version_and_drops_what_came_after(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s.sqlite3")
    store.load(None)
    store.write(1, {"a": 1, "b": 2}, full=True)
    store.write(2, {"a": 5}, full=False)
    store.write(3, {"b": None}, full=False)
    store.write(4, {"c": 7}, full=False)  # an epoch that never committed
    assert store.load(3) == {"a": 5}
    assert [v for v, _, _ in store.rows()] == [1, 2, 3]  # version 4 is gone: the next run writes its own
    store.write(4, {"d": 1}, full=False)
    assert store.load(4) == {"a": 5, "d": 1}


def test_a_fresh_shard_drops_rows_of_a_run_that_never_committed(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s.sqlite3")
    store.write(1, {"a": 1}, full=True)
    assert store.load(None) == {}
    assert store.rows() == []


def test_a_file_behind_the_mark_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s.sqlite3")
    store.write(1, {"a": 1}, full=True)
    with pytest.raises(ShardStoreError, match="--fresh-state"):
        store.load(2)
    store.write(2, {"a": 2}, full=False)
    store.write(4, {"a": 4}, full=False)  # version 3 lost
    with pytest.raises(ShardStoreError, match="version 3 is missing"):
        store.load(4)


def test_collect_keeps_exactly_what_a_resume_at_or_after_the_oldest_mark_needs(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "s.sqlite3")
    store.write(1, {"a": 1}, full=True)
    store.write(2, {"b": 2}, full=False)
    store.write(3, {"a": 3, "b": 2}, full=True)
    store.write(4, {"c": 4}, full=False)
    assert store.collect(2) == 0  # a resume at 2 needs the full row 1
    assert store.collect(3) == 2
    assert [v for v, _, _ in store.rows()] == [3, 4]
    assert store.load(4) == {"a": 3, "b": 2, "c": 4}


def test_read_states_reads_any_version_without_changing_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ShardStore(path)
    store.write(1, {"a": 1}, full=True)
    store.write(2, {"a": None, "b": 2}, full=False)
    assert read_states(path, 1) == {"a": 1}
    assert read_states(path, 2) == {"b": 2}
    assert len(store.rows()) == 2


def test_rewrite_rows_leaves_no_bytes_of_what_it_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = ShardStore(path)
    store.write(1, {"secret-person": "x" * 500, "other": 1}, full=True)
    store.write(2, {"secret-person": None}, full=False)
    store.close()

    def drop(states: dict) -> dict:
        return {k: v for k, v in states.items() if k != "secret-person"} if "secret-person" in states else states

    assert rewrite_rows(path, drop) == 2
    assert read_states(path, 2) == {"other": 1}
    for f in tmp_path.glob("s.sqlite3*"):
        assert b"secret-person" not in f.read_bytes()


def test_oldest_marks_reads_bytewax_store(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 2)
    assert oldest_marks(tmp_path) == {}
    with closing(sqlite3.connect(tmp_path / "part-1.sqlite3")) as db, db:  # closed: checkpointed into the file
        for epoch, version in ((3, 7), (4, 9)):
            db.execute(
                "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
                ("f.step", "s01", epoch, pickle.dumps(ShardMark("s01", version))),
            )
        db.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            ("f.source", "stream-0", 4, pickle.dumps("1-0")),  # not a shard: not read
        )
    assert oldest_marks(tmp_path) == {("f.step", "s01"): 7}
