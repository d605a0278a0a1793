"""ClickHouse outages: transient errors are retried with backoff, terminal ones stop the flow.

The writes go to real embedded ClickHouse (chDB) through a fault-injecting
wrapper; the server cases use a closed loopback port (connection refused) and
a tiny HTTP server that answers like a ClickHouse server rejecting the password.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from creditflow.events import CreditRow, DeadLetter, KpiRow, SinkRow, SourcePosition
from sinks.clickhouse import SINK_PARTITION, ClickHouseSink, key_for_sink
from sinks.clickhouse_client import ClickHouseSettings, ClickHouseSinkError, connect, is_transient, retry_call
from sinks.clickhouse_rows import COMMIT_TABLE
from tests.sinks.sink_restarts import restart

pytestmark = pytest.mark.integration

LOGGER = "creditflow.sinks.clickhouse"
T0 = 1_767_225_600_000
PACKAGED_MIGRATIONS = Path(__file__).resolve().parents[2] / "sinks" / "migrations"


def credit(i: int) -> CreditRow:
    return CreditRow("t1", f"conv{i // 3}", f"p{i}", "linear", 0, "email", "c", f"touch{i}", T0, T0 + 1, 1 / 3, 5.0)


def kpi(i: int) -> KpiRow:
    return KpiRow("t1", T0 + i * 5000, T0 + (i + 1) * 5000, "email", "c", 10, 1, 0.0, 1.0, 0.0, 0.1, 0.0, None, 0.0, 11)


def dead_letter(i: int) -> DeadLetter:
    return DeadLetter("parse_error", "fix the producer", b"{", SourcePosition("redis", "ev", f"{i}-0"))


def refused_error() -> BaseException:
    return OperationalError(
        "Error HTTPConnectionPool(host='ch', port=8123): Max retries exceeded (Caused by NewConnectionError("
        "'Failed to establish a new connection: [Errno 111] Connection refused')) executing HTTP request"
    )


class FaultyClient:
    """A real client whose next ``n`` inserts (or queries) fail with a transient error."""

    def __init__(self, real: Client) -> None:
        self._real = real
        self._insert_faults: list[Callable[[], BaseException]] = []
        self._query_faults: list[Callable[[], BaseException]] = []
        self.failed_at: list[float] = []
        self.written_at: list[float] = []
        self.inserts = 0

    def fail_next_inserts(self, n: int, error: Callable[[], BaseException] = refused_error) -> None:
        self._insert_faults.extend([error] * n)

    def fail_next_queries(self, n: int, error: Callable[[], BaseException] = refused_error) -> None:
        self._query_faults.extend([error] * n)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self._insert_faults:
            self.failed_at.append(time.monotonic())
            raise self._insert_faults.pop(0)()
        result = self._real.insert(*args, **kwargs)
        self.inserts += kwargs["context"].table.strip("`") != COMMIT_TABLE  # result tables only, not the freshness log
        self.written_at.append(time.monotonic())
        return result

    def query(self, *args: Any, **kwargs: Any) -> Any:
        if self._query_faults:
            raise self._query_faults.pop(0)()
        return self._real.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def settings(tmp_path: Path) -> ClickHouseSettings:
    """Retries forever (the default), with tiny waits."""
    return ClickHouseSettings(f"chdb://{tmp_path}/chdb", initial_backoff_s=0.001, max_backoff_s=0.004)


def faulty_sink(settings: ClickHouseSettings) -> tuple[ClickHouseSink, list[FaultyClient]]:
    made: list[FaultyClient] = []

    def factory(s: ClickHouseSettings) -> Any:
        made.append(FaultyClient(connect(s.dsn, s.database)))
        return made[-1]

    return ClickHouseSink(settings, client_factory=factory), made


def count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# --- transient errors: retried until they pass ------------------------------------------


def test_failed_inserts_are_retried_and_land_exactly_once(
    settings: ClickHouseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    sink, made = faulty_sink(settings)
    part = sink.build_part("out", SINK_PARTITION, None)
    try:
        client = made[0]
        client.fail_next_inserts(7)  # more than the old default of 5 retries: the default now never gives up
        with caplog.at_level(logging.INFO, logger=LOGGER):
            batch: list[SinkRow] = [*(credit(i) for i in range(9)), kpi(0)]
            part.write_batch(batch)
        assert count(client, "attribution_credits") == 9
        assert count(client, "kpi_windows") == 1
        assert client.inserts == 2

        warnings = messages(caplog, logging.WARNING)
        assert len(warnings) == 7
        for attempt, warning in enumerate(warnings, start=1):
            assert warning.startswith("insert of 9 rows into ClickHouse table attribution_credits: ")
            assert f"transient error on attempt {attempt} (retrying until ClickHouse answers)" in warning
            assert "next attempt in 0.00" in warning
            assert "Connection refused" in warning
        resumed = [m for m in messages(caplog, logging.INFO) if m.startswith("ClickHouse writes resumed")]
        assert len(resumed) == 1
        assert resumed[0].startswith("ClickHouse writes resumed after 8 attempts / ")
        assert " seconds: insert of 9 rows into ClickHouse table attribution_credits succeeded" in resumed[0]

        caplog.clear()
        again = restart(part, settings, "resumed")
        again.write_batch([credit(i) for i in range(12)])  # replay with more: only the 3 new rows go in
        assert count(client, "attribution_credits") == 12
        assert not messages(caplog, logging.WARNING)
        again.close()
    finally:
        part.close()


@pytest.mark.parametrize(
    "error",
    [
        lambda: DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)", code=252),
        lambda: DatabaseError("Code: 241. DB::Exception: Memory limit exceeded (MEMORY_LIMIT_EXCEEDED)", code=241),
        lambda: TimeoutError("timed out"),
        lambda: ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=["too_many_parts", "memory_limit", "timeout", "reset"],
)
def test_overload_and_network_errors_are_retried(
    settings: ClickHouseSettings, error: Callable[[], BaseException]
) -> None:
    sink, made = faulty_sink(settings)
    first = sink.build_part("out", SINK_PARTITION, None)
    first.write_batch([dead_letter(0)])
    part = sink.build_part("out", SINK_PARTITION, None)  # tables hold rows, no snapshot: lookup mode
    try:
        assert part.mode == "lookup"
        made[1].fail_next_inserts(3, error)
        made[1].fail_next_queries(2, error)  # the existing-key lookup fails too
        part.write_batch([dead_letter(i) for i in range(4)])
        assert count(made[1], "dead_letters") == 4
    finally:
        part.close()
        first.close()


def test_backoff_doubles_up_to_the_cap_and_never_gives_up_by_default(caplog: pytest.LogCaptureFixture) -> None:
    settings = ClickHouseSettings("chdb:///unused", initial_backoff_s=0.5, max_backoff_s=10.0)
    assert settings.max_retries is None
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    failures = iter(range(12))

    def call() -> str:
        if next(failures, None) is not None:
            raise ConnectionRefusedError(111, "Connection refused")
        return "written"

    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = retry_call(call, what="insert into t", settings=settings, sleep=sleep, clock=lambda: now[0])
    assert result == "written"
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0] + [10.0] * 7
    assert messages(caplog, logging.INFO) == [
        "ClickHouse writes resumed after 13 attempts / 85.5 seconds: insert into t succeeded"
    ]
    assert (
        "attempt 12 (retrying until ClickHouse answers), next attempt in 10.000s"
        in messages(caplog, logging.WARNING)[-1]
    )


def test_a_finite_max_retries_gives_up_with_a_transient_error(settings: ClickHouseSettings) -> None:
    two = ClickHouseSettings(settings.dsn, max_retries=2, initial_backoff_s=0.001, max_backoff_s=0.001)
    sink, made = faulty_sink(two)
    part = sink.build_part("out", SINK_PARTITION, None)
    try:
        made[0].fail_next_inserts(3)
        with pytest.raises(ClickHouseSinkError, match=r"kpi_windows failed after 3 attempts \(2 retries") as info:
            part.write_batch([kpi(1)])
        assert info.value.transient
        assert "raise max_retries (None retries forever)" in str(info.value)
    finally:
        part.close()


def test_flow_survives_failed_writes_and_waits_for_them(
    settings: ClickHouseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """The first 3 write attempts fail: every row still lands once, and nothing is read meanwhile."""
    slow = ClickHouseSettings(settings.dsn, initial_backoff_s=0.02, max_backoff_s=0.05)
    sink, made = faulty_sink(slow)
    original_factory = sink.client_factory

    def failing_first(s: ClickHouseSettings) -> Any:
        client: Any = original_factory(s)
        client.fail_next_inserts(3)
        return client

    sink.client_factory = failing_first
    items: list[SinkRow] = [*(credit(i) for i in range(40)), *(kpi(i) for i in range(5)), dead_letter(0)]
    passed_at: list[float] = []

    def tap(row: SinkRow) -> tuple[str, SinkRow]:
        passed_at.append(time.monotonic())
        return key_for_sink(row)

    flow = Dataflow("clickhouse_outage_test")
    op.output("clickhouse", op.map("key", op.input("rows", flow, TestingSource(items, batch_size=6)), tap), sink)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        run_main(flow)

    client = made[0]
    assert len(client.failed_at) == 3
    outage = (client.failed_at[0], client.written_at[0])
    assert not [t for t in passed_at if outage[0] < t < outage[1]], "items moved while the sink was retrying"
    assert len(passed_at) == len(items)
    assert len(messages(caplog, logging.WARNING)) == 3
    assert [m for m in messages(caplog, logging.INFO) if m.startswith("ClickHouse writes resumed after 4 attempts")]
    with connect(settings.dsn) as c:
        assert {t: count(c, t) for t in ("attribution_credits", "kpi_windows", "dead_letters")} == {
            "attribution_credits": 40,
            "kpi_windows": 5,
            "dead_letters": 1,
        }


# --- a server that is down -------------------------------------------------------------


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: nothing listens there


def test_a_closed_port_is_connection_refused_transient_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    port = closed_loopback_port()
    settings = ClickHouseSettings(
        f"http://writer:s3cret@127.0.0.1:{port}/analytics", max_retries=3, initial_backoff_s=0.001, max_backoff_s=0.002
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(ClickHouseSinkError) as info:
            ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    error = info.value
    assert error.transient
    assert isinstance(error.__cause__, ClickHouseSinkError) and is_transient(error.__cause__)
    assert "failed after 4 attempts (3 retries" in str(error)
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 3
    for attempt, warning in enumerate(warnings, start=1):
        assert warning.startswith(f"connecting to ClickHouse at http://writer:***@127.0.0.1:{port}/analytics: ")
        assert f"attempt {attempt} of 4" in warning
        assert "Connection refused" in warning
    assert "s3cret" not in str(error) + "".join(warnings)


# --- terminal errors: raised at once, naming the fix -------------------------------------

AUTH_FAILED_BODY = (
    b"Code: 516. DB::Exception: writer: Authentication failed: password is incorrect, or there is no user with "
    b"such name. (AUTHENTICATION_FAILED) (version 25.8.1.1)\n"
)


class _RejectsPassword(BaseHTTPRequestHandler):
    """Answers every request as a ClickHouse server answers a wrong password."""

    requests = 0

    def _reject(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(403)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(AUTH_FAILED_BODY)))
        self.end_headers()
        self.wfile.write(AUTH_FAILED_BODY)

    do_GET = do_POST = _reject

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: no request lines on stderr
        pass


@pytest.fixture
def password_rejecting_server() -> Iterator[str]:
    _RejectsPassword.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RejectsPassword)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_authentication_failure_is_terminal_with_a_clear_message(
    password_rejecting_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ClickHouseSettings(f"http://writer:wrong@{password_rejecting_server}", initial_backoff_s=0.001)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(ClickHouseSinkError) as info:
            ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)  # max_retries=None: would loop
    message = str(info.value)
    assert not info.value.transient
    assert "AUTHENTICATION_FAILED" in message
    assert "check the user and password in the DSN" in message
    assert f"http://writer:***@{password_rejecting_server}" in message and "wrong@" not in message
    assert not messages(caplog, logging.WARNING), "an authentication failure must not be retried"
    assert _RejectsPassword.requests == 1


def test_authentication_failure_on_insert_is_terminal(settings: ClickHouseSettings) -> None:
    sink, made = faulty_sink(settings)
    part = sink.build_part("out", SINK_PARTITION, None)
    try:
        made[0].fail_next_inserts(
            1, lambda: DatabaseError("Code: 516. DB::Exception: (AUTHENTICATION_FAILED)", code=516)
        )
        with pytest.raises(ClickHouseSinkError, match="attribution_credits failed.*check the user and password"):
            part.write_batch([credit(0)])
        assert made[0].inserts == 0
    finally:
        part.close()


def test_a_migration_with_bad_sql_stops_the_flow_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy(PACKAGED_MIGRATIONS / "0001_init.sql", migrations)
    bad = migrations / "0002_add_note.sql"
    bad.write_text("ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS note Strnig;\n")
    settings = ClickHouseSettings(f"chdb://{tmp_path}/chdb", migrations_dir=migrations, initial_backoff_s=0.001)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        with pytest.raises(ClickHouseSinkError) as info:
            ClickHouseSink(settings).build_part("out", SINK_PARTITION, None)
    message = str(info.value)
    assert not info.value.transient
    assert f"migration 0002_add_note ({bad}) failed on statement 'ALTER TABLE dead_letters" in message
    assert "UNKNOWN_TYPE" in message
    assert f"fix or replace the file {bad}" in message
    assert not messages(caplog, logging.WARNING)

    flow = Dataflow("clickhouse_bad_migration")
    rows = op.map("key", op.input("rows", flow, TestingSource([credit(0)])), key_for_sink)
    op.output("clickhouse", rows, ClickHouseSink(settings))
    with pytest.raises(Exception) as stopped:  # the dataflow stops with the sink's error
        run_main(flow)
    chain: list[str] = []
    error: BaseException | None = stopped.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("0002_add_note" in text for text in chain), chain

    with connect(settings.dsn) as c:  # the good migration is recorded, the bad one is not
        assert c.query("SELECT version FROM schema_migrations").result_rows == [(1,)]
