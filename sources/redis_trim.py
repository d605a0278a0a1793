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

``StreamTrimmer`` does it from a thread of its own: reading the store copies
every partition of it (tens of ms, more as its write-ahead log grows) and XTRIM
waits for Redis, which on the worker thread paused the flow every 10 s (23 ms
growing to 117 ms within a 10k events/s load test). File copies, SQLite and the
Redis round trip release the GIL, so the thread costs the worker almost nothing.
"""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

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


class StreamTrimmer:
    """Trims the streams its partitions ``watch`` behind ``trimmable_ids``, every ``every_s``, from a daemon thread.

    One per source and step in a process, shared by its partitions: the store is read once per round for all
    of them. The thread starts with the first ``watch`` and ends when the last stream is ``unwatch``ed; it has
    its own client (``connect()``). A round that fails (Redis down, the store changing while copied, or
    anything unforeseen) is logged and tried again a round later.
    """

    def __init__(self, store: Path, step_id: str, every_s: float, connect: Callable[[], redis.Redis]) -> None:
        self.store = store
        self.step_id = step_id
        self.every_s = every_s
        self._connect = connect
        self._streams: set[str] = set()
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self.rounds = 0
        """Rounds done (tests, logs)."""

    def watch(self, stream: str) -> None:
        with self._lock:
            self._streams.add(stream)
            if self._stop is None:
                self._stop = threading.Event()
                name = f"creditflow-trim-{self.step_id}"
                threading.Thread(target=self._run, args=(self._stop,), name=name, daemon=True).start()

    def unwatch(self, stream: str) -> None:
        with self._lock:
            self._streams.discard(stream)
            if not self._streams and self._stop is not None:
                self._stop.set()
                self._stop = None

    def _run(self, stop: threading.Event) -> None:
        client = self._connect()
        try:
            while not stop.wait(self.every_s):
                try:
                    self.trim(client)
                except Exception:  # anything unforeseen (a mark that does not unpickle): the thread must live on,
                    # or the streams would grow without bound with nothing but a stray traceback to say so
                    log.exception("trimming the streams of %s failed; will retry in %.0f s", self.step_id, self.every_s)
        finally:
            client.close()

    def trim(self, client: redis.Redis) -> None:
        """One round: every watched stream trimmed behind what no resume can read again."""
        with self._lock:
            streams = sorted(self._streams)
        try:
            safe = trimmable_ids(self.store, self.step_id)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not read %s to trim streams (%s); will retry in %.0f s", self.store, exc, self.every_s)
            return
        for stream in streams:
            minid = safe.get(stream)
            if minid is None:
                continue
            try:
                removed = client.xtrim(stream, minid=minid, approximate=False)
            except redis.RedisError as exc:
                log.warning("could not trim stream %r (%s); will retry in %.0f s", stream, exc, self.every_s)
                continue
            if removed:
                log.debug("trimmed %d entries of stream %r before %s", removed, stream, minid)
        self.rounds += 1
