"""Kill -9 harness: exactly-once effects of the whole system, proven on real processes.

It starts nothing itself but the flow: give it a Redis URL (tests pass their
own ``redis-server``; the soak entry point below starts one). Then it

1. generates a known event set (two tenants, a little deliberately bad input),
   split over two Redis streams by person, as a producer keyed by person would;
2. feeds the streams progressively from a thread while the flow runs;
3. runs ``creditflow run`` (recovery on, snapshots every second) as its own
   process group and SIGKILLs the whole group at a random moment — some during
   start-up, the others from before the first snapshot to well into the stream
   once the run is ready (timed from readiness, so a slow machine's start-up
   does not swallow them), so kills land between snapshots and during sink
   writes — then starts it again, with 1 or 2
   processes per a plan (so two processes also resume as one);
4. finally lets the flow drain the streams and exit, and
5. compares ClickHouse with a batch recount of the same events (the same flow
   run once in-process, without crashes): credits, conversions, KPI windows
   and dead letters — counts without FINAL, so a duplicate row is a failure.

    python -m loadtest.kill_harness --kills 50        # soak: its own redis-server, a report at the end
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from creditflow.native import PURE_ENV
from loadtest.redis_server import RedisProcess
from sources.generator import generate_partitioned_events, serialize_events

STREAMS = ("ev0", "ev1")


@dataclass(frozen=True)
class HarnessSettings:
    redis_url: str
    workdir: Path
    kills: int = 20
    process_plan: tuple[int, ...] = (1, 2, 2, 1)
    """Processes of run i: ``process_plan[i % len]`` (2 then 1 = two processes resumed as one)."""
    persons: int = 1500
    seed: int = 7
    alive_s: tuple[float, float] = (0.2, 4.0)
    """Each killed run lives a uniform random time in this range: after it is ready (its ClickHouse sink open),
    or, for a ``startup_kill_share`` of the runs, after it was started."""
    startup_kill_share: float = 0.25
    ready_timeout_s: float = 120.0
    """A run not ready this long after its start fails the harness (``early_exits``)."""
    snapshot_interval_s: int = 1
    pure_plan: tuple[bool, ...] = (False,)
    """Per run, cycled like ``process_plan``: whether it runs as plain Python (``CREDITFLOW_PURE=1``) rather
    than with the compiled modules (``creditflow.native``), so one recovery store is resumed across both."""
    feed_chunk: int = 50
    """Events published per stream per tick; ticks are paced so event time keeps up with the wall clock."""
    bad_fraction: float = 0.01
    rng_seed: int = 0
    final_timeout_s: float = 300.0
    redis_outages: int = 0
    """In this many of the killed runs, redis-server itself is SIGKILLed mid-run and restarted."""
    trim: bool = True
    """Trim the streams behind the resumable position every second while the runs go on."""
    outage_s: float = 2.0
    window_ms: int = 5000
    """KPI window length of the runs and of the recount."""
    allowed_lateness_ms: int = 2000
    """KPI lateness of the runs (the CLI default). Restarting two processes on a loaded 2-core
    machine can start one partition's replay seconds after the other's, so windows close before
    some of their events: those restate the window, and the check still expects exact totals."""


@dataclass
class HarnessReport:
    events: int = 0
    kills: int = 0
    alive_times_s: list[float] = field(default_factory=list)
    startup_kills: int = 0
    """Kills timed from the run's start (the others from its readiness)."""
    early_exits: list[str] = field(default_factory=list)
    expected_credit_rows: int = 0
    credit_rows: int = 0
    duplicate_credit_rows: int = 0
    duplicate_kpi_rows: int = 0
    duplicate_dead_letters: int = 0
    duplicate_conversions: int = 0
    redis_outages: int = 0
    restated_kpi_rows: int = 0
    restated_credit_rows: int = 0
    """Credit rows of a conversion's lower revisions (restated by late events)."""
    """KPI rows superseded by a later revision of their window (events that arrived after the window
    first closed, e.g. restart skew). The check compares each window's latest revision."""
    archived_journeys: int = 0
    duplicate_archived_journeys: int = 0
    """Journey ids found more than once in the Parquet archive (``sinks.parquet_archive``)."""
    stream_entries_left: int = 0
    """Entries still in the streams at the end: trimming ran while kills happened."""
    mismatches: list[str] = field(default_factory=list)
    compiled_processes: int = 0
    pure_processes: int = 0
    """Flow processes that logged running compiled (``creditflow.native``) or as plain Python."""

    @property
    def ok(self) -> bool:
        return not (
            self.mismatches
            or self.early_exits
            or self.duplicate_credit_rows
            or self.duplicate_kpi_rows
            or self.duplicate_dead_letters
            or self.duplicate_conversions
            or self.duplicate_archived_journeys
        )


