"""Durable state of one shard of a keyed step: full snapshots and deltas, versioned by Bytewax's marks.

Bytewax 0.21 keeps one SQLite row per key per epoch and, at every epoch,
garbage-collects with a query that scans every row it holds, so its snapshot
pause grows with the persons held (measured: 0.15-0.29 s per partition of 166k
rows). Sharded steps (``operators.sharded``) therefore give Bytewax one small
``ShardMark`` per shard and keep the persons' state here, one SQLite file per
shard, as a chain of rows: a *full* row holds every key of the shard, a *delta*
row only the keys changed in one epoch (``None``: the key's state was
discarded). Each snapshot writes one row under the next version; the mark
Bytewax stores with the epoch names that version, so a resume loads exactly
the state of the epoch it resumes from:

    load(mark v): drop rows above v (epochs that never committed), then
                  apply the newest full row <= v and every delta after it.

Bound: the rows kept are those from the newest full row that no resume can
precede (the oldest mark Bytewax still holds for the shard, ``oldest_mark``)
onwards; a full row is written once the deltas since the last one outweigh it,
so the file holds about two to three times the shard's live state.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     store = ShardStore(Path(tmp) / "s00.sqlite3")
...     _ = store.load(None)                      # a fresh shard: nothing
...     _ = store.write(1, {"a": 1, "b": 2}, full=True)
...     _ = store.write(2, {"b": None, "c": 3}, full=False)
...     _ = store.write(3, {"a": 9}, full=False)  # this epoch never committed
...     print(store.load(2))                      # Bytewax resumes from the mark of version 2
...     store.close()
{'a': 1, 'c': 3}
"""

from __future__ import annotations

import pickle
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mypy_extensions import mypyc_attr

from creditflow.errors import CreditflowError
from state.bytewax_store import open_current_copy

SHARD_LAYOUT = 1
"""Layout of ``ShardMark`` / ``ShardInline`` (the state Bytewax itself keeps for a shard)."""


NEWEST = 2**62
"""A version above any written: ``read_states(path, NEWEST)`` is the newest state of a file."""


class ShardStoreError(CreditflowError):
    """A shard's store does not hold the state Bytewax's snapshot names."""


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class ShardMark:
    """What Bytewax snapshots for a shard kept in a ``ShardStore``: which version of the file is its state."""

    shard: str
    version: int
    layout: int = SHARD_LAYOUT


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class ShardInline:
    """A shard's whole state snapshotted into Bytewax itself (a flow run without a shard store directory)."""

    shard: str
    states: dict[str, Any]
    layout: int = SHARD_LAYOUT


class ShardStore:
    """One shard's rows in its own SQLite file (WAL; survives a killed process, like Bytewax's store)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA cache_size=-256")  # KiB: rows are appended, read only at a resume
        self._db.execute("PRAGMA secure_delete=ON")  # an erased person's bytes do not linger in free pages
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS shard_rows ("
            " version INTEGER PRIMARY KEY, full INTEGER NOT NULL, payload BLOB NOT NULL) STRICT"
        )

    def load(self, mark: int | None) -> dict[str, Any]:
        """The shard's states as of version ``mark`` (``None``: a fresh shard, every row is dropped)."""
        if mark is None:
            self._db.execute("DELETE FROM shard_rows")
            return {}
        self._db.execute("DELETE FROM shard_rows WHERE version > ?", (mark,))
        found = self._db.execute(
            "SELECT max(version) FROM shard_rows WHERE full = 1 AND version <= ?", (mark,)
        ).fetchone()[0]
        newest = self._db.execute("SELECT max(version) FROM shard_rows").fetchone()[0]
        if found is None or newest != mark:
            msg = (
                f"shard store {self.path} holds versions up to {newest} (newest full: {found}), but Bytewax "
                f"resumes this shard at version {mark}: the file was lost, replaced or cut short (e.g. a "
                "machine crash before the OS wrote it). Restore the recovery directory as a whole from one "
                "backup, or start over with --fresh-state."
            )
            raise ShardStoreError(msg)
        states: dict[str, Any] = {}
        rows = self._db.execute(
            "SELECT version, full, payload FROM shard_rows WHERE version >= ? ORDER BY version", (found,)
        )
        expected = found
        for version, _full, payload in rows:
            if version != expected:
                msg = f"shard store {self.path}: version {expected} is missing; restore or --fresh-state"
                raise ShardStoreError(msg)
            expected += 1
            _apply(states, payload)
        return states

    def write(self, version: int, states: dict[str, Any], full: bool) -> int:
        """Store one version: every key's state (``full``) or the changed keys' (``None``: discarded).

        Returns the payload's size in bytes.
        """
        payload = row_payload(states)
        self._db.execute(
            "INSERT OR REPLACE INTO shard_rows (version, full, payload) VALUES (?, ?, ?)",
            (version, int(full), payload),
        )
        return len(payload)

    def collect(self, keep_from: int) -> int:
        """Delete the rows no resume at version ``keep_from`` or later needs; returns how many."""
        found = self._db.execute(
            "SELECT max(version) FROM shard_rows WHERE full = 1 AND version <= ?", (keep_from,)
        ).fetchone()[0]
        if found is None:
            return 0
        return self._db.execute("DELETE FROM shard_rows WHERE version < ?", (found,)).rowcount

    def rows(self) -> list[tuple[int, bool, int]]:
        """``(version, full, payload bytes)`` of every row, oldest first (for reports and tests)."""
        query = "SELECT version, full, length(payload) FROM shard_rows ORDER BY version"
        return [(v, bool(f), n) for v, f, n in self._db.execute(query)]

    def close(self) -> None:
        self._db.close()


