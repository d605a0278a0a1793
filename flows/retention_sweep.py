"""``creditflow retention``: expire every store outside the flow by each tenant's retention, once.

A running flow does this itself (the ClickHouse and archive sinks expire at
a snapshot, hourly). This command is for a stopped flow - the embedded chDB
admits one process, so the flow must be stopped to use it - or right after
lowering a tenant's ``retention_days`` in the tenant config file:

    creditflow retention --tenants tenants.toml --data-dir creditflow-data

It deletes, per tenant, ClickHouse rows (``sinks.clickhouse_retention``) and
archive dates (``sinks.archive_retention``) past the tenant's retention.
Flow state needs nothing: every keyed step forgets a person within the
tenant's ``state_horizon_days``, which must fit in ``retention_days``
(``creditflow.config``). Redis input streams hold only what the flow has not
yet processed plus the trimmer's margin (``sources.redis_trim``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from creditflow.config import TenantConfigs
from creditflow.retention import retention_cutoffs

__all__ = ["RetentionReport", "expire_stores"]


@dataclass(frozen=True)
class RetentionReport:
    clickhouse_rows: dict[str, int]
    archive: Any = None

    def lines(self) -> list[str]:
        out = [f"clickhouse rows past retention deleted: {self.clickhouse_rows or 'none'}"]
        if self.archive is not None:
            out.append(f"archive: {self.archive}")
        return out


def expire_stores(
    configs: TenantConfigs, clickhouse_dsn: str, archive_uri: str | None = None, now_ms: int | None = None
) -> RetentionReport:
    """Delete what is past each tenant's retention at ``now_ms`` (default now) in ClickHouse and the archive."""
    from sinks.archive_retention import expire_archive
    from sinks.clickhouse_client import connect
    from sinks.clickhouse_migrations import migrate
    from sinks.clickhouse_retention import expire_rows

    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    client = connect(clickhouse_dsn)
    try:
        migrate(client)  # the block columns fast deletes need, on a store last written by an older version
        rows = expire_rows(client, configs, now_ms=now)
    finally:
        client.close()
    archive = None
    if archive_uri is not None:
        archive = expire_archive(archive_uri, retention_cutoffs(configs, now, "person"))
    return RetentionReport(rows, archive)