def feed_seconds(s: HarnessSettings) -> float:
    """How long the feed lasts: most of the kill phase, so kills land mid-stream."""
    return 0.8 * s.kills * (s.alive_s[0] + s.alive_s[1]) / 2


def _payloads(s: HarnessSettings, start_ms: int) -> list[list[bytes]]:
    """Events whose event times span the feed, starting at ``start_ms``: as live traffic, not a replay."""
    days = feed_seconds(s) / 86_400
    parts = generate_partitioned_events(
        s.seed, s.persons, len(STREAMS), tenants=("acme", "globex"), start_ms=start_ms, days=days
    )
    return [list(serialize_events(part, bad_fraction=s.bad_fraction)) for part in parts]


def _publish(client: redis.Redis, stream: str, first: int, chunk: list[bytes]) -> None:
    """XADD with explicit ids (entry n gets id ``n+1-0``), so a retry after an outage adds nothing twice."""
    while True:
        try:
            pipe = client.pipeline(transaction=False)
            for n, payload in enumerate(chunk, start=first):
                pipe.xadd(stream, {"data": payload}, id=f"{n + 1}-0")
            for result in pipe.execute(raise_on_error=False):
                if isinstance(result, redis.ResponseError) and "equal or smaller" not in str(result):
                    raise result
            return
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.2)  # redis-server is down (an outage the harness made): try again


def _feed(client: redis.Redis, payloads: list[list[bytes]], s: HarnessSettings, done: threading.Event) -> None:
    cursors = [0] * len(payloads)
    ticks = max(len(p) for p in payloads) / s.feed_chunk
    pause = feed_seconds(s) / max(ticks, 1)
    while any(c < len(p) for c, p in zip(cursors, payloads, strict=True)):
        for i, (stream, items) in enumerate(zip(STREAMS, payloads, strict=True)):
            chunk = items[cursors[i] : cursors[i] + s.feed_chunk]
            if chunk:
                _publish(client, stream, cursors[i], chunk)
                cursors[i] += len(chunk)
        time.sleep(pause)
    done.set()


def _run_cmd(s: HarnessSettings, processes: int, drain: bool) -> list[str]:
    trim = "&trim_every_s=1" if s.trim else "&trim=0"
    source = f"{s.redis_url}?streams={','.join(STREAMS)}{trim}" + ("&stop_at_end=1" if drain else "")
    return [
        sys.executable, "-m", "creditflow.cli", "run", "--no-summary",
        "--source", source,
        "--processes", str(processes),
        "--snapshot-interval", str(s.snapshot_interval_s),
        "--clickhouse", f"chdb://{s.workdir / 'clickhouse'}",
        "--recovery-dir", str(s.workdir / "recovery"),
        "--data-dir", str(s.workdir),
        "--window-seconds", str(s.window_ms / 1000),
        "--allowed-lateness-ms", str(s.allowed_lateness_ms),
    ]  # fmt: skip


