"""Per-tenant retention in ClickHouse: deleting the rows past each tenant's retention.

Why this module: a tenant keeps person-level rows ``retention_days`` and KPI
windows ``kpi_retention_days`` (``creditflow.config``); ClickHouse's own TTL
clause is one expression per table, so it cannot follow a per-tenant setting
that changes without rewriting every row's expiry. Instead
:func:`expire_rows` runs, per table of :data:`RETAINED_TABLES`, one
lightweight DELETE whose predicate maps each row's tenant to its cutoff::

    DELETE FROM t WHERE time < <latest cutoff>
                    AND time < transform(tenant_id, [tenants], [cutoffs], <default cutoff>)

so the number of statements does not grow with the number of tenants, and a
changed setting applies to old rows at the next run. The first condition is a
constant bound on the partition key's column, so ClickHouse skips every
partition newer than the latest cutoff (measured below). A ``SELECT count()``
with the same predicate runs first, and the DELETE only when it finds rows:
in steady state a run finds the rows that aged out since the last one.

Who runs it: the ClickHouse sink, in ``snapshot()`` after the epoch's rows
are written, at the first snapshot and then at most once per
``ClickHouseSettings.retention_interval_s`` (an hour by default), and in
``close()``; ``creditflow retention`` (``flows.retention_sweep``) runs it with
the flow stopped.
The DELETEs are written as patch parts where the server can
(``sinks.clickhouse_forget.delete_once``; migrations 0008 and 0009 give every
retained table the block columns this needs), else as mutations. Deleted
rows' bytes stay in their parts until the parts merge, as with erasures.

Not expired: ``forgotten_ids`` (the suppression list must outlive the
person's data), ``model_weights`` (per tenant, no person), ``sink_commits``
(the sink's own bookkeeping). A row written after it expired - a backfill of
old events - is deleted by the next run.

Cost (chDB 26.9, 2 shared cores, ``python -m loadtest.retention_cost``: 2M
credits and 2M conversions of 10 tenants over 400 days, medians of 3): 20 ms
when nothing is due, 67 ms for the hourly run that finds a day of rows (5,000
per table), 135 ms for a month (150,000 per table).

Bound: nothing is held between runs; a run binds one cutoff per configured
tenant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from clickhouse_connect.driver import Client

from creditflow.config import TenantConfigs
from creditflow.retention import RetentionCutoffs, RetentionKind, retention_cutoffs
from sinks.clickhouse_client import ClickHouseSettings, run_call
from sinks.clickhouse_forget import delete_once

__all__ = ["RETAINED_TABLES", "RetainedTable", "expire_rows"]

logger = logging.getLogger("creditflow.sinks.clickhouse")


@dataclass(frozen=True, slots=True)
class RetainedTable:
    """A table expired by retention: which setting applies and which column holds a row's age."""

    kind: RetentionKind
    time_column: str


RETAINED_TABLES: Mapping[str, RetainedTable] = {
    "attribution_credits": RetainedTable("person", "conversion_ts"),
    "conversions": RetainedTable("person", "conversion_ts"),
    "dead_letters": RetainedTable("person", "received_at"),  # a raw payload may name a person; no event time
    "suppressed_events": RetainedTable("person", "event_ts"),
    "kpi_windows": RetainedTable("kpi", "window_start"),
}
"""Table -> its retention; every one has ``tenant_id`` (dead letters of no tenant take the default)."""

_PREDICATE = (
    "{column:Identifier} < fromUnixTimestamp64Milli({latest:Int64}, 'UTC') "
    "AND toUnixTimestamp64Milli({column:Identifier}) "
    "< transform(tenant_id, {tenants:Array(String)}, {cutoffs:Array(Int64)}, {default:Int64})"
)
_COUNT = "SELECT count() FROM {table:Identifier} WHERE " + _PREDICATE
_DELETE = "DELETE FROM {table:Identifier} WHERE " + _PREDICATE


def _parameters(table: str, column: str, cutoffs: RetentionCutoffs) -> dict[str, Any]:
    tenants = sorted(cutoffs.tenants)
    return {
        "table": table,
        "column": column,
        "latest": cutoffs.latest_ms(),
        "tenants": tenants,
        "cutoffs": [cutoffs.tenants[t] for t in tenants],
        "default": cutoffs.default_ms,
    }


def expire_rows(
    client: Client,
    configs: TenantConfigs,
    *,
    now_ms: int | None = None,
    settings: ClickHouseSettings | None = None,
    tables: Mapping[str, RetainedTable] = RETAINED_TABLES,
) -> dict[str, int]:
    """Delete every row past its tenant's retention at ``now_ms`` (default: now); rows deleted per table.

    ``settings`` retries transient errors as the sink does; without, one
    attempt (a human runs ``creditflow retention``). Harmless to repeat.
    """
    started = time.monotonic()
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    cutoffs = {kind: retention_cutoffs(configs, now, kind) for kind in ("person", "kpi")}
    deleted: dict[str, int] = {}
    for table, retained in tables.items():
        cut = cutoffs[retained.kind]
        if cut.expires_nothing():
            continue
        parameters = _parameters(table, retained.time_column, cut)
        found = run_call(
            partial(client.command, _COUNT, parameters=parameters),
            what=f"counting the rows of ClickHouse table {table} past retention",
            settings=settings,
        )
        n = int(str(found).strip() or 0)
        if n:
            run_call(
                partial(delete_once, client, _DELETE, table, parameters),
                what=f"deleting {n} rows past retention from ClickHouse table {table}",
                settings=settings,
            )
            deleted[table] = n
    if deleted:
        logger.info("expired rows past retention from ClickHouse in %.3f s: %s", time.monotonic() - started, deleted)
    return deleted
