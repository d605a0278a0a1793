"""The load test of issue 4: its pure parts, and a short smoke run on real processes.

The smoke run (``integration``) publishes 500 events/s for 4 s into its own
redis-server, runs the flow as a real process into a fresh embedded
ClickHouse and checks that the report is complete and sane; the full test is
``creditflow loadtest --rate 10000 --duration 60``.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from tests_support import alive, descendants

from loadtest.load_report import RunRecord, lag, steady_window, throughput
from loadtest.measure import latency_summary, parse_progress, per_second, percentile, time_of_count
from loadtest.publisher import due, due_time
from loadtest.redis_load import LoadSettings, run_load
from loadtest.traffic import TS_MARK, TrafficSettings, device_partition, schedule, stamp, zipf_shares


def _events(items: list) -> list[tuple[int, dict]]:
    out = []
    for item in items:
        try:
            ev = orjson.loads(stamp(item.template, 1_767_225_600_000))
        except orjson.JSONDecodeError:
            continue  # a deliberately truncated record
        out.append((item.partition, ev))
    return out


@pytest.fixture(scope="module")
def traffic() -> list:
    return list(schedule(TrafficSettings(events=6000, rate=1000, partitions=4, journey_s=5, bad_fraction=0.01)))


# ---------------------------------------------------------------------- percentiles


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0], 50, 3.0),
        ([3.0], 99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.01),
        ([float(i) for i in range(1, 101)], 95, 95.05),
        ([0.0, 10.0], 95, 9.5),
    ],
)
def test_percentile_matches_linear_interpolation(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error_and_the_summary_says_none() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    assert latency_summary([])["p99"] is None
    summary = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert summary["n"] == 4 and summary["p50"] == pytest.approx(0.25) and summary["max"] == 0.4


def test_per_second_groups_by_whole_second() -> None:
    rows = per_second([(0.1, 1.0), (0.9, 2.0), (1.0, 5.0), (3.5, 7.0)])
    assert [(r["t"], r["n"]) for r in rows] == [(0, 2), (1, 1), (3, 1)]
    assert rows[0]["p50"] == pytest.approx(1.5)


def test_time_of_count_interpolates_and_knows_when_a_count_was_never_reached() -> None:
    samples = [(10.0, 0), (11.0, 1000), (12.0, 1000), (13.0, 3000)]
    assert time_of_count(samples, 500) == pytest.approx(10.5)
    assert time_of_count(samples, 1000) == pytest.approx(11.0)
    assert time_of_count(samples, 2000) == pytest.approx(12.5)
    assert time_of_count(samples, 3001) is None


# ---------------------------------------------------------------------- the uniform-rate schedule


def test_due_counts_grow_uniformly_with_time() -> None:
    rate = 10_000.0
    counts = [due(rate, t / 10, 10**9) for t in range(0, 101)]
    steps = {b - a for a, b in zip(counts, counts[1:], strict=False)}
    assert steps == {1000}  # 1,000 more events every 0.1 s, no bunching
    assert due(rate, -1.0, 100) == 0
    assert due(rate, 60.0, 600_000) == 600_000  # never more than asked
    assert all(due(rate, due_time(rate, i), 10**9) == i + 1 for i in (0, 1, 999, 123_456))


def test_schedule_yields_exactly_the_events_asked_in_virtual_time_order(traffic: list) -> None:
    assert len(traffic) == 6000
    vs = [item.v for item in traffic]
    assert vs == sorted(vs) and vs[0] >= 0
    assert vs[-1] == pytest.approx(6.0, abs=1.5)  # cohorts sized for the rate: virtual time ~ wall time
    assert sum(TS_MARK in item.template for item in traffic) > 0.99 * len(traffic)
    stamped = [ev for _, ev in _events(traffic) if isinstance(ev.get("timestamp"), int)]
    assert stamped and all(ev["timestamp"] == 1_767_225_600_000 for ev in stamped)


def test_the_mix_is_the_same_at_the_start_as_later(traffic: list) -> None:
    """Journeys started before the run: conversions from the first second on, at a steady share."""
    halves = [Counter(ev["event_type"] for _, ev in _events(part)) for part in (traffic[:3000], traffic[3000:])]
    for counts in halves:
        share = counts["conversion"] / sum(counts.values())
        assert 0.04 < share < 0.14, counts
    assert set(halves[0]) >= {"impression", "click", "page_view", "conversion", "identify", "ad_spend"}


def test_conversion_ids_are_unique_across_cohorts(traffic: list) -> None:
    ids = [
        ev["conversion"]["conversion_id"]
        for _, ev in _events(traffic)
        if ev.get("event_type") == "conversion" and not ev["event_id"].endswith("-bad")
    ]
    assert len(ids) > 100 and len(ids) == len(set(ids))


def test_page_views_carry_utms_or_referrers_and_clicks_utms(traffic: list) -> None:
    clicks = [ev for _, ev in _events(traffic) if ev.get("event_type") == "click"]
    assert sum(1 for ev in clicks if "utm" in ev) > 0.5 * len(clicks)


# ---------------------------------------------------------------------- tenants and partitions


def test_tenants_are_skewed_like_zipf(traffic: list) -> None:
    persons_by_tenant: dict[str, set[str]] = defaultdict(set)
    for _, ev in _events(traffic):
        if ev.get("anonymous_id") and "tenant_id" in ev:
            persons_by_tenant[ev["tenant_id"]].add(ev["anonymous_id"])
    total = sum(map(len, persons_by_tenant.values()))
    shares = [len(persons_by_tenant[t]) / total for t in ("acme", "globex", "initech", "umbrella")]
    assert shares == sorted(shares, reverse=True)
    for got, want in zip(shares, zipf_shares(4), strict=True):
        assert got == pytest.approx(want, abs=0.05)


def test_each_event_goes_to_its_devices_partition(traffic: list) -> None:
    """By default an event's stream is its device's (``partition_of``): the flow's process holding its state."""
    partitions_of: dict[tuple[str, str], set[int]] = defaultdict(set)
    for partition, ev in _events(traffic):
        if ev.get("event_type") == "ad_spend" or not isinstance(ev.get("tenant_id"), str):
            continue  # ad spend goes by campaign; a broken copy goes with its original
        assert partition == device_partition(ev, 4)
        device = ev.get("device_id") or ev.get("anonymous_id") or ev["user_id"]
        partitions_of[(ev["tenant_id"], device)].add(partition)
    assert len(partitions_of) > 500
    assert all(len(parts) == 1 for parts in partitions_of.values())
    assert len({p for parts in partitions_of.values() for p in parts}) == 4  # and every stream gets traffic


