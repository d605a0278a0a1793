"""Turning sink rows (``creditflow.events.SinkRow``) into ClickHouse insert tuples.

``COLUMNS[table]`` lists a table's insert columns; ``to_row(item, now_ms)``
gives the matching tuple. Timestamps stay integer epoch milliseconds:
clickhouse-connect writes an ``int`` into a ``DateTime64(3, 'UTC')`` column as
raw ticks, i.e. milliseconds (checked against chDB in the tests), which skips a
datetime conversion per value. ``now_ms`` fills the version column of each table
(``scored_at``, ``emitted_at``, ``received_at``).

``KEY_COLUMNS[table]`` names the ORDER BY columns (two rows with the same key
are the same row to ReplacingMergeTree) and ``key_values(table, row)`` reads
them out of an insert tuple, as the values a ``SELECT`` of those columns
returns (DateTime64 keys as epoch milliseconds). The sink's existing-key lookup
matches the first ``LOOKUP_WIDTH[table]`` key columns - a primary-key prefix -
with a tuple ``IN``, so it reads only the granules of the batch's keys.

>>> from creditflow.events import KpiRow
>>> kpi = KpiRow("t1", 0, 60_000, "search", "c9", 10, 2, 1.0, 5.0, 40.0, 0.2, 0.5, 5.0, 8.0, 13)
>>> to_row(kpi, now_ms=123)
('t1', 0, 60000, 'search', 'c9', 10, 2, 1.0, 5.0, 40.0, 0.2, 0.5, 5.0, 8.0, 13, 123)
>>> len(to_row(kpi, 0)) == len(COLUMNS["kpi_windows"])
True
>>> key_values("kpi_windows", to_row(kpi, 123))
('t1', 0, 'search', 'c9', 13)
>>> from creditflow.events import CreditRow
>>> restated = CreditRow("t1", "o1", "p1", "linear", 0, "email", "c9", "e1", 0, 60_000, 1.0, 40.0, revision=2)
>>> to_row(restated, now_ms=123)
('t1', 'o1', 'p1', 'linear', 0, 'email', 'c9', 'e1', 0, 60000, 1.0, 40.0, 2, 123)
>>> key_values("attribution_credits", to_row(restated, 123))
('t1', 'o1', 'linear', 'e1', 2)

A ``creditflow.forgotten.ForgetPerson`` becomes its ``forgotten_ids`` row: the
hash, never the person key (the sink deletes the person's rows apart, see
``sinks.clickhouse_forget``):

>>> from creditflow.forgotten import ForgetPerson
>>> forget = ForgetPerson("t1", "u:ann", "f1:" + "0" * 32, requested_ts_ms=60_000)
>>> to_row(forget, now_ms=123)
('t1', 'f1:00000000000000000000000000000000', 60000, 123)
>>> key_values("forgotten_ids", to_row(forget, 123))
('t1', 'f1:00000000000000000000000000000000')
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, TypeAlias

from creditflow.events import ConversionRow, CreditRow, DeadLetter, KpiRow, SinkRow, SuppressedEvent
from creditflow.forgotten import ForgetPerson
from creditflow.model_weights import ModelWeights

__all__ = [
    "COLUMNS",
    "KEY_COLUMNS",
    "KEY_GETTERS",
    "LOOKUP_TIME_COLUMN",
    "LOOKUP_TIME_GETTERS",
    "LOOKUP_WIDTH",
    "ROW_TYPES",
    "SinkItem",
    "TABLES",
    "key_values",
    "table_of",
    "to_row",
]

SinkItem: TypeAlias = SinkRow | ForgetPerson
"""Everything the ClickHouse sink accepts: the result rows, and ``ForgetPerson`` (its ``forgotten_ids`` row)."""


COLUMNS: dict[str, list[str]] = {
    CreditRow.table: [
        "tenant_id",
        "conversion_id",
        "person_id",
        "model",
        "model_version",
        "channel",
        "campaign_id",
        "touch_event_id",
        "touch_ts",
        "conversion_ts",
        "credit",
        "revenue_credit",
        "revision",
        "scored_at",
    ],
    ConversionRow.table: [
        "tenant_id",
        "conversion_id",
        "person_id",
        "event_id",
        "conversion_ts",
        "value",
        "currency",
        "conversion_type",
        "touch_count",
        "attributed",
        "first_touch_channel",
        "last_touch_channel",
        "first_utm_source",
        "first_utm_medium",
        "first_utm_campaign",
        "first_utm_content",
        "first_utm_term",
        "last_utm_source",
        "last_utm_medium",
        "last_utm_campaign",
        "last_utm_content",
        "last_utm_term",
        "revision",
        "scored_at",
    ],
    KpiRow.table: [
        "tenant_id",
        "window_start",
        "window_end",
        "channel",
        "campaign_id",
        "impressions",
        "clicks",
        "conversions",
        "cost",
        "revenue",
        "ctr",
        "cvr",
        "cpa",
        "roas",
        "events",
        "emitted_at",
    ],
    DeadLetter.table: [
        "reason",
        "detail",
        "raw",
        "source",
        "partition",
        "position",
        "tenant_id",
        "event_id",
        "event_type",
        "received_at",
    ],
    SuppressedEvent.table: ["tenant_id", "reason", "event_type", "event_key", "event_ts", "received_at"],
    ModelWeights.table: [
        "tenant_id",
        "version",
        "action",
        "published_at",
        "method",
        "channel_weights",
        "half_life_days",
        "split",
        "trained_at",
        "window_start",
        "window_end",
        "journeys",
        "metrics",
        "shares",
        "written_at",
    ],
    ForgetPerson.table: ["tenant_id", "id_hash", "requested_at", "forgotten_at"],
}
"""Insert columns per table, in ``to_row`` order; the write time is always last."""

TABLES: tuple[str, ...] = tuple(COLUMNS)

KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    CreditRow.table: ("tenant_id", "conversion_id", "model", "touch_event_id", "revision"),
    ConversionRow.table: ("tenant_id", "conversion_id", "revision"),
    KpiRow.table: ("tenant_id", "window_start", "channel", "campaign_id", "events"),
    DeadLetter.table: ("source", "partition", "position", "reason"),
    SuppressedEvent.table: ("tenant_id", "reason", "event_key"),
    ModelWeights.table: ("tenant_id", "version", "action", "published_at"),
    ForgetPerson.table: ("tenant_id", "id_hash"),
}
"""Each table's ORDER BY (``sinks/migrations/``): the row key.

