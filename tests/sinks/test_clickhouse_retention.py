"""Per-tenant retention in ClickHouse, on real chDB: each tenant's old rows go, nothing else does.

Three tenants: ``short`` keeps person-level rows 100 days, ``forever`` keeps them
(``inf``), and every other tenant takes the ``[defaults]`` 200 days. KPI windows
are kept unless a tenant sets ``kpi_retention_days``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver import Client

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import DeadLetter, SinkRow
from sinks.clickhouse import SINK_PARTITION, ClickHouseSink, ClickHouseSinkPartition
from sinks.clickhouse_client import ClickHouseSettings, connect
from sinks.clickhouse_retention import RETAINED_TABLES, expire_rows
from sinks.clickhouse_rows import COLUMNS
from tests.sinks.test_clickhouse import conversion, credit, kpi, scalar, suppressed

pytestmark = pytest.mark.integration

NOW = 1_800_000_000_000  # 2027-01-15
TENANTS = ("short", "forever", "other")
AGES_DAYS = (10, 150, 250)
"""Each tenant gets rows this old: 150 is past ``short``'s 100 days, 250 past the default 200 too."""

CONFIGS = TenantConfigs(
    TenantConfig(retention_days=200),
    {"short": TenantConfig(retention_days=100), "forever": TenantConfig(retention_days=math.inf)},
)


def rows_of(tenant_id: str, age_days: int) -> list[SinkRow]:
    """A credit, a conversion, a suppressed-event count and a KPI window of ``tenant_id``, ``age_days`` old."""
    ts = NOW - age_days * DAY_MS
    cid = f"{tenant_id}-{age_days}"
    return [
        dataclasses.replace(credit(), tenant_id=tenant_id, conversion_id=cid, conversion_ts_ms=ts, touch_ts_ms=ts),
        dataclasses.replace(conversion(), tenant_id=tenant_id, conversion_id=cid, conversion_ts_ms=ts),
        dataclasses.replace(suppressed(), tenant_id=tenant_id, event_key=f"{cid:0>32}", ts_ms=ts),
        dataclasses.replace(kpi(), tenant_id=tenant_id, window_start_ms=ts, window_end_ms=ts + 60_000),
    ]


def all_rows() -> list[SinkRow]:
    return [row for tenant in TENANTS for age in AGES_DAYS for row in rows_of(tenant, age)]


def ages(client: Client, table: str, column: str) -> dict[str, list[int]]:
    """Per tenant, the ages in days (at ``NOW``) of the rows still visible."""
    sql = (
        f"SELECT tenant_id, groupArray(intDiv({NOW} - toUnixTimestamp64Milli({column}), {DAY_MS})) "
        f"FROM (SELECT * FROM {table} ORDER BY {column} DESC) GROUP BY tenant_id"
    )
    return {tenant: sorted(days) for tenant, days in client.query(sql).result_rows}


@pytest.fixture
def client(settings: ClickHouseSettings) -> Iterator[Client]:
    """The tables (migrated by a sink that wrote ``all_rows()``), then a client of the same path."""
    part = ClickHouseSink(settings).build_part("clickhouse_out", SINK_PARTITION, None)
    part.write_batch(all_rows())
    part.close()
    c = connect(settings.dsn)
    try:
        yield c
    finally:
        c.close()


PERSON_TABLES = {
    "attribution_credits": "conversion_ts",
    "conversions": "conversion_ts",
    "suppressed_events": "event_ts",
}


def test_each_tenant_keeps_its_own_retention_and_kpis_are_kept(client: Client) -> None:
    deleted = expire_rows(client, CONFIGS, now_ms=NOW)

    # short: 150 and 250 days old go; forever: nothing; other (the default 200): 250 goes
    kept = {"short": [10], "forever": [10, 150, 250], "other": [10, 150]}
    for table, column in PERSON_TABLES.items():
        assert ages(client, table, column) == kept, table
        assert ages(client, f"{table} FINAL", column) == kept, table
    assert ages(client, "conversions_latest", "conversion_ts") == kept
    assert ages(client, "attribution_credits_latest", "conversion_ts") == kept
    assert deleted == {"attribution_credits": 3, "conversions": 3, "suppressed_events": 3}
    assert ages(client, "kpi_windows", "window_start") == dict.fromkeys(TENANTS, list(AGES_DAYS))
    # patch parts, not mutations: nothing rewrote the tables' parts
    assert int(scalar(client, "SELECT count() FROM system.mutations")) == 0
    assert expire_rows(client, CONFIGS, now_ms=NOW) == {}  # a second run finds nothing


