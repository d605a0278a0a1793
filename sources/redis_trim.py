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
from dataclasses import dataclass, field
from pathlib import Path

from state.bytewax_store import open_current_copy

log = logging.getLogger("creditflow.sources.redis")

MARGIN_EPOCHS = 1


@dataclass
class _StoreView:
    """What the trim needs of every partition, each read from one private copy of it."""

    executions: list[tuple[int, int, int]] = field(default_factory=list)
    fronts: list[tuple[int, int, int]] = field(default_factory=list)
    snaps: list[tuple[str, int, bytes | None]] = field(default_factory=list)


def _read(store: Path, step_id: str) -> _StoreView:
    view = _StoreView()
    for part in sorted(store.glob("part-*.sqlite3")):
        # A private copy as it is now (never the live files: mapping their -shm crashed flows with SIGBUS).
        with open_current_copy(part) as conn:
            view.executions += conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
            view.fronts += conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
            view.snaps += conn.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ?", (step_id,)
            ).fetchall()
    return view


def _resume_epoch_bound(view: _StoreView) -> int | None:
    """The lowest epoch a future resume can start from, or None if nothing is recorded yet."""
    if not view.executions:
        return None
    ex_num, workers, resume_epoch = max(view.executions)
    frontier = {worker: front for ex, worker, front in view.fronts if ex == ex_num}
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
    view = _read(store, step_id)
    bound = _resume_epoch_bound(view)
    if bound is None:
        return {}
    rows = [(stream, epoch, blob) for stream, epoch, blob in view.snaps if epoch < bound - MARGIN_EPOCHS]
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
