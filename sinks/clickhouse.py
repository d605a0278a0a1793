"""The Bytewax sink that writes creditflow rows into ClickHouse.

``ClickHouseSink(settings)`` takes ``(key, SinkRow)`` items (``CreditRow``,
``ConversionRow``, ``KpiRow``, ``DeadLetter``) and writes each to its table
(``attribution_credits``, ``conversions``, ``kpi_windows``, ``dead_letters``)
through clickhouse-connect, to embedded chDB (``chdb:///path``) or a server
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

Delivery guarantee
    Bytewax delivers at-least-once: after a crash the flow resumes from the last
    snapshot and replays what followed, and the sink keeps no state of its own
    (``snapshot()`` is None). Duplicates are neutralised by the data instead:

    * every table is a ReplacingMergeTree whose ORDER BY is a deterministic row
      key (``clickhouse_rows.row_key``), so a replayed row is never a distinct
      row; the newest write (``scored_at``/``emitted_at``/``received_at``) wins;
    * within one ``write_batch`` rows are collapsed per key (the last one wins),
      sorted by key and cut into blocks of at most ``settings.block_rows`` rows;
      each block is one insert carrying ``insert_deduplication_token`` = blake2b
      of the table name and the block's row fingerprints (key + values except the
      write time). Replaying an identical block - same rows, same values - is
      dropped by ClickHouse (it remembers the last 10,000 blocks per table), so
      ``count()`` does not even grow. A block whose values changed (a corrected
      KPI window, a re-scored conversion) gets a new token and is written, and
      the newer row replaces the older one.
    * a replay batched differently, or older than the deduplication window,
      inserts extra physical copies of the same keys: ReplacingMergeTree
      collapses them on merge, and ``SELECT ... FINAL`` (or ``argMax`` by the
      version column) never shows them. Query with FINAL where exact counts
      matter.

    Net: no lost rows, and no duplicate logical rows; physical duplicates are
    possible only until a merge, and never for identical replayed blocks.

Errors
    Transient errors (connection refused/reset, timeouts, network errors,
    TOO_MANY_PARTS, MEMORY_LIMIT_EXCEEDED and similar overload) are retried with
    exponential backoff up to ``settings.max_retries`` times, each retry logged as
    a warning naming the table and the attempt; retries reuse the block's token,
    so an insert that did land before a timeout is not written twice. Terminal
    errors (SQL syntax, unknown table or column, authentication, a bad DSN, an
    item that is not a SinkRow) raise :class:`ClickHouseSinkError` naming the
    table and the fix, which stops the dataflow.

>>> sink = ClickHouseSink(ClickHouseSettings("chdb:///tmp/creditflow-doctest"))
>>> sink.list_parts(), sink.part_fn("any key"), sink.part_fn("another")
(['clickhouse'], 0, 0)
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from clickhouse_connect.driver import Client

from creditflow.events import SinkRow
from sinks.clickhouse_client import (
    ClickHouseSettings,
    ClickHouseSinkError,
    connect,
    mask_dsn,
    retry_call,
)
from sinks.clickhouse_migrations import migrate
from sinks.clickhouse_rows import COLUMNS, ROW_TYPES, TABLES, row_fingerprint, row_key, to_row

__all__ = [
    "SINK_PARTITION",
    "ClickHouseSettings",
    "ClickHouseSink",
    "ClickHouseSinkError",
    "ClickHouseSinkPartition",
    "ClientFactory",
    "block_token",
    "default_client_factory",
    "key_for_sink",
]

logger = logging.getLogger("creditflow.sinks.clickhouse")

SINK_PARTITION = "clickhouse"
"""The sink's only partition."""

ClientFactory = Callable[[ClickHouseSettings], Client]
"""Makes the client the partition writes with; the default is :func:`default_client_factory`."""

INSERT_SETTINGS: dict[str, Any] = {"insert_deduplicate": 1, "async_insert": 0}
"""Settings of every insert (plus its token): synchronous, deduplicated by token."""


def default_client_factory(settings: ClickHouseSettings) -> Client:
    """``connect(settings.dsn, settings.database)``."""
    return connect(settings.dsn, settings.database)


