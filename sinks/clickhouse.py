"""The Bytewax sink that writes creditflow rows into ClickHouse.

``ClickHouseSink(settings)`` takes ``(key, SinkRow)`` items (``CreditRow``,
``ConversionRow``, ``KpiRow``, ``DeadLetter``, ...) and writes each to its table
(``attribution_credits``, ``conversions``, ``kpi_windows``, ``dead_letters``, ...;
``sinks.clickhouse_rows``), and ``ForgetPerson`` items (right to be forgotten,
below), through clickhouse-connect, to embedded chDB (``chdb:///path``) or a server
(``http(s)://...``). Use :func:`key_for_sink` (or any key) to make the pairs::

    rows = op.map("key_for_clickhouse", rows, key_for_sink)
    op.output("clickhouse", rows, ClickHouseSink(ClickHouseSettings("chdb:///var/lib/creditflow/chdb")))

One writer
    The sink is a ``FixedPartitionedSink`` with exactly one partition,
    ``"clickhouse"``; ``part_fn`` always returns 0, so the key is irrelevant and
    every item is routed to the one worker that owns the partition. With several
    Bytewax workers or processes, all ClickHouse writes go through that single
    writer. That is what chDB needs (only one process may open a data path), and
    it keeps one connection and large blocks. For more write throughput than one
    writer gives, use a ClickHouse server and several sinks/flows, not more
    workers. The partition connects and runs the migrations in ``build_part``
    (on the owning worker only), never in ``__init__``.

Delivery guarantee: no duplicate rows, even without FINAL
    Bytewax delivers at-least-once: after a crash the flow resumes from the last
    snapshot and replays what followed - with other batch boundaries than the
    first time. ``write_batch`` therefore makes every write idempotent by row
    key (``clickhouse_rows.KEY_COLUMNS``: the table's ORDER BY):

    1. rows are collapsed per key within the batch (the last one wins);
    2. *check* which of the batch's keys the table already holds. A replay
       only happens after a restart, and only re-sends what the crashed run
       wrote after the snapshot the flow resumes from, so how depends on how
       the partition started (``mode``):

       * ``resumed`` - the sink's snapshot is the wall time it was taken;
         ``build_part`` loads, once, the keys written since then (minus
         ``settings.replay_margin_s``, :func:`replayable_keys_sql`), and
         batches are checked against that set in memory: no query per batch.
         Bound: at most ``settings.replay_keys_cap`` keys, else ``lookup``.
       * ``empty`` - no snapshot and every table empty: nothing can be
         replayed (this is the only writer), nothing is checked.
       * ``lookup`` - no snapshot but rows exist (a crash before the first
         snapshot, ``--fresh-state`` over old tables): one ``SELECT`` per table
         per batch (chunked at ``LOOKUP_CHUNK`` keys) asks which of the batch's
         keys the table holds, filtering on the primary-key prefix with a
         parameterised tuple ``IN`` (plus, for credits and conversions, the
         batch's ``conversion_ts`` range) so ClickHouse reads only the
         granules of those keys (:func:`lookup_sql`). This lasts until the
         next restart.

       Within one run a key is never emitted twice (conversions and events
       are de-duplicated upstream; a restated KPI window has more ``events``,
       a restated conversion a higher ``revision``), so only replays need the
       check;
    3. rows whose full key is already there are dropped (counted in
       ``replayed_rows``), the rest are sorted by key, cut into blocks of at
       most ``settings.block_rows`` rows and inserted, each block carrying
       ``insert_deduplication_token`` = blake2b of the table and the block's
       row keys (with the conversion time, see below), so retrying an insert that did land (a timeout after
       the server wrote it) is dropped by ClickHouse instead of written twice.

    The check-then-insert is race-free because this partition is the only
    writer (one sink partition, see above), inserts are synchronous
    (``async_insert=0``) and a ``SELECT`` on the same chDB path or single
    server sees every insert that returned. Per table, that gives:

    * ``attribution_credits`` - at most one row per (tenant_id, conversion_id,
      model, touch_event_id, revision); looked up by (tenant_id, conversion_id)
      and the conversion time. A conversion restated by a late event is a new
      set of rows with a higher ``revision``; the rows of its highest revision
      are its credit (view ``attribution_credits_latest``).
    * ``conversions`` - at most one row per (tenant_id, conversion_id,
      revision); looked up by (tenant_id, conversion_id) and the conversion
      time. The row with the highest revision is the conversion's (view
      ``conversions_latest``).
    * ``kpi_windows`` - at most one row per (tenant_id, window_start, channel,
      campaign_id, events); looked up by (tenant_id, window_start). A window
      restated by a late event is a new row with more ``events``; the row with
      the most is the window's value (view ``kpi_windows_latest``).
    * ``dead_letters`` - at most one row per (source, partition, position,
      reason); looked up by (source, partition, position).

    So ``SELECT count()`` *without* FINAL equals the number of distinct keys,
    whatever the replay's batching and however old the replayed rows are (it
    no longer depends on ClickHouse's 10,000-block deduplication window), and
    no row is lost (after a crash between two blocks of one batch, the replay
    skips only the rows that landed). The first write of a key wins;
    ``replayed_rows`` counts the rows skipped. For a KPI window that is exact
    too: replays count each event once (restored state plus the events after
    its snapshot), so the window's totals over its complete event set come with
    the highest ``events`` a run can reach, and two rows with that many events
    hold the same events, whichever run wrote them first. The same holds for a
    conversion's ``revision`` (the events in its lookback window): a replay
    ends on the same highest revision with the same rows.

    The conversion-time bound assumes what ``PARTITION BY
    toYYYYMM(conversion_ts)`` already assumes: a credit or conversion key
    always comes with the same ``conversion_ts``. Replays recompute rows from
    the same events, so they always do. The one exception is a tenant
    reusing a conversion id for a conversion at another time, after
    ``conversion_dedup_days`` (the flow scores it as a new conversion): it
    is written as a second row with that key, as before this check.

    Where the guarantee stops: rows written by anything but this sink (a
    second flow on the same tables, a manual INSERT) are not checked against
    each other, and behind a load balancer over several replicas a lookup may
    read a replica that has not yet received an insert. The tables stay
    ReplacingMergeTree on the same keys, so any copy that slips through that
    way collapses on merge and ``FINAL`` remains exact.

    Cost in ``lookup`` mode: one extra query per table per batch. Measured on chDB (2 shared
    cores) with 200k credit rows already in the table, batches of new credit
    rows, interleaved with the same code minus the check: the lookup takes
    ~5-7 ms per 1k-row batch and ~10-15 ms per 10k-row batch, i.e. write_batch
    went from 53-71k to 38-48k rows/s (1k rows) and from 110-238k to 88-158k
    rows/s (10k rows). Bounding ``conversion_ts`` matters: without it every
    part is read and the loss was 50-65%. A replayed batch whose rows all
    exist is faster than writing it (no insert).

Outages: retries, backoff and backpressure
    Transient errors (connection refused/reset, timeouts, network errors,
    TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED and other server or chDB overload;
    ``clickhouse_client.is_transient``) of a lookup or an insert never crash
    the flow: the call is retried with exponential backoff from
    ``settings.initial_backoff_s`` doubling up to ``settings.max_backoff_s``,
    for as long as it takes (``settings.max_retries=None``, the default; a
    number gives up after that many retries with a transient
    :class:`ClickHouseSinkError`). Every failed attempt logs a warning naming
    the table, the attempt, the next delay and the error; the first success
    logs "ClickHouse writes resumed after N attempts / S seconds". Retries
    reuse the block's token, so an insert that landed before its error is not
    written twice.

    Backpressure: ``write_batch`` retries inside the call, so the Bytewax
    worker that owns the sink partition is blocked in it and runs nothing
    else - its sources are not polled and no new batch reaches the sink. With
    ``settings.write_behind_s`` the retries happen in the writer thread and
    ``write_batch`` blocks once ``4 * write_behind_rows`` rows wait (and
    ``snapshot()`` until the buffer is written), so the same holds with at most
    that many rows more in memory. On
    other workers (``--processes N``) Bytewax's own epoch backpressure holds
    the sources: an input does not start reading a new epoch until every
    output has finished the previous one, and the sink cannot finish while it
    waits. Memory held during an outage is therefore one batch in the sink plus
    at most what the sources read in the current epoch (``--snapshot-interval``
    seconds of input), whatever the outage's length; nothing is dropped, and
    when ClickHouse answers again the flow continues where it stopped. No
    snapshot completes during the outage, so a crash meanwhile replays from
    before it, which the key check above makes harmless.

Right to be forgotten
    A ``creditflow.forgotten.ForgetPerson`` is written like a row - its
    ``forgotten_ids`` row (the key's hash, never the key), idempotent by
    (tenant_id, id_hash) - and leaves a pending erasure of its (tenant_id,
    person_key). ``snapshot()``, once the write-behind is drained (every row
    of the epoch is written, including rows of the person that came another
    way), and ``close()`` delete the person's rows from
    ``attribution_credits``, ``conversions`` and ``dead_letters``
    (``sinks.clickhouse_forget.erase_persons``: lightweight DELETEs by row
    key, the person id only ever bound in SELECTs). A replayed
    ``ForgetPerson`` erases again, which finds nothing or what the replay
    brought back.

Retention
    With ``ClickHouseSettings.retention`` (the tenant configs), ``snapshot()``
    also deletes the rows past each tenant's ``retention_days`` /
    ``kpi_retention_days`` (``sinks.clickhouse_retention.expire_rows``: per
    table one count and, when it finds rows, one DELETE for all tenants) at
    the first snapshot, then at most once per ``retention_interval_s``, and
    at ``close()`` (so a finite run, such as a backfill, ends with nothing
    past retention).

Errors that stop the flow
    Terminal errors - SQL syntax, unknown table or column, authentication
    (AUTHENTICATION_FAILED, code 516) or access denied, a bad DSN, a migration
    file with bad SQL, an item that is not a SinkRow - raise
    :class:`ClickHouseSinkError` at once, naming the table, migration file or
    DSN (password masked) and what to fix; that stops the dataflow.

>>> sink = ClickHouseSink(ClickHouseSettings("chdb:///tmp/creditflow-doctest"))
>>> sink.list_parts(), sink.part_fn("any key"), sink.part_fn("another")
(['clickhouse'], 0, 0)
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.binding import quote_identifier

from creditflow.forgotten import ForgetPerson
from creditflow.retention import ExpirySchedule
from operators.parcels import items_of
from sinks.clickhouse_client import (
    ClickHouseSettings,
    ClickHouseSinkError,
    connect,
    insert_rows,
    mask_dsn,
    retry_call,
)
from sinks.clickhouse_forget import erase_persons
from sinks.clickhouse_migrations import migrate
from sinks.clickhouse_retention import expire_rows
from sinks.clickhouse_rows import (
    COLUMNS,
    COMMIT_COLUMNS,
    COMMIT_TABLE,
    EVENT_TIME_GETTERS,
    KEY_COLUMNS,
    KEY_GETTERS,
    LOOKUP_TIME_COLUMN,
    LOOKUP_TIME_GETTERS,
    LOOKUP_WIDTH,
    ROW_TYPES,
    TABLES,
    VERSION_COLUMN,
    SinkItem,
    to_row,
)
from sinks.write_behind import WriteBehind

__all__ = [
    "SINK_PARTITION",
    "ClickHouseSettings",
    "ClickHouseSink",
    "ClickHouseSinkError",
    "ClickHouseSinkPartition",
    "ClientFactory",
    "LOOKUP_CHUNK",
    "block_token",
    "default_client_factory",
    "key_for_sink",
    "lookup_sql",
]

logger = logging.getLogger("creditflow.sinks.clickhouse")

SINK_PARTITION = "clickhouse"
"""The sink's only partition."""

