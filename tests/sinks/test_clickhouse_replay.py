"""Replays after a crash add no rows, even without FINAL (real embedded ClickHouse).

Bytewax replays the outputs of an unfinished epoch after a restart, batched
differently than the first time. Every test here stops background merges, so a
duplicate row would stay visible to ``count()``: what the tests see is what the
sink wrote, not what ReplacingMergeTree collapsed later.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from clickhouse_connect.driver import Client

import sinks.clickhouse as sink_module
from creditflow.events import ConversionRow, CreditRow, DeadLetter, KpiRow, SinkRow, SourcePosition, Utm
from creditflow.model_weights import ModelWeights
from sinks.clickhouse import SINK_PARTITION, ClickHouseSink, ClickHouseSinkPartition, key_for_sink, lookup_sql
from sinks.clickhouse_client import ClickHouseSettings, ClickHouseSinkError, connect
from sinks.clickhouse_migrations import migrate
from sinks.clickhouse_rows import KEY_COLUMNS, LOOKUP_TIME_COLUMN, TABLES, key_values, table_of, to_row
from tests.sinks.sink_restarts import RESTART_MODES, restart

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "data_driven")
ODD_IDS = ("o'brien", 'quote"d', "back\\slash", "semi;colon) OR 1=1 --", "ünïcødé-🙂", "", "tab\there", "{p:String}")


def rows_for(conversion_numbers: range, tenants: int = 3) -> list[SinkRow]:
    """Credits, conversions, KPI windows and dead letters, keyed by the conversion numbers."""
    rows: list[SinkRow] = []
    for n in conversion_numbers:
        tenant = f"t{n % tenants}"
        conversion_id = ODD_IDS[n % len(ODD_IDS)] + f"#{n}" if n % 5 == 0 else f"conv-{n}"
        touches = [f"touch-{n}-{k}" for k in range(1 + n % 3)]
        for model in MODELS:
            for touch in touches:
                rows.append(
                    CreditRow(
                        tenant_id=tenant,
                        conversion_id=conversion_id,
                        person_id=f"p{n}",
                        model=model,
                        model_version=0,
                        channel="paid_search" if n % 2 else "email",
                        campaign_id=f"camp-{n % 4}",
                        touch_event_id=touch,
                        touch_ts_ms=T0 + n * 1000 - 60_000,
                        conversion_ts_ms=T0 + n * 1000,
                        credit=1 / len(touches),
                        revenue_credit=10.0 / len(touches),
                    )
                )
        rows.append(
            ConversionRow(
                tenant_id=tenant,
                conversion_id=conversion_id,
                person_id=f"p{n}",
                event_id=f"ev-{n}",
                conversion_ts_ms=T0 + n * 1000,
                value=10.0,
                currency="EUR",
                conversion_type="purchase",
                touch_count=len(touches),
                attributed=True,
                first_touch_channel="email",
                last_touch_channel="paid_search",
                first_utm=Utm("newsletter", "email"),
                last_utm=Utm("google", "cpc"),
            )
        )
        rows.append(
            KpiRow(
                tenant_id=tenant,
                window_start_ms=T0 + (n // 4) * 5_000,  # several channels and campaigns share a window
                window_end_ms=T0 + (n // 4 + 1) * 5_000,
                channel=("paid_search", "email")[n % 2],
                campaign_id=f"camp-{n % 4}",
                impressions=n,
                clicks=n % 7,
                conversions=1.0,
                cost=0.5,
                revenue=10.0,
                ctr=None,
                cvr=None,
                cpa=0.5,
                roas=20.0,
                events=n + 1,
            )
        )
        # two reasons at one position: the lookup's prefix matches both, the full key tells them apart
        for reason in ("parse_error", "late_event")[: 1 + n % 2]:
            rows.append(
                DeadLetter(
                    reason=reason,
                    detail="fix the producer",
                    raw=b"{",
                    position=SourcePosition(("redis", "file")[n % 2], f"events:{n % 3}", f"{T0 + n}-0"),
                    tenant_id=tenant,
                )
            )
        if n % 10 == 0:  # a published weights version now and then (copied from Redis by the flow)
            rows.append(
                ModelWeights(
                    tenant, n // 10 + 1, "markov", {"email": 0.25 + n % 3, "paid_search": 1.0}, None, "per_channel",
                    trained_at_ms=T0, window_start_ms=T0 - 1000, window_end_ms=T0, journeys=n,
                    metrics={"log_loss": 0.3}, published_at_ms=T0 + n,
                )
            )  # fmt: skip
    return rows


def split(rows: Sequence[SinkRow], sizes: Sequence[int]) -> Iterator[list[SinkRow]]:
    """``rows`` cut into consecutive batches, cycling through ``sizes``."""
    start, i = 0, 0
    while start < len(rows):
        size = sizes[i % len(sizes)]
        yield list(rows[start : start + size])
        start += size
        i += 1


def write_all(part: ClickHouseSinkPartition, rows: Sequence[SinkRow], sizes: Sequence[int]) -> None:
    for batch in split(rows, sizes):
        part.write_batch(batch)


def stop_merges(client: Client) -> None:
    for table in TABLES:
        client.command(f"SYSTEM STOP MERGES {table}")


def counts(client: Client) -> dict[str, tuple[int, int]]:
    """Per table: (count() without FINAL, number of distinct row keys)."""
    out = {}
    for table in TABLES:
        keys = ", ".join(f"`{c}`" for c in KEY_COLUMNS[table])
        total = client.query(f"SELECT count() FROM {table}").result_rows[0][0]
        distinct = client.query(f"SELECT count() FROM (SELECT DISTINCT {keys} FROM {table})").result_rows[0][0]
        out[table] = (int(total), int(distinct))
    return out


def distinct_keys(rows: Sequence[SinkRow]) -> dict[str, int]:
    per_table: dict[str, set[tuple[object, ...]]] = {t: set() for t in TABLES}
    for row in rows:
        per_table[table_of(row)].add(key_values(table_of(row), to_row(row, 0)))
    return {t: len(keys) for t, keys in per_table.items()}


@pytest.fixture
def settings(tmp_path: Path) -> ClickHouseSettings:
    return ClickHouseSettings(f"chdb://{tmp_path}/chdb", initial_backoff_s=0.001, max_backoff_s=0.002, block_rows=97)


@pytest.fixture
def part(settings: ClickHouseSettings) -> Iterator[ClickHouseSinkPartition]:
    partition = ClickHouseSink(settings).build_part("clickhouse_out", SINK_PARTITION, None)
    try:
        stop_merges(partition.client)
        yield partition
    finally:
        partition.close()


# --- the guarantee ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", RESTART_MODES)
def test_replay_reshuffled_at_other_boundaries_adds_no_rows(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, seed: int, mode: str
) -> None:
    rng = random.Random(seed)
    first_run = rows_for(range(0, 120))
    new = rows_for(range(120, 150))
    crash_at = int(len(first_run) * 0.7)  # the first run got this far before the crash
    write_all(part, first_run[:crash_at], sizes=[37, 5, 101])

    replay = first_run[int(len(first_run) * 0.3) :] + new  # resumes from an older snapshot, then goes on
    rng.shuffle(replay)
    resumed = restart(part, settings, mode)
    write_all(resumed, replay, sizes=[rng.randint(1, 250) for _ in range(20)])
    assert sum(resumed.replayed_rows.values()) > 0
    resumed.close()

    got = counts(part.client)
    expected = distinct_keys(first_run + new)
    assert got == {t: (n, n) for t, n in expected.items()}, "count() without FINAL must equal the distinct keys"
    for table in TABLES:
        final = part.client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]
        assert final == expected[table]
    # the new rows landed, odd ids included
    new_ids = {r.conversion_id for r in new if isinstance(r, ConversionRow)}
    landed = {
        row[0]
        for row in part.client.query(
            "SELECT conversion_id FROM conversions WHERE conversion_id IN {ids:Array(String)}",
            parameters={"ids": sorted(new_ids)},
        ).result_rows
    }
    assert landed == new_ids and len(new_ids) == 30
    assert {"o'brien#120", "#125", "back\\slash#130", "{p:String}#135", "ünïcødé-🙂#140", 'quote"d#145'} <= landed


def test_without_the_key_check_the_same_replay_duplicates(
    part: ClickHouseSinkPartition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: block tokens alone do not stop a replay batched differently."""
    rows = rows_for(range(0, 60))
    write_all(part, rows, sizes=[400])
    monkeypatch.setattr(part, "_existing_keys", lambda *args: set())
    write_all(part, rows, sizes=[300])
    got = counts(part.client)
    assert all(total > distinct for total, distinct in got.values() if distinct), got