def test_kpi_retention_is_separate_and_a_lowered_setting_applies_to_old_rows(client: Client) -> None:
    kpi_short = TenantConfigs(
        TenantConfig(), {"short": TenantConfig(kpi_retention_days=20), "other": TenantConfig(retention_days=120)}
    )
    deleted = expire_rows(client, kpi_short, now_ms=NOW)

    assert ages(client, "kpi_windows", "window_start") == {
        "short": [10],
        "forever": list(AGES_DAYS),
        "other": list(AGES_DAYS),
    }
    # person rows: only other's 150 and 250 day old rows, under its new, lower setting
    assert ages(client, "conversions", "conversion_ts") == {
        "short": [10, 150, 250],
        "forever": [10, 150, 250],
        "other": [10],
    }
    assert deleted == {"attribution_credits": 2, "conversions": 2, "suppressed_events": 2, "kpi_windows": 2}


def test_keeping_forever_issues_no_statement(client: Client, settings: ClickHouseSettings) -> None:
    class Counting:
        def __init__(self, inner: Client) -> None:
            self.inner, self.calls = inner, 0

        def command(self, *args: object, **kwargs: object) -> object:
            self.calls += 1
            return self.inner.command(*args, **kwargs)  # type: ignore[arg-type]

    counting = Counting(client)
    assert expire_rows(counting, TenantConfigs(), now_ms=NOW) == {}  # type: ignore[arg-type]
    assert counting.calls == 0
    assert int(scalar(client, "SELECT count() FROM conversions")) == len(TENANTS) * len(AGES_DAYS)


def test_dead_letters_age_by_arrival(client: Client) -> None:
    """A dead letter has no trusted event time: it is kept for the retention after it arrived."""
    part_rows = int(scalar(client, "SELECT count() FROM dead_letters"))
    assert part_rows == 0
    client.insert(
        "dead_letters",
        [
            ["parse_error", "bad JSON", "{", "redis", "events:0", f"1-{i}", t, "", "", NOW - 300 * DAY_MS]
            for i, t in enumerate(("short", "forever", ""))
        ],
        column_names=COLUMNS[DeadLetter.table],
    )
    deleted = expire_rows(client, CONFIGS, now_ms=NOW)
    assert deleted["dead_letters"] == 2  # short's and the tenant-less one (default 200 days); forever's stays
    assert [r[0] for r in client.query("SELECT tenant_id FROM dead_letters").result_rows] == ["forever"]


def test_every_retained_table_has_patch_part_deletes(client: Client) -> None:
    """Migrations 0008 and 0009 give every retained table the block columns a patch-part DELETE needs."""
    for table in RETAINED_TABLES:
        create = str(client.command(f"SHOW CREATE TABLE {table}"))
        assert "enable_block_number_column = 1" in create and "enable_block_offset_column = 1" in create, table


def build(settings: ClickHouseSettings, clock: list[float]) -> ClickHouseSinkPartition:
    s = dataclasses.replace(settings, retention=CONFIGS, retention_interval_s=3600.0)
    sink = ClickHouseSink(s)
    part = sink.build_part("clickhouse_out", SINK_PARTITION, None)
    part._clock = lambda: clock[0]  # the sink's schedule, moved by the test
    return part


def test_the_sink_expires_at_its_first_snapshot_then_once_per_interval_and_at_close(
    settings: ClickHouseSettings,
) -> None:
    real_now = time.time_ns() // 1_000_000
    old = real_now - 300 * DAY_MS  # past every finite retention of CONFIGS
    clock = [1_000.0]
    part = build(settings, clock)
    try:

        def write(cid: str) -> None:
            row = dataclasses.replace(conversion(), tenant_id="short", conversion_id=cid, conversion_ts_ms=old)
            part.write_batch([row])

        def visible() -> list[str]:
            return sorted(r[0] for r in part.client.query("SELECT conversion_id FROM conversions").result_rows)

        write("a")
        part.snapshot()
        assert visible() == []  # first snapshot: expired
        write("b")
        clock[0] += 3599.0
        part.snapshot()
        assert visible() == ["b"]  # within the interval: not yet
        clock[0] += 2.0
        part.snapshot()
        assert visible() == []
        write("c")
    finally:
        part.close()
    reopened = connect(settings.dsn)
    try:
        assert scalar(reopened, "SELECT count() FROM conversions") == 0  # close() expires too: a backfill ends clean
    finally:
        reopened.close()