READY_LINE = re.compile(rb"ClickHouse sink \S+ starts in ")
"""Logged by the run's ClickHouse sink when it opens: the run is built and about to read."""


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, offset: int, timeout_s: float) -> bool:
    """Whether the run started when ``log`` was ``offset`` bytes long logged ``READY_LINE`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with log.open("rb") as f:
            f.seek(offset)
            if READY_LINE.search(f.read()):
                return True
        time.sleep(0.05)
    return False


def _start(s: HarnessSettings, run: int, drain: bool, log: Path) -> subprocess.Popen[bytes]:
    processes = s.process_plan[run % len(s.process_plan)]
    env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
    if _pure(s, run):
        env[PURE_ENV] = "1"
    with log.open("ab") as out:
        return subprocess.Popen(
            _run_cmd(s, processes, drain), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def _pure(s: HarnessSettings, run: int) -> bool:
    return s.pure_plan[run % len(s.pure_plan)]


def _mode(s: HarnessSettings, run: int) -> str:
    return "plain Python" if _pure(s, run) else "compiled if built"


def query(dsn: str, sql: str) -> list[list[Any]]:
    """Query ClickHouse from a child process (chDB lets one process hold a path at a time)."""
    code = (
        "import json,sys; from sinks.clickhouse_client import connect; c = connect(sys.argv[1]); "
        "print(json.dumps(c.query(sys.argv[2]).result_rows, default=str)); c.close()"
    )
    done = subprocess.run([sys.executable, "-c", code, dsn, sql], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"query failed: {sql}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def recount(payloads: list[list[bytes]], window_ms: int) -> dict[str, Any]:
    """The expected rows: the same flow over the same events, once, in-process, without crashes."""
    from bytewax.testing import TestingSink, TestingSource, run_main

    from creditflow.events import ConversionRow, CreditRow, DeadLetter, KpiRow, RawRecord, SourcePosition
    from flows.attribution import FlowSettings, build_flow
    from state.kpi_windows import WindowSettings

    records = [
        RawRecord(p, SourcePosition("redis", stream, str(i)))
        for stream, items in zip(STREAMS, payloads, strict=True)
        for i, p in enumerate(items)
    ]
    records.sort(key=lambda r: _ts_of(r.payload))
    out: list[Any] = []
    closed: list[Any] = []
    settings = FlowSettings(windows=WindowSettings(length_ms=window_ms))
    run_main(
        build_flow(TestingSource(records, batch_size=500), TestingSink(out), settings, archive=TestingSink(closed))
    )
    newest: dict[tuple[str, str], int] = {}  # a conversion's highest revision: its credit
    for r in out:
        if isinstance(r, ConversionRow):
            key = (r.tenant_id, r.conversion_id)
            newest[key] = max(newest.get(key, -1), r.revision)
    journeys: dict[str, Any] = {}
    for j in sorted(closed, key=lambda j: j.revision):
        journeys[j.journey_id] = (j.tenant_id, j.outcome, j.touch_channels, j.touch_ts_ms)
    return {
        "journeys": journeys,
        "credits": {
            (r.tenant_id, r.conversion_id, r.model, r.touch_event_id): round(r.credit, 9)
            for r in out
            if isinstance(r, CreditRow) and r.revision == newest[(r.tenant_id, r.conversion_id)]
        },
        "conversions": set(newest),
        "kpis": _latest_kpis(
            (
                r.tenant_id,
                r.window_start_ms,
                r.channel,
                r.campaign_id,
                r.events,
                _kpi_values(r.impressions, r.clicks, r.conversions, r.cost, r.revenue),
            )
            for r in out
            if isinstance(r, KpiRow)
        ),
        "dead": Counter(r.reason for r in out if isinstance(r, DeadLetter)),
    }


def _ts_of(payload: bytes) -> int:
    try:
        ts = orjson.loads(payload).get("timestamp")
        return ts if isinstance(ts, int) else 0
    except (orjson.JSONDecodeError, AttributeError):
        return 0


def _latest_kpis(rows: Iterable[tuple[str, int, str, str, int, tuple[Any, ...]]]) -> dict[tuple[Any, ...], Any]:
    """Per window (tenant, start, channel, campaign): the values of its revision with the most events."""
    best: dict[tuple[Any, ...], tuple[int, Any]] = {}
    for tenant, start, channel, campaign, events, values in rows:
        key = (tenant, start, channel, campaign)
        if key not in best or events > best[key][0]:
            best[key] = (events, values)
    return {key: values for key, (_, values) in best.items()}


def _kpi_values(imps: int, clicks: int, conv: float, cost: float, rev: float) -> tuple[int, int, float, float, float]:
    return int(imps), int(clicks), round(float(conv), 6), round(float(cost), 6), round(float(rev), 6)


def compare_archive(archive: Path, expected: dict[str, Any], report: HarnessReport) -> None:
    """The Parquet archive against the recount's closed journeys: each once, with the same path."""
    from sinks.archive_reader import read_archive

    every = read_archive(str(archive), latest=False)
    revisions = list(zip(every.column("journey_id").to_pylist(), every.column("revision").to_pylist(), strict=True))
    report.duplicate_archived_journeys = len(revisions) - len(set(revisions))
    table = read_archive(str(archive))  # each journey's highest revision
    ids = table.column("journey_id").to_pylist()
    report.archived_journeys = len(ids)
    got = {
        jid: (tenant, outcome, tuple(t["channel"] for t in touches), tuple(_ms(t["ts"]) for t in touches))
        for jid, tenant, outcome, touches in zip(
            ids, *(table.column(c).to_pylist() for c in ("tenant_id", "outcome", "touches")), strict=True
        )
    }
    if got != expected["journeys"]:
        report.mismatches.append(_keyed_mismatch("archive: ", "journeys missing", "with another path", got,
                                                 expected["journeys"]))  # fmt: skip