ClientFactory = Callable[[ClickHouseSettings], Client]
"""Makes the client the partition writes with; the default is :func:`default_client_factory`."""

INSERT_SETTINGS: dict[str, Any] = {"insert_deduplicate": 1, "async_insert": 0}
"""Settings of every insert (plus its token): synchronous, deduplicated by token."""

COMMIT_SETTINGS: dict[str, Any] = {"insert_deduplicate": 0, "async_insert": 0}
"""``sink_commits`` inserts: two batches may log identical rows (same millisecond), both are kept."""

LOOKUP_CHUNK = 10_000
"""Most key prefixes in the ``IN`` list of one existing-key lookup (bounds the query size)."""

_KEY_EXPRESSIONS: dict[str, tuple[str, str]] = {
    "window_start": ("toUnixTimestamp64Milli(`window_start`)", "Int64"),
    "published_at": ("toUnixTimestamp64Milli(`published_at`)", "Int64"),
    "version": ("toUInt32(`version`)", "UInt32"),
}
"""Key columns read and compared as another expression and parameter type (DateTime64 as epoch ms)."""


def default_client_factory(settings: ClickHouseSettings) -> Client:
    """``connect(settings.dsn, settings.database)``."""
    return connect(settings.dsn, settings.database)


def key_for_sink(row: SinkItem) -> tuple[str, SinkItem]:
    """``(SINK_PARTITION, row)``: the ``(key, value)`` pair ``op.output`` needs for this sink."""
    return (SINK_PARTITION, row)


