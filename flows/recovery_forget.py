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

import dataclasses
import pickle
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from creditflow.forgotten import ForgottenIds
from creditflow.kpis import KEY_SEP
from state.probable_links import without_erased
from state.recovered import shard_files
from state.shard_store import NEWEST, ShardInline, ShardMark, read_states, rewrite_rows

__all__ = ["RecoveryForgetReport", "forget_in_recovery_store"]

_PERSON_PREFIXES = ("u:", "d:", "a:")


@dataclass(frozen=True)
class RecoveryForgetReport:
    partitions: int
    keys_removed: int
    """Keys of erased persons whose every snapshot was removed."""
    keys_holding_state: int
    """Of those, the keys whose newest snapshot still held state (erased here, not by the flow)."""
    superseded_rows: int
    """Older snapshots no resume can read (a newer committed one of the same key exists), removed."""
    scrubbed_rows: int
    """Snapshots of other steps rewritten without what named an erased person (the network matcher's)."""


_SCRUBBERS: dict[str, Callable[[Any, Callable[[str, str], bool]], Any]] = {
    "creditflow.identity.links.network": without_erased,
}
"""Steps keyed by something else than a person whose state can name one: how to take it out."""


def _erased_key(state_key: str, forgotten: ForgottenIds) -> bool:
    tenant_id, sep, person_key = state_key.partition(KEY_SEP)
    return bool(sep) and person_key[:2] in _PERSON_PREFIXES and forgotten.has(tenant_id, person_key)


def _committed_epoch(parts: list[Path]) -> int:
    """The newest epoch a resume reads state from: below the lowest worker frontier of the latest execution."""
    fronts: list[tuple[int, int]] = []
    for part in parts:
        with closing(sqlite3.connect(part)) as db:
            fronts.extend(db.execute("SELECT ex_num, worker_frontier FROM fronts").fetchall())
    if not fronts:
        return -1
    latest = max(ex for ex, _ in fronts)
    return min(frontier for ex, frontier in fronts if ex == latest) - 1


def forget_in_recovery_store(store: Path, forgotten: ForgottenIds) -> RecoveryForgetReport:
    """Take every erased person out of ``store`` (flow stopped): see the module doc.

    Per partition, in one transaction: snapshots superseded by a newer committed
    one of their key are removed (they hold what the key held before, e.g. a person
    before the request; Bytewax keeps them ``backup_interval`` longer and would
    remove them itself), every row of an erased person's key is removed, and the
    network matcher's snapshots lose the observations naming one. Then ``VACUUM``.

    >>> import tempfile; from bytewax.recovery import init_db_dir
    >>> d = Path(tempfile.mkdtemp()); init_db_dir(d, 1)
    >>> forget_in_recovery_store(d, ForgottenIds(lambda t: b"s")).keys_removed
    0
    """
    parts = sorted(Path(store).glob("part-*.sqlite3"))
    committed = _committed_epoch(parts)
    removed = holding = superseded = scrubbed = 0
    for part in parts:
        with closing(sqlite3.connect(part, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT step_id, state_key, snap_epoch, ser_change IS NULL FROM snaps").fetchall()
            newest_committed: dict[tuple[str, str], int] = {}
            newest: dict[tuple[str, str], tuple[int, bool]] = {}
            for step, key, epoch, empty in rows:
                sk = (step, key)
                if epoch <= committed and epoch > newest_committed.get(sk, -1):
                    newest_committed[sk] = epoch
                if sk not in newest or epoch > newest[sk][0]:
                    newest[sk] = (epoch, bool(empty))
            for step, key, epoch, _ in rows:
                if epoch < newest_committed.get((step, key), -1):
                    db.execute(
                        "DELETE FROM snaps WHERE step_id = ? AND state_key = ? AND snap_epoch = ?", (step, key, epoch)
                    )
                    superseded += 1
            for step, key in newest:
                if _erased_key(key, forgotten):
                    db.execute("DELETE FROM snaps WHERE step_id = ? AND state_key = ?", (step, key))
                    removed += 1
                    holding += not newest[(step, key)][1]
            for step, key, epoch, blob in db.execute(
                "SELECT step_id, state_key, snap_epoch, ser_change FROM snaps WHERE ser_change IS NOT NULL"
            ).fetchall():
                inline = pickle.loads(blob)
                if not isinstance(inline, ShardInline):
                    continue
                gone: set[str] = set()
                kept_states = _shard_edit(step, forgotten, gone)(inline.states)
                removed += len(gone)
                holding += len(gone)  # a shard's inline snapshot holds only keys with state
                if kept_states is not inline.states:
                    inline_blob = pickle.dumps(dataclasses.replace(inline, states=kept_states))
                    db.execute(
                        "UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? AND snap_epoch = ?",
                        (inline_blob, step, key, epoch),
                    )
                    scrubbed += 1
            for step, scrub in _SCRUBBERS.items():
                found = db.execute(
                    "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? AND ser_change IS NOT NULL",
                    (step,),
                ).fetchall()
                for key, epoch, blob in found:
                    state = pickle.loads(blob)
                    if isinstance(state, (ShardInline, ShardMark)):
                        continue  # a sharded step's keys: scrubbed above (inline) or in its shard files
                    kept = scrub(state, forgotten.has)
                    if kept is state or kept == state:
                        continue
                    new_blob = None if kept is None else pickle.dumps(kept)
                    db.execute(
                        "UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? AND snap_epoch = ?",
                        (new_blob, step, key, epoch),
                    )
                    scrubbed += 1
            db.execute("COMMIT")
            db.execute("VACUUM")  # free pages would still hold the removed snapshots' bytes
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and so would the write-ahead log (Bytewax uses WAL)
    for step, path in shard_files(store):
        holding_now = read_states(path, NEWEST)
        dropped: set[str] = set()
        scrubbed += rewrite_rows(path, _shard_edit(step, forgotten, dropped))
        removed += len(dropped)
        holding += sum(1 for k in dropped if k in holding_now)
    return RecoveryForgetReport(len(parts), removed, holding, superseded, scrubbed)


def _shard_edit(step: str, forgotten: ForgottenIds, gone: set[str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An edit of a shard's states (``state.shard_store``): erased persons' keys out (added to ``gone``), the
    other states scrubbed of what names an erased person (``_SCRUBBERS``). Returns the same dict if unchanged."""
    scrub = _SCRUBBERS.get(step)

    def edit(states: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] | None = None
        for key, state in states.items():
            if _erased_key(key, forgotten):
                gone.add(key)
                out = out if out is not None else dict(states)
                del out[key]
            elif scrub is not None and state is not None:
                kept = scrub(state, forgotten.has)
                if kept is not state and kept != state:
                    out = out if out is not None else dict(states)
                    out[key] = kept
        return states if out is None else out

    return edit