def _keyed_mismatch(label: str, missing_word: str, differ_word: str, got: dict[Any, Any], want: dict[Any, Any]) -> str:
    """How ``got`` differs from ``want`` (dicts by key), with a few example keys."""
    missing = want.keys() - got.keys()
    extra = got.keys() - want.keys()
    differ = [k for k in got.keys() & want.keys() if got[k] != want[k]]
    return (
        f"{label}{len(missing)} {missing_word}, {len(extra)} unexpected, {len(differ)} {differ_word} "
        f"(e.g. {sorted(missing)[:2]} {sorted(extra)[:2]} {differ[:2]})"
    )


def _ms(ts: Any) -> int:
    return int(ts.timestamp() * 1000)


def compare(dsn: str, expected: dict[str, Any], report: HarnessReport, window_ms: int) -> None:
    """Fill ``report`` with what ClickHouse holds against the recount (no FINAL anywhere)."""
    rows = query(dsn, "SELECT tenant_id, conversion_id, model, touch_event_id, credit FROM attribution_credits_latest")
    got = {(t, c, m, k): round(float(v), 9) for t, c, m, k, v in rows}
    report.credit_rows = len(rows)
    report.expected_credit_rows = len(expected["credits"])
    (stored,) = query(
        dsn,
        "SELECT count(), uniqExact(tenant_id, conversion_id, model, touch_event_id, revision), "
        "uniqExact(tenant_id, conversion_id, revision) FROM attribution_credits",
    )
    report.duplicate_credit_rows = int(stored[0]) - int(stored[1]) + len(rows) - len(got)
    report.restated_credit_rows = int(stored[0]) - len(rows)
    if got != expected["credits"]:
        report.mismatches.append(_keyed_mismatch("credits: ", "missing", "with other values", got, expected["credits"]))
    sums = query(
        dsn,
        "SELECT count() FROM (SELECT tenant_id, conversion_id, model, sum(credit) AS s FROM attribution_credits_latest "
        "GROUP BY tenant_id, conversion_id, model) WHERE abs(s - 1) > 1e-9",
    )
    if sums[0][0]:
        report.mismatches.append(f"credits: {sums[0][0]} conversion x model groups do not sum to 1")

    conv_rows = query(dsn, "SELECT tenant_id, conversion_id, revision FROM conversions")
    conversions = {(t, c) for t, c, _ in conv_rows}
    report.duplicate_conversions = len(conv_rows) - len({tuple(r) for r in conv_rows})
    if conversions != expected["conversions"]:
        report.mismatches.append(
            f"conversions: {len(expected['conversions'] - conversions)} missing, "
            f"{len(conversions - expected['conversions'])} unexpected"
        )

    kpi_rows = query(
        dsn,
        "SELECT tenant_id, toUnixTimestamp64Milli(window_start), channel, campaign_id, events, impressions, clicks, "
        "conversions, cost, revenue FROM kpi_windows",
    )
    report.duplicate_kpi_rows = len(kpi_rows) - len({tuple(r[:5]) for r in kpi_rows})
    kpis = _latest_kpis((t, int(w), ch, c, int(n), _kpi_values(*vals)) for t, w, ch, c, n, *vals in kpi_rows)
    report.restated_kpi_rows = len(kpi_rows) - len(kpis)
    if kpis != expected["kpis"]:
        differ = [k for k in kpis.keys() & expected["kpis"].keys() if kpis[k] != expected["kpis"][k]]
        report.mismatches.append(
            f"kpi_windows: {len(expected['kpis'].keys() - kpis.keys())} missing, "
            f"{len(kpis.keys() - expected['kpis'].keys())} unexpected, {len(differ)} with other values "
            f"(e.g. {[(k, kpis[k], expected['kpis'][k]) for k in differ[:2]]})"
        )

    dead = query(
        dsn,
        "SELECT reason, count(), uniqExact(source, `partition`, `position`, reason) FROM dead_letters GROUP BY reason",
    )
    report.duplicate_dead_letters = sum(n - u for _, n, u in dead)
    got_dead = Counter({r: u for r, _, u in dead})
    if got_dead != expected["dead"]:
        report.mismatches.append(f"dead_letters by reason: {dict(got_dead)} != recount {dict(expected['dead'])}")