def block_token(table: str, fingerprints: Sequence[str]) -> str:
    """The insert deduplication token of one block: blake2b hex of the table and its rows' keys.

    Keys suffice: a row's values follow from its key (a replay recomputes the same row; a
    restated KPI window or conversion has a new key), and rows whose key is stored are skipped before. The
    one key that can come back with another row, a conversion id reused after the dedup
    window, comes with another conversion time, which its fingerprint includes.

    >>> block_token("kpi_windows", ["a", "b"]) == block_token("kpi_windows", ["a", "b"])
    True
    >>> block_token("kpi_windows", ["a", "b"]) == block_token("conversions", ["a", "b"])
    False
    >>> len(block_token("t", []))
    64
    """
    digest = hashlib.blake2b(digest_size=32)
    digest.update(table.encode())
    for fingerprint in fingerprints:
        digest.update(b"\n")
        digest.update(fingerprint.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def lookup_sql(table: str) -> str:
    """The existing-key lookup of ``table``: its key columns for the key prefixes in ``{prefixes}``.

    ``prefixes`` is bound as a parameter, an array of tuples of the first
    ``LOOKUP_WIDTH[table]`` key columns; the tuple ``IN`` on that
    primary-key prefix lets ClickHouse skip every granule without one of them.
    Tables in ``LOOKUP_TIME_COLUMN`` also bound that column to ``{lo}`` ..
    ``{hi}`` (epoch ms), skipping partitions and parts of other times. Only
    constant identifiers are formatted into the SQL, never row data.

    >>> print(lookup_sql("kpi_windows"))  # doctest: +NORMALIZE_WHITESPACE
    SELECT `tenant_id`, toUnixTimestamp64Milli(`window_start`), `channel`, `campaign_id`, `events` FROM `kpi_windows`
    WHERE (`tenant_id`, toUnixTimestamp64Milli(`window_start`)) IN {prefixes:Array(Tuple(String, Int64))}
    >>> print(lookup_sql("conversions"))  # doctest: +NORMALIZE_WHITESPACE
    SELECT `tenant_id`, `conversion_id`, `revision` FROM `conversions`
    WHERE (`tenant_id`, `conversion_id`) IN {prefixes:Array(Tuple(String, String))}
    AND `conversion_ts` BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC')
    AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC')
    """
    columns = KEY_COLUMNS[table]
    exprs = [_KEY_EXPRESSIONS.get(c, (quote_identifier(c), "String")) for c in columns]
    prefix = exprs[: LOOKUP_WIDTH[table]]
    sql = (
        f"SELECT {', '.join(e for e, _ in exprs)} FROM {quote_identifier(table)} "
        f"WHERE ({', '.join(e for e, _ in prefix)}) IN {{prefixes:Array(Tuple({', '.join(t for _, t in prefix)}))}}"
    )
    time_column = LOOKUP_TIME_COLUMN.get(table)
    if time_column:
        sql += (
            f" AND {quote_identifier(time_column)} BETWEEN fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC') "
            "AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC')"
        )
    return sql


def replayable_keys_sql(table: str) -> str:
    """The keys of ``table`` written at or after ``{since}`` (epoch ms), at most ``{cap}`` of them.

    >>> print(replayable_keys_sql("conversions"))  # doctest: +NORMALIZE_WHITESPACE
    SELECT `tenant_id`, `conversion_id`, `revision` FROM `conversions`
    WHERE `scored_at` >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') LIMIT {cap:UInt64}
    """
    exprs = [_KEY_EXPRESSIONS.get(c, (quote_identifier(c), "String"))[0] for c in KEY_COLUMNS[table]]
    return (
        f"SELECT {', '.join(exprs)} FROM {quote_identifier(table)} "
        f"WHERE {quote_identifier(VERSION_COLUMN[table])} >= fromUnixTimestamp64Milli({{since:Int64}}, 'UTC') "
        "LIMIT {cap:UInt64}"
    )


_MODE_NOTES = {
    "empty": " (tables empty: nothing to skip)",
    "resumed": " (keys written since its last snapshot loaded: replayed rows are skipped without queries)",
    "lookup": (
        " (tables hold rows and no sink snapshot bounds what a replay may re-send: every batch is checked "
        "against ClickHouse; this lasts until the next restart from a snapshot)"
    ),
}


def _column_types(client: Client, table: str) -> Sequence[Any]:
    """The ClickHouse types of ``table``'s insert columns, read once so inserts skip a DESCRIBE each."""
    columns = COMMIT_COLUMNS if table == COMMIT_TABLE else COLUMNS[table]
    return client.create_insert_context(table, columns).column_types


class ClickHouseSinkPartition(StatefulSinkPartition[SinkItem, int | None]):
    """The single writer: per table, skips keys already written and inserts the rest in tokened blocks.

    ``replayed_rows[table]`` counts the rows skipped because their key was
    already in the table (replays after a restart, or a row emitted again).
    ``resume`` is the sink's snapshot (wall ms of the snapshot the flow resumes
    from); ``mode`` says how already-written keys are found (module docstring).
    ``pending_erasures`` holds, per tenant, the person keys of the ``ForgetPerson``
    items received since the last ``snapshot()`` (key -> id hash, for the logs);
    bound: the deletion requests of one epoch.
    """

    def __init__(
        self,
        client: Client,
        settings: ClickHouseSettings,
        step_id: str,
        resume: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client: Client | None = client
        self._clock = clock
        self._expiry = ExpirySchedule(settings.retention_interval_s)
        """When rows past retention are next deleted (``clock`` seconds)."""
        self._settings = settings
        self._step_id = step_id
        self._column_types: dict[str, Sequence[Any]] = {}
        self._lookup_sql = {table: lookup_sql(table) for table in TABLES}
        self.replayed_rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.pending_erasures: dict[str, dict[str, str]] = {}
        for table in (*TABLES, COMMIT_TABLE):
            self._column_types[table] = retry_call(
                partial(_column_types, client, table),
                what=f"reading the columns of ClickHouse table {table}",
                settings=settings,
            )
        self._known: dict[str, set[tuple[Any, ...]]] | None = self._keys_possibly_replayed(resume)
        self.mode = "lookup" if self._known is None else ("resumed" if resume is not None else "empty")
        """``empty`` (nothing written yet), ``resumed`` (keys since the snapshot loaded) or ``lookup``."""
        logger.info("ClickHouse sink %s starts in %s mode%s", step_id, self.mode, _MODE_NOTES[self.mode])
        self._commits: list[tuple[Any, ...]] = []
        """``sink_commits`` rows not written yet (``settings.commit_log_every_s``); bound: that long's batches."""
        self._commits_lock = threading.Lock()  # the writer thread queues, the worker's snapshot() writes
        self._commits_logged_at = -math.inf
        self._behind: WriteBehind[SinkItem] | None = None
        if settings.write_behind_s is not None:
            self._behind = WriteBehind(
                self._write_now,
                interval_s=settings.write_behind_s,
                flush_rows=settings.write_behind_rows,
                max_pending=4 * settings.write_behind_rows,
                name=f"{step_id}-writer",
            )

    def _keys_possibly_replayed(self, resume: int | None) -> dict[str, set[tuple[Any, ...]]] | None:
        """The keys a replay could re-send, loaded once; None when every batch must be looked up.

        Resumed from a snapshot taken at ``resume`` (wall ms): what the crashed run wrote after
        it, with ``replay_margin_s`` of margin. No snapshot: nothing if the tables are empty
        (this writer is the only one), else unknown (None).
        """
        cap = self._settings.replay_keys_cap
        known: dict[str, set[tuple[Any, ...]]] = {}
        for table in TABLES:
            if resume is None:
                sql = f"SELECT 1 FROM {quote_identifier(table)} LIMIT 1"
                parameters: dict[str, Any] = {}
            else:
                sql = replayable_keys_sql(table)
                parameters = {"since": resume - int(self._settings.replay_margin_s * 1000), "cap": cap + 1}
            rows = retry_call(
                partial(self.client.query, sql, parameters=parameters),
                what=f"reading the keys a replay could re-send to ClickHouse table {table}",
                settings=self._settings,
            ).result_rows
            if resume is None:
                if rows:
                    return None
                known[table] = set()
                continue
            if len(rows) > cap:
                logger.warning(
                    "ClickHouse table %s got more than %d rows since the sink's last snapshot: every batch "
                    "is checked against ClickHouse until the next restart (raise replay_keys_cap to load them)",
                    table,
                    cap,
                )
                return None
            known[table] = {tuple(r) for r in rows}
        return known

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ClickHouseSinkError(f"the ClickHouse sink {self._step_id!r} is closed: build a new partition")
        return self._client

    def write_batch(self, values: list[SinkItem | list[SinkItem]]) -> None:  # type: ignore[override]
        """Write ``values``: per table, the rows whose key is not there yet, in blocks with tokens.

        ``values`` are rows, or parcels of rows (lists, ``operators.parcels``: what ``flows.attribution`` sends).

        Blocks (retrying transient errors, see the module docstring) until every
        row is written or a terminal error raises; with ``settings.write_behind_s``
        the rows are handed to the write-behind buffer instead, and written
        before the next ``snapshot()`` returns. A ``ForgetPerson`` also becomes a
        pending erasure, run by the next ``snapshot()`` or ``close()``.
        """
        items: list[SinkItem] = items_of(values)
        if not items:
            return
        for item in items:
            if type(item) not in ROW_TYPES:
                raise ClickHouseSinkError(
                    f"the ClickHouse sink {self._step_id!r} got a {type(item).__name__}, which maps to no table: "
                    "send a CreditRow, ConversionRow, KpiRow, DeadLetter, SuppressedEvent, ModelWeights "
                    "(creditflow.events.SinkRow) or ForgetPerson, or a list of them, as the value of a "
                    "(key, value) pair"
                )
            if type(item) is ForgetPerson:
                self.pending_erasures.setdefault(item.tenant_id, {})[item.person_key] = item.id_hash
        if self._behind is not None:
            self._behind.add(items)
        else:
            self._write_now(items)

    def _write_now(self, values: list[SinkItem]) -> None:
        """Write ``values`` before returning (the synchronous path, and each write-behind flush)."""
        now_ms = time.time_ns() // 1_000_000
        groups: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
        for item in values:
            table = ROW_TYPES[type(item)]
            group = groups.get(table)
            if group is None:
                group = groups[table] = {}
            row = to_row(item, now_ms)
            group[KEY_GETTERS[table](row)] = row
        commits: list[tuple[Any, ...]] = []
        for table in TABLES:
            group = groups.get(table)
            if group:
                written, replayed = self._write_table(table, group)
                event_at = EVENT_TIME_GETTERS.get(table)
                times = list(map(event_at, group.values())) if event_at else [0]
                commits.append((self._step_id, table, now_ms, written, replayed, min(times), max(times)))
        self._log_commits(commits)

    def _log_commits(self, commits: list[tuple[Any, ...]]) -> None:
        """One ``sink_commits`` row per table just written, stamped after its inserts returned.

        Written now if ``settings.commit_log_every_s`` has passed since the last write, or if the
        write-behind buffer has nothing more waiting (the flow went quiet: nothing would follow soon);
        else with a later batch or the next snapshot.
        """
        committed_ms = time.time_ns() // 1_000_000
        with self._commits_lock:
            self._commits.extend((*c, committed_ms) for c in commits)
            due = time.monotonic() - self._commits_logged_at >= self._settings.commit_log_every_s
        if due or (self._behind is not None and self._behind.waiting == 0):
            self._write_commits()

    def _write_commits(self) -> None:
        """Write the waiting ``sink_commits`` rows in one insert."""
        with self._commits_lock:
            rows, self._commits = self._commits, []
            if not rows:
                return
            self._commits_logged_at = time.monotonic()
            types = self._column_types[COMMIT_TABLE]
            client = self.client

            def insert() -> None:
                insert_rows(client, COMMIT_TABLE, rows, COMMIT_COLUMNS, types, COMMIT_SETTINGS)

            retry_call(insert, what=f"logging batches in ClickHouse table {COMMIT_TABLE}", settings=self._settings)

    def _write_table(self, table: str, group: dict[tuple[Any, ...], tuple[Any, ...]]) -> tuple[int, int]:
        """Write ``group`` (key values -> row) where the key is not in ``table`` yet: (written, skipped)."""
        skipped = 0
        keys_of_rows = list(group)
        if self._known is not None:
            existing = self._known[table].intersection(keys_of_rows)
        else:
            time_of = LOOKUP_TIME_GETTERS.get(table)
            times = list(map(time_of, group.values())) if time_of else None
            existing = self._existing_keys(table, keys_of_rows, (min(times), max(times)) if times else None)
        if existing:
            fresh = {key: row for key, row in group.items() if key not in existing}
            skipped = len(group) - len(fresh)
            self.replayed_rows[table] += skipped
            logger.debug("skipped %d of %d rows already in %s (replayed)", skipped, len(group), table)
            group = fresh
        keys = sorted(group)
        size = self._settings.block_rows
        time_of = LOOKUP_TIME_GETTERS.get(table)
        for start in range(0, len(keys), size):
            block_keys = keys[start : start + size]
            rows = [group[k] for k in block_keys]
            if time_of is None:
                fingerprints = list(map(repr, block_keys))
            else:
                fingerprints = [repr((k, time_of(r))) for k, r in zip(block_keys, rows, strict=True)]
            self._insert(table, rows, block_token(table, fingerprints))
        return len(group), skipped

    def _existing_keys(
        self, table: str, keys: list[tuple[Any, ...]], time_range: tuple[int, int] | None = None
    ) -> set[tuple[Any, ...]]:
        """The ``keys`` (``key_values`` tuples) already in ``table``, plus maybe other keys of the same prefixes.

        ``time_range`` bounds ``LOOKUP_TIME_COLUMN[table]`` (epoch ms, inclusive).
        """
        width = LOOKUP_WIDTH[table]
        prefixes = sorted({key[:width] for key in keys})
        sql = self._lookup_sql[table]
        found: set[tuple[Any, ...]] = set()
        for start in range(0, len(prefixes), LOOKUP_CHUNK):
            chunk = prefixes[start : start + LOOKUP_CHUNK]
            parameters: dict[str, Any] = {"prefixes": chunk}
            if table in LOOKUP_TIME_COLUMN:
                if time_range is None:
                    raise ValueError(f"a lookup in {table} needs the batch's {LOOKUP_TIME_COLUMN[table]} range")
                parameters["lo"], parameters["hi"] = time_range
            result = retry_call(
                partial(self.client.query, sql, parameters=parameters),
                what=f"lookup of {len(chunk)} keys in ClickHouse table {table}",
                settings=self._settings,
            )
            found.update(tuple(row) for row in result.result_rows)
        return found

    def _insert(self, table: str, rows: list[tuple[Any, ...]], token: str) -> None:
        client = self.client
        columns = COLUMNS[table]
        types = self._column_types[table]
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=token)
        data = list(zip(*rows, strict=True))

        def insert() -> None:
            insert_rows(client, table, data, columns, types, settings, column_oriented=True)

        retry_call(insert, what=f"insert of {len(rows)} rows into ClickHouse table {table}", settings=self._settings)
        logger.debug("inserted %d rows into %s (token %s)", len(rows), table, token[:16])

    def snapshot(self) -> int:
        """Wall ms now, once every row handed over is written and the pending erasures ran.

        Rows written after it are what a replay may re-send.
        """
        if self._behind is not None:
            self._behind.drain()
        self._write_commits()
        self._erase_pending()
        self._expire_if_due()
        return time.time_ns() // 1_000_000

    def _expire_if_due(self) -> None:
        """Delete rows past their tenant's retention: at the first snapshot, then once per interval."""
        retention = self._settings.retention
        now = self._clock()
        if retention is None or not self._expiry.due(now):
            return
        expire_rows(self.client, retention, settings=self._settings)
        self._expiry.ran(now)

    def _erase_pending(self) -> None:
        """Delete the rows of the persons erased since the last snapshot (every row handed over is written)."""
        while self.pending_erasures:
            tenant_id = min(self.pending_erasures)
            erase_persons(self.client, tenant_id, self.pending_erasures[tenant_id], settings=self._settings)
            del self.pending_erasures[tenant_id]  # only once done: a failed erasure stays pending

    def close(self) -> None:
        if self._behind is not None:
            behind, self._behind = self._behind, None
            behind.close()
        if self._client is not None:
            self._write_commits()
        if self.pending_erasures and self._client is not None:
            self._erase_pending()
        if self._settings.retention is not None and self._client is not None:
            self._expiry.force()  # a finite run (a backfill) ends with nothing past retention
            self._expire_if_due()
        replayed = {table: n for table, n in self.replayed_rows.items() if n}
        if replayed:
            logger.info("ClickHouse sink %s skipped replayed rows already written: %s", self._step_id, replayed)
        if self._client is not None:
            client, self._client = self._client, None
            if threading.current_thread() is threading.main_thread():
                client.close()
            else:
                # chDB's embedded server double-frees when its session is closed from a
                # Bytewax worker thread (a Rust thread; seen in cluster mode with
                # --processes > 1). Every insert is already synchronous and on disk, so
                # close it from the main thread as the interpreter exits.
                atexit.register(client.close)


class ClickHouseSink(FixedPartitionedSink[SinkItem, int | None]):
    """Bytewax sink writing ``(key, SinkRow | ForgetPerson)`` items to ClickHouse through one writer.

    ``client_factory(settings)`` makes the client (default: :func:`connect` on
    ``settings.dsn``); tests inject failing clients through it. Nothing connects
    before ``build_part``.
    """

    def __init__(self, settings: ClickHouseSettings, client_factory: ClientFactory | None = None) -> None:
        self.settings = settings
        self.client_factory: ClientFactory = client_factory or default_client_factory

    def list_parts(self) -> list[str]:
        return [SINK_PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> ClickHouseSinkPartition:
        """Connect, apply the missing migrations and return the writer."""
        settings = self.settings
        client = retry_call(
            lambda: self.client_factory(settings),
            what=f"connecting to ClickHouse at {mask_dsn(settings.dsn)}",
            settings=settings,
        )
        try:
            applied = retry_call(
                lambda: migrate(client, settings.migrations_dir),
                what=f"migrating ClickHouse at {mask_dsn(settings.dsn)}",
                settings=settings,
            )
            if applied:
                logger.info("ClickHouse sink %s applied migrations %s", step_id, applied)
            return ClickHouseSinkPartition(client, settings, step_id, resume_state)
        except BaseException:
            client.close()
            raise