def key_for_sink(row: SinkRow) -> tuple[str, SinkRow]:
    """``(SINK_PARTITION, row)``: the ``(key, value)`` pair ``op.output`` needs for this sink."""
    return (SINK_PARTITION, row)


def block_token(table: str, fingerprints: Sequence[str]) -> str:
    """The insert deduplication token of one block: blake2b hex of table and fingerprints.

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


def _column_types(client: Client, table: str) -> Sequence[Any]:
    """The ClickHouse types of ``COLUMNS[table]``, read once so inserts skip a DESCRIBE each."""
    return client.create_insert_context(table, COLUMNS[table]).column_types


class ClickHouseSinkPartition(StatefulSinkPartition[SinkRow, None]):
    """The single writer: groups a batch by table and inserts blocks with tokens."""

    def __init__(self, client: Client, settings: ClickHouseSettings, step_id: str) -> None:
        self._client: Client | None = client
        self._settings = settings
        self._step_id = step_id
        self._column_types: dict[str, Sequence[Any]] = {}
        for table in TABLES:
            self._column_types[table] = retry_call(
                partial(_column_types, client, table),
                what=f"reading the columns of ClickHouse table {table}",
                settings=settings,
            )

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ClickHouseSinkError(f"the ClickHouse sink {self._step_id!r} is closed: build a new partition")
        return self._client

    def write_batch(self, values: list[SinkRow]) -> None:
        """Insert ``values``: one block per table (chunked at ``block_rows``), each with its token."""
        if not values:
            return
        now_ms = time.time_ns() // 1_000_000
        groups: dict[str, dict[str, tuple[Any, ...]]] = {}
        for item in values:
            table = ROW_TYPES.get(type(item))
            if table is None:
                raise ClickHouseSinkError(
                    f"the ClickHouse sink {self._step_id!r} got a {type(item).__name__}, which maps to no table: "
                    "send CreditRow, ConversionRow, KpiRow or DeadLetter (creditflow.events.SinkRow) as the "
                    "value of a (key, value) pair"
                )
            group = groups.get(table)
            if group is None:
                group = groups[table] = {}
            group[row_key(item)] = to_row(item, now_ms)
        for table in TABLES:
            group = groups.get(table)
            if group:
                self._write_table(table, group)

    def _write_table(self, table: str, group: dict[str, tuple[Any, ...]]) -> None:
        keys = sorted(group)
        size = self._settings.block_rows
        for start in range(0, len(keys), size):
            block_keys = keys[start : start + size]
            rows = [group[k] for k in block_keys]
            token = block_token(table, [row_fingerprint(k, r) for k, r in zip(block_keys, rows, strict=True)])
            self._insert(table, rows, token)

    def _insert(self, table: str, rows: list[tuple[Any, ...]], token: str) -> None:
        client = self.client
        columns = COLUMNS[table]
        types = self._column_types[table]
        settings = dict(INSERT_SETTINGS, insert_deduplication_token=token)
        data = list(zip(*rows, strict=True))

        def insert() -> None:
            client.insert(
                table,
                data,
                column_names=columns,
                column_types=types,
                column_oriented=True,
                settings=settings,
            )

        retry_call(insert, what=f"insert of {len(rows)} rows into ClickHouse table {table}", settings=self._settings)
        logger.debug("inserted %d rows into %s (token %s)", len(rows), table, token[:16])

    def snapshot(self) -> None:
        """None: the sink keeps no state; idempotence comes from row keys and tokens."""
        return None

    def close(self) -> None:
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


class ClickHouseSink(FixedPartitionedSink[SinkRow, None]):
    """Bytewax sink writing ``(key, SinkRow)`` items to ClickHouse through one writer.

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

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> ClickHouseSinkPartition:
        """Connect, apply the missing migrations and return the writer."""
        settings = self.settings
        client = retry_call(
            lambda: self.client_factory(settings),
            what=f"connecting to ClickHouse at {mask_dsn(settings.dsn)}",
            settings=settings,
        )
        try:
            applied = retry_call(
                lambda: migrate(client), what=f"migrating ClickHouse at {mask_dsn(settings.dsn)}", settings=settings
            )
            if applied:
                logger.info("ClickHouse sink %s applied migrations %s", step_id, applied)
            return ClickHouseSinkPartition(client, settings, step_id)
        except BaseException:
            client.close()
            raise
