"""``creditflow forget``: the sweep that finishes every erasure in the stores the flow does not rewrite itself.

The flow applies a ``deletion_request`` at once: state, ClickHouse rows, the
archive's pending and written journeys (``creditflow.forgotten``). This sweep,
run with the flow stopped or on a schedule, reads the durable suppression list
(ClickHouse ``forgotten_ids``) and removes every listed person from:

* the Redis input streams (``sources.redis_forget``): their raw events;
* ClickHouse (``sinks.clickhouse_forget``): rows that arrived after the
  erasure (a replay, a backfill through another path), and dead letters;
* the Parquet archive (``sinks.archive_forget``);
* the Bytewax recovery store (``flows.recovery_forget``, only with the flow
  stopped): the names of the emptied keys, and freed pages.

Every part is idempotent: a second sweep finds nothing more. With the embedded
chDB only one process may open the data path, so the sweep needs the flow
stopped; against a ClickHouse server (and without ``recovery_dir``) it can run
beside the flow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from creditflow.forgotten import ForgottenIds
from creditflow.pii import PiiHasher

log = logging.getLogger("creditflow.forget")


@dataclass(frozen=True)
class SweepSettings:
    clickhouse_dsn: str
    pii: PiiHasher
    archive_uri: str | None = None
    recovery_dir: str | None = None
    redis_url: str | None = None
    streams: Sequence[str] = ()


@dataclass
class SweepReport:
    listed_keys: int = 0
    clickhouse_rows: dict[str, int] = field(default_factory=dict)
    archive: Any = None
    recovery: Any = None
    streams: Any = None

    def lines(self) -> list[str]:
        out = [
            f"suppression list: {self.listed_keys} erased person keys",
            f"clickhouse rows deleted: {self.clickhouse_rows}",
        ]
        for name, part in (
            ("archive", self.archive),
            ("recovery store", self.recovery),
            ("redis streams", self.streams),
        ):
            if part is not None:
                out.append(f"{name}: {part}")
        return out


def sweep(settings: SweepSettings) -> SweepReport:
    """Run every part of the sweep the settings name; what each did."""
    from sinks.clickhouse_client import connect
    from sinks.clickhouse_forget import load_forgotten, sweep_clickhouse

    client = connect(settings.clickhouse_dsn)  # one client reads the list and sweeps the tables
    try:
        forgotten = ForgottenIds(settings.pii.tenant_salt, load_forgotten(client))
        report = SweepReport(listed_keys=len(forgotten))
        if not forgotten:
            log.info("the suppression list is empty: nothing to sweep")
            return report
        report.clickhouse_rows = sweep_clickhouse(client, forgotten)
    finally:
        client.close()
    if settings.archive_uri:
        from sinks.archive_forget import forget_in_archive

        report.archive = forget_in_archive(settings.archive_uri, forgotten)
    if settings.recovery_dir and Path(settings.recovery_dir).exists():
        from flows.recovery_forget import forget_in_recovery_store

        report.recovery = forget_in_recovery_store(Path(settings.recovery_dir), forgotten)
    if settings.redis_url and settings.streams:
        import time

        import redis

        from sources.redis_forget import forget_in_streams, sweep_decoder

        redis_client = redis.Redis.from_url(settings.redis_url)
        try:
            decoder = sweep_decoder(int(time.time() * 1000), settings.pii)
            report.streams = forget_in_streams(redis_client, list(settings.streams), forgotten, decoder)
        finally:
            redis_client.close()
    return report
