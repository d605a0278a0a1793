"""Erased persons out of the Bytewax recovery store: the names of their emptied keys, and freed pages.

A ``deletion_request`` empties the person's keys in every stateful step, and
Bytewax records that as a snapshot without state (``ser_change`` NULL) under
the key's name - which is the person's id (``<tenant>\\x1fu:<user_id>``) - and
keeps that row for as long as the store lives (its garbage collection keeps the
newest snapshot of every key). The older snapshots it does delete leave their
bytes in SQLite's free pages. So, with the flow stopped (SQLite files are
Bytewax's while it runs), ``forget_in_recovery_store`` removes every row of an
erased key whose newest snapshot is such an empty one, committed (at or below
every partition's commit epoch: a resume reads it, and reads nothing instead
just the same), then ``VACUUM``s the partition so no page keeps the bytes.

A key whose newest snapshot still holds state is left alone and reported: it
was not erased in this store (e.g. the request's epoch was not committed when
the flow stopped; the replay on the next start erases it).

Keys are matched by the hash of their person part (``creditflow.forgotten``);
keys of steps not keyed by person (networks, conversion ids, KPI windows) never
match.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from creditflow.forgotten import ForgottenIds
from creditflow.kpis import KEY_SEP

__all__ = ["RecoveryForgetReport", "forget_in_recovery_store"]

_PERSON_PREFIXES = ("u:", "d:", "a:")


@dataclass(frozen=True)
class RecoveryForgetReport:
    partitions: int
    keys_removed: int
    rows_removed: int
    keys_still_holding_state: int
    """Erased persons' keys whose newest snapshot holds state (not erased in this store yet)."""


def _erased_key(state_key: str, forgotten: ForgottenIds) -> bool:
    tenant_id, sep, person_key = state_key.partition(KEY_SEP)
    return bool(sep) and person_key[:2] in _PERSON_PREFIXES and forgotten.has(tenant_id, person_key)


def forget_in_recovery_store(store: Path, forgotten: ForgottenIds) -> RecoveryForgetReport:
    """Remove the emptied keys of erased persons from every partition of ``store`` (flow stopped), then VACUUM.

    >>> import tempfile; from bytewax.recovery import init_db_dir
    >>> d = Path(tempfile.mkdtemp()); init_db_dir(d, 1)
    >>> forget_in_recovery_store(d, ForgottenIds(lambda t: b"s")).rows_removed
    0
    """
    parts = sorted(Path(store).glob("part-*.sqlite3"))
    commits: list[int] = []
    for part in parts:
        with closing(sqlite3.connect(part)) as db:
            commits.extend(epoch for (epoch,) in db.execute("SELECT commit_epoch FROM commits"))
    committed = min(commits) if commits else -1
    keys_removed = rows_removed = holding = 0
    for part in parts:
        with closing(sqlite3.connect(part, isolation_level=None)) as db:
            newest: dict[tuple[str, str], tuple[int, bool]] = {}
            for step, key, epoch, empty in db.execute(
                "SELECT step_id, state_key, snap_epoch, ser_change IS NULL FROM snaps"
            ):
                if not _erased_key(key, forgotten):
                    continue
                if (step, key) not in newest or epoch > newest[(step, key)][0]:
                    newest[(step, key)] = (epoch, bool(empty))
            doomed = [sk for sk, (epoch, empty) in newest.items() if empty and epoch <= committed]
            holding += sum(1 for _, empty in newest.values() if not empty)
            if doomed:
                db.execute("BEGIN IMMEDIATE")
                for step, key in doomed:
                    cur = db.execute("DELETE FROM snaps WHERE step_id = ? AND state_key = ?", (step, key))
                    rows_removed += cur.rowcount
                db.execute("COMMIT")
                keys_removed += len(doomed)
            db.execute("VACUUM")  # free pages would still hold older snapshots' bytes
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and so would the write-ahead log (Bytewax uses WAL)
    return RecoveryForgetReport(len(parts), keys_removed, rows_removed, holding)