def run_harness(
    s: HarnessSettings, say: Callable[[str], None] = print, redis_server: RedisProcess | None = None
) -> HarnessReport:
    """Feed, kill, restart, drain, compare. Bounded: ``kills`` runs plus one drain run.

    With ``redis_server`` (started with ``persist=True``) and ``s.redis_outages``,
    the first runs also see redis-server SIGKILLed and restarted mid-run.
    """
    s.workdir.mkdir(parents=True, exist_ok=True)
    log = s.workdir / "flow.log"
    payloads = _payloads(s, start_ms=int(time.time() * 1000))
    report = HarnessReport(events=sum(map(len, payloads)))
    say(f"harness: {report.events} events over {len(STREAMS)} streams, {s.kills} kills planned")
    expected = recount(payloads, s.window_ms)

    client = redis.Redis.from_url(s.redis_url)
    client.delete(*STREAMS)
    fed = threading.Event()
    feeder = threading.Thread(target=_feed, args=(client, payloads, s, fed), daemon=True)
    feeder.start()
    rng = random.Random(s.rng_seed)
    try:
        for i in range(s.kills):
            procs = s.process_plan[i % len(s.process_plan)]
            alive = rng.uniform(*s.alive_s)
            in_startup = rng.random() < s.startup_kill_share
            offset = log.stat().st_size if log.exists() else 0
            proc = _start(s, i, drain=False, log=log)
            if not in_startup and not _wait_ready(proc, log, offset, s.ready_timeout_s) and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                report.early_exits.append(f"run {i} ({procs} processes) was not ready within {s.ready_timeout_s} s")
                continue
            if redis_server is not None and i < s.redis_outages:
                time.sleep(alive / 2)
                redis_server.kill()
                say(f"  redis-server killed during run {i + 1}; restarting in {s.outage_s:.1f} s")
                time.sleep(s.outage_s)
                redis_server.start()
                report.redis_outages += 1
                time.sleep(alive / 2)
            else:
                time.sleep(alive)
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2500:]
                report.early_exits.append(
                    f"run {i} ({procs} processes) exited with {proc.returncode} before its kill; log tail:\n{tail}"
                )
            else:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                report.kills += 1
                report.alive_times_s.append(round(alive, 2))
                report.startup_kills += in_startup
            moment = "after start, in start-up" if in_startup else "after ready"
            say(f"  kill {i + 1}/{s.kills}: {procs} process(es), {_mode(s, i)}, {alive:.2f} s {moment}")
        fed.wait(timeout=120)
        procs = s.process_plan[s.kills % len(s.process_plan)]
        say(f"  drain run: {procs} process(es), {_mode(s, s.kills)}")
        final = _start(s, s.kills, drain=True, log=log)
        try:
            code = final.wait(timeout=s.final_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(final.pid, signal.SIGKILL)
            code = -1
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            report.mismatches.append(f"drain run exited with {code}; log tail:\n{tail}")
            return report
        report.stream_entries_left = sum(int(client.xlen(stream)) for stream in STREAMS)
        text = log.read_text(errors="replace")
        report.compiled_processes, report.pure_processes = text.count(" runs compiled: "), text.count(" runs as plain")
    finally:
        client.close()
    compare(f"chdb://{s.workdir / 'clickhouse'}", expected, report, s.window_ms)
    compare_archive(s.workdir / "archive", expected, report)
    return report


def main() -> None:
    from loadtest.redis_server import start_on_free_port

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--persons", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rng-seed", type=int, default=int(time.time()))
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="creditflow-soak-"))
    server = start_on_free_port(work / "redis")
    try:
        report = run_harness(
            HarnessSettings(
                redis_url=server.url,
                workdir=work / "flow",
                kills=args.kills,
                persons=args.persons,
                seed=args.seed,
                rng_seed=args.rng_seed,
            )
        )
    finally:
        server.stop()
    summary = {k: v for k, v in report.__dict__.items() if k != "alive_times_s"}
    summary["alive_s_min_median_max"] = (
        [
            min(report.alive_times_s),
            sorted(report.alive_times_s)[len(report.alive_times_s) // 2],
            max(report.alive_times_s),
        ]
        if report.alive_times_s
        else []
    )
    summary["ok"] = report.ok
    print(json.dumps(summary, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