def test_by_person_a_person_always_goes_to_the_same_partition() -> None:
    by_person = schedule(
        TrafficSettings(events=6000, rate=1000, partitions=4, journey_s=5, bad_fraction=0.01, partition_by="person")
    )
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for partition, ev in _events(list(by_person)):
        for field in ("anonymous_id", "user_id", "device_id"):
            if ev.get(field):
                partitions_of[ev[field]].add(partition)
    assert len(partitions_of) > 500
    assert all(len(parts) == 1 for parts in partitions_of.values())
    assert len({p for parts in partitions_of.values() for p in parts}) == 4


# ---------------------------------------------------------------------- progress lines and run figures


def test_progress_lines_of_one_process_and_of_a_cluster_are_parsed() -> None:
    one = parse_progress(
        "2026-11-22 20:28:39,212 creditflow.progress INFO 1200 events decoded (600/s), 3 dead letters {'x': 3}"
    )
    assert one is not None and (one.process, one.events, one.dead, one.final) == ("p0", 1200, 3, False)
    two = parse_progress(
        "2026-11-22 20:28:39,212 p1 creditflow.progress INFO run totals: 5 events decoded in 2.0 s, 0 dead letters {}"
    )
    assert two is not None and (two.process, two.events, two.final) == ("p1", 5, True)
    assert parse_progress("2026-11-22 20:28:39,212 creditflow.run INFO created recovery store") is None


def _record(mode: str = "rate") -> RunRecord:
    r = RunRecord(processes=1, mode=mode, rate=1000.0, warmup_s=2.0, lateness_ms=2000, t0=100.0, t_end=110.0)
    r.published_total = 10_000
    r.pub_samples = [(100.0 + i, 1000 * i) for i in range(11)]
    r.progress_samples = [(100.5 + i, 1000 * i) for i in range(11)]  # read 0.5 s behind
    r.monitor = [
        {"t": 100.0 + i + 0.75, "published": 1000 * i + 750, "processed": 1000 * i + 250, "rss_kib": {}, "cpu_s": {}}
        for i in range(10)
    ]
    return r


def test_throughput_and_lag_of_a_flow_that_keeps_up_half_a_second_behind() -> None:
    r = _record()
    assert steady_window(r) == (102.0, 110.0)
    assert throughput(r)["sustained_events_per_s"] == pytest.approx(1000.0)
    figures = lag(r)
    assert figures["max_events"] == 500
    assert all(p["s"] == pytest.approx(0.5, abs=0.01) for p in figures["timeline"])
    assert figures["growth_s_per_s"] == pytest.approx(0.0, abs=1e-6)


def test_max_mode_judges_the_middle_of_the_drain() -> None:
    r = _record("max")
    lo, hi = steady_window(r)
    assert (lo, hi) == (pytest.approx(101.5), pytest.approx(109.5))


# ---------------------------------------------------------------------- the smoke run