A restated KPI window (more ``events``) or conversion (higher ``revision``) is a new key, so a new row."""

LOOKUP_WIDTH: dict[str, int] = {
    CreditRow.table: 2,  # (tenant_id, conversion_id) IN (...)
    ConversionRow.table: 2,  # (tenant_id, conversion_id) IN (...)
    KpiRow.table: 2,  # (tenant_id, window_start) IN (...)
    DeadLetter.table: 3,  # (source, partition, position) IN (...)
    SuppressedEvent.table: 3,  # (tenant_id, reason, event_key) IN (...)
    ModelWeights.table: 2,  # (tenant_id, version) IN (...)
    ForgetPerson.table: 2,  # (tenant_id, id_hash) IN (...): the whole key
}
"""How many leading key columns the existing-key lookup matches with a tuple ``IN`` (a primary-key prefix)."""

LOOKUP_TIME_COLUMN: dict[str, str] = {
    CreditRow.table: "conversion_ts",
    ConversionRow.table: "conversion_ts",
    SuppressedEvent.table: "event_ts",
}
"""Tables whose rows carry, with their key, the event time their partition comes from.

A row key always comes with the same value of this column (the conversion's
event time: ``PARTITION BY toYYYYMM(conversion_ts)`` relies on it too), so the
existing-key lookup also bounds it to the batch's range, which lets ClickHouse
skip the partitions and parts of other times (their min-max index). KPI windows
have their time in the key; dead letters are looked up by source position.
"""

VERSION_COLUMN: dict[str, str] = {
    CreditRow.table: "scored_at",
    ConversionRow.table: "scored_at",
    KpiRow.table: "emitted_at",
    DeadLetter.table: "received_at",
    SuppressedEvent.table: "received_at",
    ModelWeights.table: "written_at",
    ForgetPerson.table: "forgotten_at",
}
"""Each table's write-time column (the ReplacingMergeTree version, always the last insert column)."""

EVENT_TIME_COLUMN: dict[str, str] = {
    CreditRow.table: "conversion_ts",
    ConversionRow.table: "conversion_ts",
    KpiRow.table: "window_end",
    ForgetPerson.table: "requested_at",
}
"""The event time a table's rows are fresh as of (``sink_commits.min_event_at``/``max_event_at``);
dead letters have none."""

EVENT_TIME_GETTERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    table: itemgetter(COLUMNS[table].index(column)) for table, column in EVENT_TIME_COLUMN.items()
}

COMMIT_TABLE = "sink_commits"
COMMIT_COLUMNS: list[str] = [
    "writer",
    "table_name",
    "batch_at",
    "rows",
    "replayed",
    "min_event_at",
    "max_event_at",
    "committed_at",
]
"""``sink_commits`` (``sinks/migrations/0003_sink_commits.sql``): one row per table per sink batch."""

LOOKUP_TIME_GETTERS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    table: itemgetter(COLUMNS[table].index(column)) for table, column in LOOKUP_TIME_COLUMN.items()
}

