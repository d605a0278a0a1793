"""How far a Redis stream may be trimmed: behind the oldest position a resume could need.

A resume of a Bytewax 0.21 dataflow starts at epoch R: the lowest frontier
reached by the workers of the latest execution (or that execution's own
resume epoch while not every worker has recorded one). Each source partition
then restarts from its snapshot of the newest epoch before R. Entries up to
that snapshotted stream id have been read and their effects are in the
snapshotted state, so no resume can need them: XTRIM MINID to that id is safe.
One epoch of extra margin is kept.

This reads Bytewax's recovery partitions (sqlite: ``exs``, ``fronts``,
``snaps``) read-only; their layout is that of bytewax==0.21.1, which the
project pins.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

from state.bytewax_store import open_current_copy

log = logging.getLogger("creditflow.sources.redis")

MARGIN_EPOCHS = 1


def _rows(store: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
    rows: list[tuple] = []
    for part in sorted(store.glob("part-*.sqlite3")):
        # A private copy as it is now (never the live files: mapping their -shm crashed flows with SIGBUS).
        with open_current_copy(part) as conn:
            rows.extend(conn.execute(sql, args).fetchall())
    return rows


def resume_epoch_bound(store: Path) -> int | None:
    """The lowest epoch a future resume can start from, or None if nothing is recorded yet."""
    executions = _rows(store, "SELECT ex_num, worker_count, resume_epoch FROM exs")
    if not executions:
        return None
    ex_num, workers, resume_epoch = max(executions)
    fronts = _rows(store, "SELECT worker_index, worker_frontier FROM fronts WHERE ex_num = ?", (ex_num,))
    frontier = {w: f for w, f in fronts}
    if len(frontier) == workers:
        return int(min(frontier.values()))
    return int(resume_epoch)


def trimmable_ids(store: Path, step_id: str) -> dict[str, str]:
    """Per stream (source partition): the id up to which entries can never be read again.

    >>> trimmable_ids(Path("/nonexistent"), "creditflow.source")
    {}
    """
    if not store.is_dir():
        return {}
    bound = resume_epoch_bound(store)
    if bound is None:
        return {}
    rows = _rows(
        store,
        "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? AND snap_epoch < ?",
        (step_id, bound - MARGIN_EPOCHS),
    )
    newest: dict[str, tuple[int, bytes | None]] = {}
    for stream, epoch, blob in rows:
        if stream not in newest or epoch > newest[stream][0]:
            newest[stream] = (epoch, blob)
    out: dict[str, str] = {}
    for stream, (_, blob) in newest.items():
        if blob is not None:
            position = pickle.loads(blob)  # the source partition's own snapshot: a stream id string
            if isinstance(position, str) and position != "0-0":
                out[stream] = position
    return out
