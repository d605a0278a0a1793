"""`creditflow run` on Redis Streams (a real redis-server), two streams as partitions, into chDB."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from tests_support import alive, descendants, query

from sources.generator import generate_events
from sources.redis_streams import publish

pytestmark = pytest.mark.integration


def test_run_on_two_redis_streams_credits_every_generated_conversion(redis_url: str, tmp_path: Path) -> None:
    events = list(generate_events(seed=3, n_persons=150, tenants=("acme", "globex")))
    client = redis.Redis.from_url(redis_url)
    # partition by person, as a producer keyed by person would
    for ev in events:
        stream = "ev0" if hash(ev.get("anonymous_id", ev["event_id"])) % 2 == 0 else "ev1"
        publish(client, stream, [ev])
    conversions = {
        (e["tenant_id"], e["conversion"]["conversion_id"]) for e in events if e["event_type"] == "conversion"
    }
    assert conversions

    dsn = f"chdb://{tmp_path / 'ch'}"
    done = subprocess.run(
        [sys.executable, "-m", "creditflow.cli", "run", "--no-summary", "--clickhouse", dsn,
         "--source", f"{redis_url}?streams=ev0,ev1&stop_at_end=1", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    credited = query(dsn, "SELECT tenant_id, conversion_id, model, sum(credit) FROM attribution_credits_latest "
                          "GROUP BY tenant_id, conversion_id, model")  # fmt: skip
    assert {(t, c) for t, c, _, _ in credited} == conversions
    assert all(abs(total - 1.0) < 1e-9 for *_, total in credited)
    assert len(credited) == len(conversions) * 6
    positions = query(dsn, "SELECT DISTINCT partition FROM dead_letters")
    assert all(p[0] in ("ev0", "ev1") for p in positions)


@pytest.mark.parametrize(("signum", "processes"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_a_stop_signal_ends_a_live_run_at_once_and_the_next_run_loses_nothing(
    redis_url: str, tmp_path: Path, signum: signal.Signals, processes: int
) -> None:
    events = list(generate_events(seed=4, n_persons=120, tenants=("acme",)))
    client = redis.Redis.from_url(redis_url)
    for ev in events:  # two streams, a person's events in one (as a producer keyed by person writes them)
        publish(client, "live" if hash(ev.get("anonymous_id", ev["event_id"])) % 2 == 0 else "live2", [ev])
    dsn = f"chdb://{tmp_path / 'ch'}"
    cmd = [sys.executable, "-m", "creditflow.cli", "run", "--no-summary", "--clickhouse", dsn,
           "--data-dir", str(tmp_path), "--snapshot-interval", "1", "--processes", str(processes)]  # fmt: skip
    live = subprocess.Popen([*cmd, "--source", f"{redis_url}?streams=live,live2"], stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # reading, then waiting for more: a live source never ends by itself
    assert live.poll() is None
    flow_processes = descendants(live.pid) if processes > 1 else set()
    assert len(flow_processes) == (processes if processes > 1 else 0)
    live.send_signal(signum)
    _, err = live.communicate(timeout=30)
    assert live.returncode == 128 + signum, err[-2000:]
    assert f"stopping on {signum.name}" in err and "nothing is lost" in err
    # A cluster's launcher passes the signal on: none of its flow processes runs on, orphaned.
    assert not [pid for pid in flow_processes if alive(pid)]

    done = subprocess.run([*cmd, "--source", f"{redis_url}?streams=live,live2&stop_at_end=1"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    conversions = {e["conversion"]["conversion_id"] for e in events if e["event_type"] == "conversion"}
    rows = query(dsn, "SELECT conversion_id, count() FROM conversions_latest GROUP BY conversion_id")
    assert {c for c, _ in rows} == conversions and all(n == 1 for _, n in rows)