def test_crash_between_blocks_then_replay(settings: ClickHouseSettings) -> None:
    """Only some blocks of a batch landed before the crash; the replay writes exactly the rest."""
    rows = rows_for(range(0, 80))

    class DiesAfterTwoInserts:
        def __init__(self, real: Client) -> None:
            self._real = real
            self.inserts = 0

        def insert(self, *args: Any, **kwargs: Any) -> Any:
            self.inserts += 1
            if self.inserts > 2:
                raise RuntimeError("process killed")
            return self._real.insert(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    dying = ClickHouseSink(settings, client_factory=lambda s: DiesAfterTwoInserts(connect(s.dsn)))  # type: ignore[arg-type,return-value]
    first = dying.build_part("out", SINK_PARTITION, None)
    try:
        stop_merges(first.client)
        with pytest.raises(ClickHouseSinkError, match="process killed"):
            first.write_batch(rows)
        landed = counts(first.client)
        assert 0 < landed["attribution_credits"][0] < distinct_keys(rows)["attribution_credits"]
    finally:
        first.close()

    second = ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    try:
        write_all(second, rows[::-1], sizes=[13, 200])
        assert counts(second.client) == {t: (n, n) for t, n in distinct_keys(rows).items()}
    finally:
        second.close()


def test_lookups_are_chunked(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "LOOKUP_CHUNK", 3)
    rows = rows_for(range(0, 40))
    write_all(part, rows, sizes=[50])
    again = restart(part, settings, "lookup")
    write_all(again, rows[::-1], sizes=[77])
    again.close()
    assert counts(part.client) == {t: (n, n) for t, n in distinct_keys(rows).items()}


def test_replayed_flow_run_adds_no_rows(settings: ClickHouseSettings) -> None:
    """Two Bytewax runs as a crash and a resume: the second starts earlier, batched differently."""
    rows = rows_for(range(0, 90))
    first_run, resumed = rows[: len(rows) * 2 // 3], rows[len(rows) // 3 :]

    def run(items: list[SinkRow], batch_size: int) -> None:
        flow = Dataflow("clickhouse_replay_test")
        keyed = op.map("key", op.input("rows", flow, TestingSource(items, batch_size=batch_size)), key_for_sink)
        op.output("clickhouse", keyed, ClickHouseSink(settings))
        run_main(flow)

    with connect(settings.dsn) as c:
        migrate(c)
        stop_merges(c)
    run(first_run, batch_size=64)
    run(resumed, batch_size=23)
    with connect(settings.dsn) as c:
        assert counts(c) == {t: (n, n) for t, n in distinct_keys(rows).items()}


# --- the lookup reads little --------------------------------------------------------


def _primary_key_granules(client: Client, sql: str, parameters: dict[str, Any]) -> tuple[int, int]:
    plan = "\n".join(row[0] for row in client.query("EXPLAIN indexes = 1 " + sql, parameters=parameters).result_rows)
    section = plan[plan.index("PrimaryKey") :]
    match = re.search(r"Granules: (\d+)/(\d+)", section)
    assert match, plan
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize(
    ("table", "fill", "prefixes"),
    [
        (
            "attribution_credits",
            "INSERT INTO attribution_credits (tenant_id, conversion_id, model, touch_event_id, conversion_ts) "
            "SELECT 't' || toString(number % 3), 'conv-' || toString(number), 'linear', 'touch', "
            "fromUnixTimestamp64Milli(toInt64(1767225600000), 'UTC') FROM numbers(200000)",
            [("t1", "conv-1"), ("t1", "conv-100"), ("t2", "conv-150002")],
        ),
        (
            "conversions",
            "INSERT INTO conversions (tenant_id, conversion_id, conversion_ts) "
            "SELECT 't' || toString(number % 3), 'conv-' || toString(number), "
            "fromUnixTimestamp64Milli(toInt64(1767225600000 + number), 'UTC') FROM numbers(200000)",
            [("t1", "conv-1"), ("t2", "conv-150002")],
        ),
        (
            "kpi_windows",
            "INSERT INTO kpi_windows (tenant_id, window_start, channel, campaign_id) "
            "SELECT 't1', fromUnixTimestamp64Milli(toInt64(1767225600000 + number * 5000), 'UTC'), 'email', 'c' "
            "FROM numbers(200000)",
            [("t1", 1767225600000 + 5000 * 7)],
        ),
        (
            "dead_letters",
            "INSERT INTO dead_letters (source, partition, position, reason) "
            "SELECT 'redis', 'events:' || toString(number % 2), toString(number), 'parse_error' FROM numbers(200000)",
            [("redis", "events:0", "1000"), ("redis", "events:1", "1001")],
        ),
    ],
)
def test_lookup_reads_only_the_granules_of_the_keys(
    part: ClickHouseSinkPartition, table: str, fill: str, prefixes: list[tuple[Any, ...]]
) -> None:
    part.client.command(fill)
    sql = lookup_sql(table)
    parameters: dict[str, Any] = {"prefixes": prefixes}
    if table in LOOKUP_TIME_COLUMN:  # a range that includes every row: only the key prefix prunes
        parameters.update(lo=T0 - 1, hi=T0 + 10**9)
    selected, total = _primary_key_granules(part.client, sql, parameters)
    assert total >= 20 and selected <= len(prefixes) * 2, (selected, total)
    found = part.client.query(sql, parameters=parameters).result_rows
    assert len(found) == len(prefixes)


def test_credit_and_conversion_lookups_skip_parts_of_other_times(part: ClickHouseSinkPartition) -> None:
    """A row key comes with its conversion time, so parts of other times are not even opened."""
    old = rows_for(range(0, 200))
    part.write_batch(old)
    later = [replace(r, conversion_ts_ms=r.conversion_ts_ms + 86_400_000) for r in old if isinstance(r, CreditRow)][:50]
    sql = lookup_sql("attribution_credits")
    prefixes = sorted({(r.tenant_id, r.conversion_id) for r in later})
    lo, hi = min(r.conversion_ts_ms for r in later), max(r.conversion_ts_ms for r in later)
    plan = "\n".join(
        row[0]
        for row in part.client.query(
            "EXPLAIN indexes = 1 " + sql, parameters={"prefixes": prefixes, "lo": lo, "hi": hi}
        ).result_rows
    )
    assert re.search(r"Parts: 0/\d+", plan), plan


def test_a_conversion_id_reused_at_another_time_is_not_a_replay(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings
) -> None:
    """The documented limit of the lookup's conversion-time bound: same key, other conversion time, written."""
    first = [r for r in rows_for(range(1, 2)) if isinstance(r, (ConversionRow, CreditRow))]
    part.write_batch(list(first))
    part = restart(part, settings, "lookup")
    part.write_batch([replace(r, person_id="someone else") for r in first])  # a replay: same key and time
    assert {t: n for t, (n, _) in counts(part.client).items()}["conversions"] == 1
    reused = [replace(r, conversion_ts_ms=r.conversion_ts_ms + 40 * 86_400_000) for r in first]
    part.write_batch(list(reused))
    got = counts(part.client)
    assert got["conversions"] == (2, 1)
    assert got["attribution_credits"] == (2 * (len(first) - 1), len(first) - 1)
