"""ClickHouse sink against real embedded ClickHouse (chDB), no server.

chDB allows one data path per process *while a client is open*: every test
here uses its own ``tmp_path`` and closes every client it opens (fixtures do it
in ``finally``), which lets the next test open a different path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from creditflow.errors import CreditflowError
from creditflow.events import (
    ConversionRow,
    CreditRow,
    DeadLetter,
    KpiRow,
    SinkRow,
    SourcePosition,
    SuppressedEvent,
    Utm,
)
from creditflow.forgotten import ForgetPerson
from creditflow.model_weights import ModelWeights
from sinks.clickhouse import (
    SINK_PARTITION,
    ClickHouseSink,
    ClickHouseSinkPartition,
    key_for_sink,
)
from sinks.clickhouse_client import ClickHouseSettings, ClickHouseSinkError, connect, is_transient
from sinks.clickhouse_migrations import load_migrations, migrate
from sinks.clickhouse_rows import COLUMNS, COMMIT_TABLE, KEY_COLUMNS, LOOKUP_WIDTH, TABLES, key_values, to_row
from tests.sinks.restatements import scoring
from tests.sinks.sink_restarts import RESTART_MODES, restart

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def credit(i: int = 0, *, credit: float = 0.5, model: str = "linear") -> CreditRow:
    return CreditRow(
        tenant_id="t1",
        conversion_id=f"conv{i}",
        person_id=f"p{i}",
        model=model,
        model_version=3,
        channel="paid_search",
        campaign_id="camp-1",
        touch_event_id=f"touch{i}",
        touch_ts_ms=T0 - 60_000,
        conversion_ts_ms=T0,
        credit=credit,
        revenue_credit=credit * 100.0,
    )


def conversion(i: int = 0) -> ConversionRow:
    return ConversionRow(
        tenant_id="t1",
        conversion_id=f"conv{i}",
        person_id=f"p{i}",
        event_id=f"ev{i}",
        conversion_ts_ms=T0,
        value=100.0,
        currency="EUR",
        conversion_type="purchase",
        touch_count=2,
        attributed=True,
        first_touch_channel="social",
        last_touch_channel="paid_search",
        first_utm=Utm("facebook", "cpc", "spring", "ad1", "shoes"),
        last_utm=Utm(source="google", medium="cpc"),
    )


def kpi(i: int = 0, *, clicks: int = 2) -> KpiRow:
    return KpiRow(
        tenant_id="t1",
        window_start_ms=T0 - 123 + i * 60_000,
        window_end_ms=T0 - 123 + (i + 1) * 60_000,
        channel="paid_search",
        campaign_id="camp-1",
        impressions=100,
        clicks=clicks,
        conversions=0.5,
        cost=3.25,
        revenue=50.0,
        ctr=clicks / 100,
        cvr=None,
        cpa=6.5,
        roas=None,
        events=102,
    )


def weights(version: int) -> ModelWeights:
    return ModelWeights(
        "acme", version, "incrementality", {"email": 1.0, "search": 2.0}, 7.0, "per_touch",
        trained_at_ms=1_700_000_000_000, journeys=10, metrics={"log_loss": 0.4}, published_at_ms=1_700_000_000_000,
    )  # fmt: skip


def dead_letter(i: int = 0) -> DeadLetter:
    return DeadLetter(
        reason="parse_error",
        detail="invalid JSON at byte 3: fix the producer",
        raw=b'{"bad\xff\x00',
        position=SourcePosition("redis", "events:0", f"1700000000000-{i}"),
        tenant_id="t1",
        event_id="",
        event_type="",
    )


def suppressed(i: int = 0) -> SuppressedEvent:
    return SuppressedEvent("t1", "no_consent", "click", f"{i:032x}", 1_767_225_600_000 + i)


SAMPLES: list[SinkRow] = [credit(), conversion(), kpi(), dead_letter(), suppressed()]


# --- fixtures --------------------------------------------------------------------


@pytest.fixture
def part(settings: ClickHouseSettings) -> Iterator[ClickHouseSinkPartition]:
    partition = ClickHouseSink(settings).build_part("clickhouse_out", SINK_PARTITION, None)
    try:
        yield partition
    finally:
        partition.close()


@pytest.fixture
def client(settings: ClickHouseSettings) -> Iterator[Client]:
    c = connect(settings.dsn)
    try:
        yield c
    finally:
        c.close()


def scalar(client: Client, sql: str) -> Any:
    """The single value of ``sql``, typed (``Client.command`` returns some types as text)."""
    return client.query(sql).result_rows[0][0]


def count(client: Client, table: str, final: bool = False) -> int:
    return int(scalar(client, f"SELECT count() FROM {table}{' FINAL' if final else ''}"))


class FlakyClient:
    """Delegates to a real client; ``insert`` raises the queued errors first and records tokens."""

    def __init__(self, real: Client, errors: list[BaseException]) -> None:
        self._real = real
        self.errors = list(errors)
        self.insert_calls = 0
        self.tokens: list[str] = []

    def insert(self, *args: Any, context: Any, **kwargs: Any) -> Any:
        if context.table.strip("`") == COMMIT_TABLE:  # the batch's freshness log: not a result-table insert
            return self._real.insert(*args, context=context, **kwargs)
        self.insert_calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.tokens.append(context.settings["insert_deduplication_token"])
        return self._real.insert(*args, context=context, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# --- migrations ------------------------------------------------------------------


def test_migrate_fresh_then_idempotent(client: Client) -> None:
    assert migrate(client) == [m.version for m in load_migrations()] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert migrate(client) == []
    assert client.query("SELECT version, name FROM schema_migrations ORDER BY version").result_rows == [
        (1, "0001_init"),
        (2, "0002_kpi_window_revisions"),
        (3, "0003_sink_commits"),
        (4, "0004_model_weights"),
        (5, "0005_suppressed_events"),
        (6, "0006_conversion_revisions"),
        (7, "0007_forgotten_ids"),
        (8, "0008_fast_deletes"),
        (9, "0009_retention_deletes"),
    ]
    for table in TABLES:
        sorting_key = client.command(
            "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        )
        assert sorting_key == ", ".join(KEY_COLUMNS[table]), table  # the sink's row key is the table's
        cols = client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
            "ORDER BY position",
            parameters={"t": table},
        ).result_rows
        assert [name for name, _ in cols] == COLUMNS[table], table
        engine = client.command(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        )
        assert str(engine).startswith("ReplacingMergeTree"), engine
        assert "non_replicated_deduplication_window = 10000" in str(engine)
    types = dict(client.query("SELECT name, type FROM system.columns WHERE table = 'kpi_windows'").result_rows)
    assert types["window_start"] == "DateTime64(3, 'UTC')"
    assert types["roas"] == "Nullable(Float64)"
    assert types["impressions"] == "UInt64"
    credit_types = dict(
        client.query("SELECT name, type FROM system.columns WHERE table = 'attribution_credits'").result_rows
    )
    assert credit_types["model"] == "LowCardinality(String)"
    assert credit_types["model_version"] == "UInt32"
    sorting = client.command("SELECT sorting_key FROM system.tables WHERE name = 'attribution_credits'")
    assert sorting == "tenant_id, conversion_id, model, touch_event_id, revision"
    assert credit_types["revision"] == "UInt32"
    views = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'View' ORDER BY name"
    ).result_rows
    assert views == [("attribution_credits_latest",), ("conversions_latest",), ("kpi_windows_latest",)]
    for table in ("attribution_credits", "conversions"):  # the views have the tables' columns
        assert list(client.query(f"SELECT * FROM {table}_latest LIMIT 0").column_names) == COLUMNS[table]


def test_migrate_applies_only_new_files_in_order(client: Client, tmp_path: Path) -> None:
    mig_dir = tmp_path / "migrations"
    mig_dir.mkdir()
    packaged = Path(__file__).resolve().parents[2] / "sinks" / "migrations" / "0001_init.sql"
    shutil.copy(packaged, mig_dir / "0001_init.sql")
    assert migrate(client, mig_dir) == [1]
    (mig_dir / "0003_note.sql").write_text(
        "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS note String AFTER received_at;\n"
    )
    (mig_dir / "0002_probe.sql").write_text(
        "-- two statements\nCREATE TABLE IF NOT EXISTS probe (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
        "INSERT INTO probe VALUES (7)\n;\n"
    )
    assert migrate(client, mig_dir) == [2, 3]
    assert migrate(client, mig_dir) == []
    assert scalar(client, "SELECT x FROM probe") == 7
    assert "note" in client.query("SELECT * FROM dead_letters LIMIT 0").column_names


def test_conversion_revisions_migrate_tables_that_hold_rows(
    client: Client, settings: ClickHouseSettings, tmp_path: Path
) -> None:
    """0006 adds ``revision`` to the sort key of filled tables: old rows read as revision 0 and keep their keys."""
    mig_dir = tmp_path / "migrations"
    mig_dir.mkdir()
    packaged = Path(__file__).resolve().parents[2] / "sinks" / "migrations"
    for path in sorted(packaged.glob("000[1-5]_*.sql")):
        shutil.copy(path, mig_dir / path.name)
    assert migrate(client, mig_dir) == [1, 2, 3, 4, 5]
    old = scoring("conv0", 0, ("a", "b", "c"))
    for row in old:  # as the sink wrote them before 0006: no revision column
        columns = [c for c in COLUMNS[row.table] if c != "revision"]
        values = [v for c, v in zip(COLUMNS[row.table], to_row(row, T0), strict=True) if c != "revision"]
        client.insert(row.table, [values], column_names=columns)
    shutil.copy(packaged / "0006_conversion_revisions.sql", mig_dir)
    assert migrate(client, mig_dir) == [6]
    keys = client.query(
        "SELECT name, sorting_key, primary_key FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('attribution_credits', 'conversions') ORDER BY name"
    ).result_rows
    assert keys == [  # revision is appended to the sort key; the index (primary key) stays the old one
        (
            "attribution_credits",
            "tenant_id, conversion_id, model, touch_event_id, revision",
            "tenant_id, conversion_id, model, touch_event_id",
        ),
        ("conversions", "tenant_id, conversion_id, revision", "tenant_id, conversion_id"),
    ]
    assert client.query("SELECT DISTINCT revision FROM attribution_credits").result_rows == [(0,)]
    # the sink over the migrated tables: the old rows are revision 0, a replay of them is skipped
    part = ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    try:
        assert part.mode == "lookup"
        restated = scoring("conv0", 1, ("a", "b"))
        part.write_batch(old + restated)
        assert part.replayed_rows["attribution_credits"] == 6 and part.replayed_rows["conversions"] == 1
        assert count(client, "attribution_credits") == 6 + 4
        latest = client.query("SELECT DISTINCT revision FROM attribution_credits_latest").result_rows
        assert latest == [(1,)]
        assert client.query("SELECT revision FROM conversions_latest").result_rows == [(1,)]
    finally:
        part.close()


def test_bad_migration_files_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "1_init.sql").write_text("SELECT 1;\n")
    with pytest.raises(ClickHouseSinkError, match="NNNN_name.sql"):
        load_migrations(tmp_path)
    (tmp_path / "1_init.sql").unlink()
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;\n")
    with pytest.raises(ClickHouseSinkError, match="used twice"):
        load_migrations(tmp_path)


def test_failing_migration_names_the_file(client: Client, tmp_path: Path) -> None:
    (tmp_path / "0001_broken.sql").write_text("CREATE TABLEX nope;\n")
    with pytest.raises(ClickHouseSinkError, match="0001_broken") as info:
        migrate(client, tmp_path)
    assert "SYNTAX_ERROR" in str(info.value)
    assert scalar(client, "SELECT count() FROM schema_migrations") == 0


# --- row round trips -------------------------------------------------------------


def _select_as_written(client: Client, table: str) -> list[tuple[Any, ...]]:
    """Rows of ``table`` with DateTime64 columns as epoch ms and strings as bytes-safe values."""
    types = dict(
        client.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
            parameters={"t": table},
        ).result_rows
    )
    exprs = [
        f"toUnixTimestamp64Milli(`{c}`)" if types[c].startswith("DateTime64") else f"`{c}`" for c in COLUMNS[table]
    ]
    result = client.query(
        f"SELECT {', '.join(exprs)} FROM {table} FINAL",
        column_formats={"raw": "bytes"} if table == "dead_letters" else None,
    )
    return [tuple(row) for row in result.result_rows]


@pytest.mark.parametrize("item", SAMPLES, ids=lambda r: type(r).__name__)
def test_each_row_type_round_trips(part: ClickHouseSinkPartition, item: SinkRow) -> None:
    before = dt.datetime.now(dt.UTC)
    part.write_batch([item])
    after_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    (row,) = _select_as_written(part.client, item.table)
    expected = to_row(item, now_ms=row[-1])
    if isinstance(item, ConversionRow):
        expected = expected[:9] + (1,) + expected[10:]
    assert row == expected
    assert int(before.timestamp() * 1000) - 1 <= row[-1] <= after_ms + 1


def test_int_milliseconds_land_as_the_right_utc_instant(part: ClickHouseSinkPartition) -> None:
    part.write_batch([credit()])
    assert part.client.command("SELECT toString(conversion_ts) FROM attribution_credits") == "2023-11-14 22:13:20.123"
    got = part.client.query("SELECT conversion_ts FROM attribution_credits").result_rows[0][0]
    assert got.replace(tzinfo=dt.UTC) == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC)


# --- idempotence -----------------------------------------------------------------


@pytest.mark.parametrize("mode", RESTART_MODES)
def test_replaying_the_same_batch_adds_no_rows(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, mode: str
) -> None:
    batch: list[SinkRow] = [credit(i) for i in range(50)] + [conversion(1), kpi(1), kpi(2), dead_letter(1)]
    batch += [weights(1), suppressed(1), suppressed(2), ForgetPerson("t1", "u:nobody", "f1:" + "0" * 32, T0)]
    assert part.mode == "empty"
    part.write_batch(batch)
    counts = {t: count(part.client, t) for t in TABLES}
    assert counts == {
        "attribution_credits": 50, "conversions": 1, "kpi_windows": 2, "dead_letters": 1, "model_weights": 1,
        "suppressed_events": 2, "forgotten_ids": 1,
    }  # fmt: skip
    again = restart(part, settings, mode)
    try:
        again.write_batch(batch)
        again.write_batch(list(reversed(batch)))
        assert {t: count(again.client, t) for t in TABLES} == counts
        assert again.replayed_rows == {
            "attribution_credits": 100,
            "conversions": 2,
            "kpi_windows": 4,
            "dead_letters": 2,
            "model_weights": 2,
            "suppressed_events": 4,
            "forgotten_ids": 2,
        }
    finally:
        again.close()


def test_a_resumed_sink_loads_only_keys_written_since_its_snapshot_minus_the_margin(
    settings: ClickHouseSettings,
) -> None:
    margin = ClickHouseSettings(settings.dsn, replay_margin_s=0.0)
    part = ClickHouseSink(margin).build_part("out", SINK_PARTITION, None)
    try:
        part.write_batch([credit(0)])
        snap = part.snapshot()
        time.sleep(0.01)
        part.write_batch([credit(1)])
        again = ClickHouseSink(margin).build_part("out", SINK_PARTITION, snap)
        try:
            assert again._known is not None
            assert {k[1] for k in again._known["attribution_credits"]} == {"conv1"}
        finally:
            again.close()
        capped = ClickHouseSettings(settings.dsn, replay_keys_cap=0)
        fallback = ClickHouseSink(capped).build_part("out", SINK_PARTITION, snap)  # one key > cap of 0
        try:
            assert fallback.mode == "lookup"
            fallback.write_batch([credit(0), credit(1), credit(2)])
            assert count(fallback.client, "attribution_credits") == 3
            assert fallback.replayed_rows["attribution_credits"] == 2
        finally:
            fallback.close()
    finally:
        part.close()


def test_chunking_and_tokens_are_deterministic(settings: ClickHouseSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    small = ClickHouseSettings(settings.dsn, block_rows=7, initial_backoff_s=0.001, max_backoff_s=0.002)
    counting: list[FlakyClient] = []

    def factory(s: ClickHouseSettings) -> Any:
        counting.append(FlakyClient(connect(s.dsn), []))
        return counting[-1]

    part = ClickHouseSink(small, client_factory=factory).build_part("out", SINK_PARTITION, None)
    try:
        rows: list[SinkRow] = [credit(i) for i in range(30)]
        part.write_batch(rows)
        assert counting[0].insert_calls == 5  # 7+7+7+7+2
        first_tokens = list(counting[0].tokens)
        again = restart(part, small, "lookup", factory)
        again.write_batch(rows[::-1])  # every key is there already: nothing to insert
        assert counting[1].insert_calls == 0
        # Without the key check, the same rows in another order make the same blocks and
        # tokens, and ClickHouse drops them: the tokens alone make a retried insert safe.
        monkeypatch.setattr(again, "_existing_keys", lambda *args: set())
        again.write_batch(rows[::-1])
        assert counting[1].insert_calls == 5
        assert counting[1].tokens == first_tokens
        assert count(part.client, "attribution_credits") == 30
        again.close()
    finally:
        part.close()


@pytest.mark.parametrize("mode", RESTART_MODES)
def test_an_existing_key_keeps_its_first_row(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, mode: str
) -> None:
    part.write_batch([kpi(0, clicks=2)])
    again = restart(part, settings, mode)
    again.write_batch([kpi(0, clicks=9)])  # recomputed by a replay: the key is there, the first write wins
    assert count(part.client, "kpi_windows") == 1
    assert scalar(part.client, "SELECT clicks FROM kpi_windows") == 2
    assert again.replayed_rows["kpi_windows"] == 1
    again.close()


def test_a_restated_window_is_a_new_row_and_the_latest_view_shows_the_most_events(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings
) -> None:
    first = kpi(0, clicks=2)
    restated = dataclasses.replace(first, clicks=3, events=first.events + 1)  # one late click added
    part.write_batch([first])
    part.write_batch([restated])
    again = restart(part, settings, "resumed")
    again.write_batch([first])  # a replay re-sends the first revision, last: skipped, and it would not win
    assert count(part.client, "kpi_windows") == 2
    assert again.replayed_rows["kpi_windows"] == 1
    rows = part.client.query("SELECT clicks, events FROM kpi_windows_latest").result_rows
    assert rows == [(3, first.events + 1)]
    again.close()


@pytest.mark.parametrize("mode", RESTART_MODES)
def test_a_restated_conversion_is_new_rows_and_the_latest_views_show_its_highest_revision(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings, mode: str
) -> None:
    for table in ("attribution_credits", "conversions"):  # a replayed copy would stay visible to count()
        part.client.command(f"SYSTEM STOP MERGES {table}")
    first = scoring("conv0", 0, ("touch-a", "touch-b", "touch-c"))
    restated = scoring("conv0", 1, ("touch-a", "touch-b"))  # a late conversion took touch-c: one touch row fewer
    other = scoring("conv1", 0, ("touch-x",))
    part.write_batch(first + other)
    part.write_batch(restated)
    assert part.replayed_rows["attribution_credits"] == 0  # a higher revision is a new row, not a replay
    assert (count(part.client, "attribution_credits"), count(part.client, "conversions")) == (6 + 2 + 4, 3)
    again = restart(part, settings, mode)
    try:
        again.write_batch(restated + first)  # the replay re-sends both revisions' rows, in another order
        assert (count(part.client, "attribution_credits"), count(part.client, "conversions")) == (12, 3)
        assert again.replayed_rows["attribution_credits"] == 4 + 6
        assert again.replayed_rows["conversions"] == 2
    finally:
        again.close()
    latest = part.client.query(
        "SELECT model, touch_event_id, revision, credit FROM attribution_credits_latest "
        "WHERE conversion_id = 'conv0' ORDER BY model, touch_event_id"
    ).result_rows
    assert latest == [
        ("last_touch", "touch-a", 1, 0.0),
        ("last_touch", "touch-b", 1, 1.0),
        ("linear", "touch-a", 1, 0.5),
        ("linear", "touch-b", 1, 0.5),
    ]
    sums = part.client.query(
        "SELECT conversion_id, model, sum(credit), sum(revenue_credit) FROM attribution_credits_latest "
        "GROUP BY conversion_id, model ORDER BY conversion_id, model"
    ).result_rows
    assert [(c, m, round(s, 9), round(r, 6)) for c, m, s, r in sums] == [
        (c, m, 1.0, 100.0) for c in ("conv0", "conv1") for m in ("last_touch", "linear")
    ]
    conversions = part.client.query(
        "SELECT conversion_id, revision, touch_count FROM conversions_latest ORDER BY conversion_id"
    ).result_rows
    assert conversions == [("conv0", 1, 2), ("conv1", 0, 1)]


def test_each_batch_logs_when_each_table_became_visible(
    part: ClickHouseSinkPartition, settings: ClickHouseSettings
) -> None:
    part.write_batch([credit(0), credit(1), kpi(0), dead_letter(0)])
    restart(part, settings, "resumed").write_batch([credit(0), credit(2)])  # credit 0 is a replay
    rows = part.client.query(
        "SELECT table_name, rows, replayed, toUnixTimestamp64Milli(batch_at), toUnixTimestamp64Milli(min_event_at), "
        "toUnixTimestamp64Milli(max_event_at), toUnixTimestamp64Milli(committed_at) FROM sink_commits "
        "ORDER BY committed_at, table_name"
    ).result_rows
    assert [(t, n, r) for t, n, r, *_ in rows] == [
        ("attribution_credits", 2, 0),
        ("dead_letters", 1, 0),
        ("kpi_windows", 1, 0),
        ("attribution_credits", 1, 1),
    ]
    assert all(batch_at <= committed for *_, batch_at, _, _, committed in rows)
    kpi_row = rows[2]
    assert kpi_row[4] == kpi_row[5] == kpi(0).window_end_ms  # fresh as of the window's end
    credit_row = rows[0]
    assert (credit_row[4], credit_row[5]) == (credit(0).conversion_ts_ms, credit(1).conversion_ts_ms)
    # every credit row of the first batch carries that batch's stamp: its visibility is looked up by it
    stamps = part.client.query(
        "SELECT DISTINCT toUnixTimestamp64Milli(scored_at) FROM attribution_credits WHERE touch_event_id != ''"
    ).result_rows
    assert {s for (s,) in stamps} == {rows[0][3], rows[3][3]}


def test_the_commit_log_waits_until_due_or_the_snapshot_and_keeps_each_batchs_stamp(
    settings: ClickHouseSettings,
) -> None:
    """Each commit-log write is one more insert: rows wait ``commit_log_every_s`` (or the next snapshot)."""
    part = ClickHouseSink(dataclasses.replace(settings, commit_log_every_s=3600)).build_part(
        "out", SINK_PARTITION, None
    )
    try:
        logged = lambda: count(part.client, "sink_commits")  # noqa: E731
        part.write_batch([credit(0)])
        assert logged() == 1  # the first batch's row at once: a new writer is seen committing
        part.write_batch([credit(1)])
        part.write_batch([credit(2), dead_letter(0)])
        assert logged() == 1  # not due yet
        part.snapshot()
        assert logged() == 4
        stamps = part.client.query(
            "SELECT toUnixTimestamp64Milli(batch_at), toUnixTimestamp64Milli(committed_at) FROM sink_commits "
            "WHERE table_name = 'attribution_credits' ORDER BY batch_at"
        ).result_rows
        assert len({b for b, _ in stamps}) == 3 and all(b <= c for b, c in stamps)
        part.write_batch([credit(3)])
    finally:
        part.close()
    again = ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    try:
        assert count(again.client, "sink_commits") == 5  # close() wrote the last one
    finally:
        again.close()


def test_with_write_behind_a_quiet_flow_logs_its_last_batch_without_waiting(settings: ClickHouseSettings) -> None:
    """Nothing waits behind the batch: its commit row is written with it (a stopped flow loses none)."""
    quiet = dataclasses.replace(settings, commit_log_every_s=3600, write_behind_s=0.05)
    part = ClickHouseSink(quiet).build_part("out", SINK_PARTITION, None)
    try:
        for i in range(3):
            part.write_batch([credit(i)])
            deadline = time.monotonic() + 10
            while count(part.client, "sink_commits") < i + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert count(part.client, "sink_commits") == i + 1
    finally:
        part.close()


def test_with_no_wait_every_batch_is_logged_at_once(settings: ClickHouseSettings) -> None:
    part = ClickHouseSink(dataclasses.replace(settings, commit_log_every_s=0)).build_part("out", SINK_PARTITION, None)
    try:
        for i in range(3):
            part.write_batch([credit(i)])
            assert count(part.client, "sink_commits") == i + 1
    finally:
        part.close()


def test_a_negative_commit_log_interval_is_refused() -> None:
    with pytest.raises(ClickHouseSinkError, match="commit_log_every_s must be >= 0"):
        ClickHouseSettings("chdb:///tmp/x", commit_log_every_s=-1)


def test_last_row_per_key_wins_within_a_batch(part: ClickHouseSinkPartition) -> None:
    part.write_batch([credit(0, credit=0.1), credit(0, credit=0.9), credit(0, credit=0.4)])
    assert count(part.client, "attribution_credits") == 1
    assert scalar(part.client, "SELECT credit FROM attribution_credits") == 0.4


def test_row_key_is_the_order_by(client: Client) -> None:
    migrate(client)
    for item in SAMPLES:
        keys = str(client.command(f"SELECT sorting_key FROM system.tables WHERE name = '{item.table}'")).split(", ")
        assert len(key_values(item.table, to_row(item, 0))) == len(keys)
        assert [k.strip("`") for k in keys] == list(KEY_COLUMNS[item.table])
        primary = str(client.command(f"SELECT primary_key FROM system.tables WHERE name = '{item.table}'"))
        assert primary.split(", ")[: LOOKUP_WIDTH[item.table]] == keys[: LOOKUP_WIDTH[item.table]]


# --- errors and retries ----------------------------------------------------------


def test_transient_errors_are_retried_then_written_once(
    settings: ClickHouseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    flaky: list[FlakyClient] = []

    def factory(s: ClickHouseSettings) -> Any:
        c = FlakyClient(
            connect(s.dsn),
            [
                OperationalError("Error HTTPConnectionPool: Connection refused executing HTTP request"),
                DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)", code=252),
            ],
        )
        flaky.append(c)
        return c

    part = ClickHouseSink(settings, client_factory=factory).build_part("out", SINK_PARTITION, None)
    try:
        with caplog.at_level(logging.INFO, logger="creditflow.sinks.clickhouse"):
            part.write_batch([credit(1), credit(2)])
        assert flaky[0].insert_calls == 3
        assert count(part.client, "attribution_credits") == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all("attribution_credits" in w for w in warnings)
        assert "attempt 1 (retrying until ClickHouse answers), next attempt in 0.001s" in warnings[0]
        assert "attempt 2 (retrying until ClickHouse answers), next attempt in 0.002s" in warnings[1]
        assert "Connection refused" in warnings[0] and "TOO_MANY_PARTS" in warnings[1]
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert [i for i in infos if i.startswith("ClickHouse writes resumed after 3 attempts / ")]
    finally:
        part.close()


def test_transient_errors_give_up_after_max_retries(settings: ClickHouseSettings) -> None:
    two = ClickHouseSettings(settings.dsn, max_retries=2, initial_backoff_s=0.001, max_backoff_s=0.001)
    real = connect(two.dsn)
    flaky = FlakyClient(real, [TimeoutError("read timed out")] * 5)
    part = ClickHouseSink(two, client_factory=lambda s: flaky).build_part("out", SINK_PARTITION, None)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ClickHouseSinkError, match="kpi_windows.*after 3 attempts") as info:
            part.write_batch([kpi()])
        assert info.value.transient
        assert flaky.insert_calls == 3
    finally:
        part.close()


def test_terminal_error_raises_naming_the_table(settings: ClickHouseSettings) -> None:
    real = connect(settings.dsn)
    flaky = FlakyClient(real, [DatabaseError("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)", code=60)])
    part = ClickHouseSink(settings, client_factory=lambda s: flaky).build_part("out", SINK_PARTITION, None)  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ClickHouseSinkError, match="conversions") as info:
            part.write_batch([conversion()])
        assert isinstance(info.value, CreditflowError)
        assert not info.value.transient
        assert "run the sink's migrations" in str(info.value)
        assert flaky.insert_calls == 1
    finally:
        part.close()


def test_real_terminal_error_from_chdb(part: ClickHouseSinkPartition, caplog: pytest.LogCaptureFixture) -> None:
    part.client.command("DROP TABLE dead_letters")
    with caplog.at_level(logging.WARNING, logger="creditflow.sinks.clickhouse"):
        with pytest.raises(ClickHouseSinkError, match="dead_letters") as info:
            part.write_batch([dead_letter()])
    assert "UNKNOWN_TABLE" in str(info.value)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_non_sink_rows_are_rejected(part: ClickHouseSinkPartition) -> None:
    with pytest.raises(ClickHouseSinkError, match="got a tuple"):
        part.write_batch([("clickhouse", credit())])  # type: ignore[list-item]


def test_connecting_is_retried_in_build_part(settings: ClickHouseSettings) -> None:
    attempts: list[int] = []

    def factory(s: ClickHouseSettings) -> Client:
        attempts.append(1)
        if len(attempts) < 3:
            raise ClickHouseSinkError("cannot connect: Connection refused", transient=True)
        return connect(s.dsn)

    part = ClickHouseSink(settings, client_factory=factory).build_part("out", SINK_PARTITION, None)
    try:
        assert len(attempts) == 3
        part.write_batch([kpi()])
        assert count(part.client, "kpi_windows") == 1
    finally:
        part.close()


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionResetError(), True),
        (OperationalError("Error executing HTTP request"), True),
        (DatabaseError("Code: 241. DB::Exception: (MEMORY_LIMIT_EXCEEDED)", code=241), True),
        (DatabaseError("server said MEMORY_LIMIT_EXCEEDED"), True),
        (DatabaseError("Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)", code=62), False),
        (DatabaseError("Code: 16. DB::Exception: (NO_SUCH_COLUMN_IN_TABLE)", code=16), False),
        (DatabaseError("Code: 516. DB::Exception: (AUTHENTICATION_FAILED)", code=516), False),
        (ClickHouseSinkError("bad DSN"), False),
        (TypeError("bad value"), False),
    ],
)
def test_error_classification(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


# --- connecting ------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn", ["chdb://relative/path", "chdb:///abs?x=1", "clickhouse://h:9000", "h:8123", "http:///nohost"]
)
def test_bad_dsns_are_explained(dsn: str) -> None:
    with pytest.raises(ClickHouseSinkError, match="DSN"):
        if dsn.startswith("chdb") or dsn.startswith("http"):
            connect(dsn)
        else:
            ClickHouseSettings(dsn)


def test_unreachable_server_is_transient_and_masks_the_password() -> None:
    with pytest.raises(ClickHouseSinkError) as info:
        connect("http://writer:s3cret@127.0.0.1:1/analytics?connect_timeout=2")
    assert info.value.transient
    assert "s3cret" not in str(info.value)
    assert "writer:***@127.0.0.1:1" in str(info.value)
    assert "s3cret" not in repr(ClickHouseSettings("https://writer:s3cret@ch:8443"))


def test_conflicting_databases_are_rejected() -> None:
    with pytest.raises(ClickHouseSinkError, match="name it in one place"):
        connect("http://ch:8123/analytics", database="other")


def test_database_is_created_and_selected(settings: ClickHouseSettings) -> None:
    other = ClickHouseSettings(settings.dsn, database="creditflow")
    part = ClickHouseSink(other).build_part("out", SINK_PARTITION, None)
    try:
        part.write_batch([kpi()])
        assert scalar(part.client, "SELECT count() FROM creditflow.kpi_windows") == 1
        assert scalar(part.client, "SELECT count() FROM system.tables WHERE database = 'default'") == 0
    finally:
        part.close()


def test_chdb_allows_one_open_path_per_process(tmp_path: Path) -> None:
    """The chDB limit the test suite lives with: a second path fails while the first is open."""
    first = connect(f"chdb://{tmp_path}/a")
    try:
        with pytest.raises(ClickHouseSinkError, match="one path per process"):
            connect(f"chdb://{tmp_path}/b")
        second_on_same_path = connect(f"chdb://{tmp_path}/a")
        second_on_same_path.close()
    finally:
        first.close()
    reopened = connect(f"chdb://{tmp_path}/b")  # fine once every client of /a is closed
    reopened.close()


# --- bytewax end to end ----------------------------------------------------------


def test_dataflow_writes_rows_end_to_end(settings: ClickHouseSettings) -> None:
    items: list[SinkRow] = [credit(i) for i in range(20)] + [conversion(i) for i in range(5)] + [kpi(0), dead_letter(0)]
    items += [weights(1), weights(2)]
    flow = Dataflow("clickhouse_sink_test")
    rows = op.input("rows", flow, TestingSource(items, batch_size=4))
    keyed = op.map("key", rows, key_for_sink)
    op.output("clickhouse", keyed, ClickHouseSink(settings))
    run_main(flow)  # finite input: bytewax closes the partition, releasing the chDB path
    with connect(settings.dsn) as c:
        assert {t: count(c, t, final=True) for t in TABLES} == {
            "attribution_credits": 20,
            "conversions": 5,
            "kpi_windows": 1,
            "dead_letters": 1,
            "model_weights": 2,
            "suppressed_events": 0,
            "forgotten_ids": 0,
        }
        assert scalar(c, "SELECT sum(credit) FROM attribution_credits FINAL") == pytest.approx(10.0)
        got = c.query("SELECT version, channel_weights, half_life_days FROM model_weights FINAL ORDER BY version")
        assert got.result_rows == [(1, {"email": 1.0, "search": 2.0}, 7.0), (2, {"email": 1.0, "search": 2.0}, 7.0)]


def test_parcels_of_rows_are_written_like_single_rows(part: ClickHouseSinkPartition) -> None:
    """flows.attribution sends a batch's rows as parcels per table (operators.parcels): lists of rows."""
    part.write_batch([[credit(i) for i in range(5)], conversion(1), [kpi(1), kpi(2)]])
    assert {t: count(part.client, t) for t in ("attribution_credits", "conversions", "kpi_windows")} == {
        "attribution_credits": 5,
        "conversions": 1,
        "kpi_windows": 2,
    }


def test_a_parcel_holding_what_is_no_row_is_refused_by_name(part: ClickHouseSinkPartition) -> None:
    with pytest.raises(ClickHouseSinkError, match="got a str, which maps to no table"):
        part.write_batch([[credit(1), "not a row"]])