def read_states(path: Path, version: int) -> dict[str, Any]:
    """The states a resume at ``version`` would load from the shard file at ``path``, read-only (tools, tests)."""
    with closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as db:
        found = db.execute(
            "SELECT max(version) FROM shard_rows WHERE full = 1 AND version <= ?", (version,)
        ).fetchone()[0]
        if found is None:
            return {}
        states: dict[str, Any] = {}
        query = "SELECT payload FROM shard_rows WHERE version >= ? AND version <= ? ORDER BY version"
        for (payload,) in db.execute(query, (found, version)):
            _apply(states, payload)
        return states


def _apply(states: dict[str, Any], payload: bytes) -> None:
    """Apply one row (a full one, or a delta whose ``None`` drops a key) to ``states``."""
    for key, state in pickle.loads(payload).items():
        if state is None:
            states.pop(key, None)
        else:
            states[key] = state


def row_payload(states: dict[str, Any]) -> bytes:
    """The bytes one row holds: its keys and their states (``None``: discarded), pickled together."""
    return pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL)


def rewrite_rows(path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Apply ``edit`` to every row's states (flow stopped), then ``VACUUM`` so no page keeps the old bytes.

    ``edit`` returns the row's new states (the same object: unchanged). Returns the rows rewritten.
    """
    changed = 0
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        for version, payload in db.execute("SELECT version, payload FROM shard_rows").fetchall():
            states = pickle.loads(payload)
            edited = edit(states)
            if edited is states:
                continue
            new = row_payload(edited)
            db.execute("UPDATE shard_rows SET payload = ? WHERE version = ?", (new, version))
            changed += 1
        db.execute("COMMIT")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return changed


def oldest_marks(recovery_dir: Path) -> dict[tuple[str, str], int]:
    """``(step_id, shard) -> the oldest version Bytewax's recovery store still holds for that shard``.

    Bytewax never resumes from a snapshot it has garbage-collected, so every
    future resume of a shard is at this version or later. Reads a private copy of
    each partition as it is now (``state.bytewax_store.open_current_copy``); a
    read while the copy keeps changing fails (the caller retries later).
    """
    oldest: dict[tuple[str, str], int] = {}
    for part in sorted(Path(recovery_dir).glob("part-*.sqlite3")):
        with open_current_copy(part) as db:
            query = "SELECT step_id, ser_change FROM snaps WHERE state_key GLOB 's[0-9]*' AND ser_change IS NOT NULL"
            for step_id, blob in db.execute(query).fetchall():
                mark = pickle.loads(blob)
                if isinstance(mark, ShardMark):
                    key = (step_id, mark.shard)
                    oldest[key] = min(oldest.get(key, mark.version), mark.version)
    return oldest