@pytest.mark.integration
@pytest.mark.slow
def test_a_short_load_run_produces_a_sane_report(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH; install it (apt-get install redis-server, or run ./dev setup)")
    settings = LoadSettings(
        rate=500,
        duration_s=4,
        warmup_s=1,
        journey_s=5,
        window_s=1.0,
        lateness_ms=500,
        grace_s=1.5,
        drain_timeout_s=60,
        repeat=2,
        out=tmp_path / "load",
    )
    report_path = run_load(settings, argv=["test"])
    report = json.loads(report_path.read_text())
    run, second = report["runs"]  # --repeat 2: the same load twice, each on a fresh Redis, ClickHouse and store
    assert (run["repeat"], second["repeat"]) == (1, 2)
    assert (tmp_path / "load" / "run-p1-1").is_dir() and (tmp_path / "load" / "run-p1-2").is_dir()
    assert second["counts"]["published"] == run["counts"]["published"]
    repeated = report["repeatability"]["1"]
    assert repeated["runs"] == 2 and 0 <= repeated["met_every_target"] <= 2
    sustained = sorted(r["throughput"]["sustained_events_per_s"] for r in report["runs"])
    assert repeated["median_sustained_events_per_s"] == pytest.approx(sum(sustained) / 2, abs=0.01)
    assert repeated["median_worker_cpu_us_per_event"] > 0
    counts = run["counts"]
    assert counts["published"] == 2001  # the schedule plus the primer record
    assert counts["read_by_flow"] == counts["published"]
    assert counts["events_decoded"] + counts["decoder_dead_letters"] == counts["published"]
    assert counts["decoder_dead_letters"] >= 1  # the primer, at least
    assert counts["clickhouse_rows"]["dead_letters"] >= counts["decoder_dead_letters"]
    assert run["throughput"]["sustained_events_per_s"] > 0
    assert run["throughput"]["sustained_events_per_s"] == pytest.approx(500, rel=0.25)
    for name in ("conversion_to_credit_s", "window_close_to_kpi_s"):
        figures = run["latency"][name]
        assert figures["n"] > 0, name
        assert 0 < figures["p50"] <= figures["p99"] < 30, (name, figures)
    assert run["latency"]["conversion_to_credit_s"]["no_commit_row"] == 0
    state = run["state"]
    assert state["keys"] > 100 and state["bytes_per_person"] > 0
    # active persons: every journey key, plus the anonymous devices (linked to no user)
    assert (
        state["keys"]
        < state["active_persons"]
        <= state["keys"] + state["all_steps"]["creditflow.identity.device"]["keys"]
    )
    assert state["bytes_per_active_person"] >= state["bytes_per_person_all_steps"] > 0
    # as stored (a shard's keys pickled together, keys included) it differs from per key alone, not wildly
    assert 0.5 < state["stored_bytes_per_active_person"] / state["bytes_per_active_person"] < 1.5
    assert sum(step["stored_bytes"] for step in state["all_steps"].values()) == state["stored_bytes"]
    assert run["resources"]["peak_rss_mib"]["p0"] > 50
    worker = run["resources"]["worker_thread_steady"]["p0"]  # the flow's worker thread, from /proc schedstat
    assert 0 < worker["running"] < 1.05 and worker["waiting_for_core"] >= 0 and 0 <= worker["blocked"] < 1
    assert report["machine"]["cores"] >= 1 and report["traffic"]["events"] == 2000
    assert 0 < report["machine"]["python_loop_s"] < 60  # the calibration that makes machines comparable
    assert set(report["targets"]) >= {"throughput_10k_sustained", "p99_conversion_to_credit_le_1s", "lag_not_growing"}
    png = report_path.with_name("report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isfinite(run["lag"]["max_s"])


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_stops_the_load_test_with_its_flow_publisher_and_redis(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH; install it (apt-get install redis-server, or run ./dev setup)")
    cmd = [sys.executable, "-m", "loadtest.redis_load", "--rate", "300", "--duration", "120", "--journey-seconds", "5",
           "--out", str(tmp_path / "load")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    started: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        started = descendants(proc.pid)
        names = " ".join(Path(f"/proc/{p}/cmdline").read_text() for p in started if alive(p))
        if "loadtest.publisher" in names and "redis-server" in names and "creditflow.cli" in names:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"the load test did not start its flow, publisher and redis-server: {proc.communicate()}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped on SIGTERM" in err
    time.sleep(1)
    assert not [p for p in started if alive(p)], "no process of the load test runs on, orphaned"


def test_gather_ms_reaches_the_flows_source_and_is_left_to_the_source_by_default(tmp_path: Path) -> None:
    from loadtest.redis_load import _flow_cmd

    def source_of(settings: LoadSettings) -> str:
        cmd = _flow_cmd(settings, "redis://127.0.0.1:1/0", tmp_path, 1)
        return cmd[cmd.index("--source") + 1]

    assert "gather_ms" not in source_of(LoadSettings(rate=100, duration_s=1))
    assert source_of(LoadSettings(rate=100, duration_s=1, gather_ms=0)).endswith("&gather_ms=0")