KEY_GETTERS: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    table: itemgetter(*(COLUMNS[table].index(column) for column in KEY_COLUMNS[table])) for table in TABLES
}
"""Per table: insert tuple -> ``KEY_COLUMNS`` values (every key has at least two columns, so a tuple)."""

ROW_TYPES: dict[type, str] = {
    CreditRow: CreditRow.table,
    ConversionRow: ConversionRow.table,
    KpiRow: KpiRow.table,
    DeadLetter: DeadLetter.table,
    SuppressedEvent: SuppressedEvent.table,
    ModelWeights: ModelWeights.table,
    ForgetPerson: ForgetPerson.table,
}
"""Sink item type -> table."""


def _credit(r: CreditRow, now_ms: int) -> tuple[Any, ...]:
    return (
        r.tenant_id,
        r.conversion_id,
        r.person_id,
        r.model,
        r.model_version,
        r.channel,
        r.campaign_id,
        r.touch_event_id,
        r.touch_ts_ms,
        r.conversion_ts_ms,
        r.credit,
        r.revenue_credit,
        r.revision,
        now_ms,
    )


def _conversion(r: ConversionRow, now_ms: int) -> tuple[Any, ...]:
    f, last = r.first_utm, r.last_utm
    return (
        r.tenant_id,
        r.conversion_id,
        r.person_id,
        r.event_id,
        r.conversion_ts_ms,
        r.value,
        r.currency,
        r.conversion_type,
        r.touch_count,
        1 if r.attributed else 0,
        r.first_touch_channel,
        r.last_touch_channel,
        f.source,
        f.medium,
        f.campaign,
        f.content,
        f.term,
        last.source,
        last.medium,
        last.campaign,
        last.content,
        last.term,
        r.revision,
        now_ms,
    )


def _kpi(r: KpiRow, now_ms: int) -> tuple[Any, ...]:
    return (
        r.tenant_id,
        r.window_start_ms,
        r.window_end_ms,
        r.channel,
        r.campaign_id,
        r.impressions,
        r.clicks,
        r.conversions,
        r.cost,
        r.revenue,
        r.ctr,
        r.cvr,
        r.cpa,
        r.roas,
        r.events,
        now_ms,
    )


def _dead_letter(r: DeadLetter, now_ms: int) -> tuple[Any, ...]:
    p = r.position
    return (
        r.reason,
        r.detail,
        r.raw,
        p.source,
        p.partition,
        p.offset,
        r.tenant_id,
        r.event_id,
        r.event_type,
        now_ms,
    )


def _suppressed(r: SuppressedEvent, now_ms: int) -> tuple[Any, ...]:
    return (r.tenant_id, r.reason, r.event_type, r.event_key, r.ts_ms, now_ms)


def _model_weights(r: ModelWeights, now_ms: int) -> tuple[Any, ...]:
    return (
        r.tenant_id,
        r.version,
        r.action,
        r.published_at_ms,
        r.method,
        dict(r.channel_weights),
        r.half_life_days,
        r.split,
        r.trained_at_ms,
        r.window_start_ms,
        r.window_end_ms,
        r.journeys,
        dict(r.metrics),
        dict(r.shares),
        now_ms,
    )


def _forgotten(r: ForgetPerson, now_ms: int) -> tuple[Any, ...]:
    return (r.tenant_id, r.id_hash, r.requested_ts_ms, now_ms)  # never r.person_key


_CONVERTERS: dict[type, Callable[[Any, int], tuple[Any, ...]]] = {
    CreditRow: _credit,
    ConversionRow: _conversion,
    KpiRow: _kpi,
    DeadLetter: _dead_letter,
    SuppressedEvent: _suppressed,
    ModelWeights: _model_weights,
    ForgetPerson: _forgotten,
}


def _unsupported(item: object) -> TypeError:
    return TypeError(
        f"the ClickHouse sink cannot write a {type(item).__name__}: send CreditRow, ConversionRow, "
        "KpiRow, DeadLetter, SuppressedEvent, ModelWeights (creditflow.events.SinkRow) or ForgetPerson"
    )


def table_of(item: SinkItem) -> str:
    """The table ``item`` goes to; TypeError for anything that is not a ``SinkItem``."""
    try:
        return ROW_TYPES[type(item)]
    except KeyError:
        raise _unsupported(item) from None


def to_row(item: SinkItem, now_ms: int) -> tuple[Any, ...]:
    """The insert tuple of ``item`` in ``COLUMNS[item.table]`` order; ``now_ms`` is the write time."""
    try:
        convert = _CONVERTERS[type(item)]
    except KeyError:
        raise _unsupported(item) from None
    return convert(item, now_ms)


def key_values(table: str, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``KEY_COLUMNS[table]`` values of the insert tuple ``row`` (as ``to_row`` made it)."""
    return KEY_GETTERS[table](row)
