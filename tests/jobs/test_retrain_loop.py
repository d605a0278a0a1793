"""The whole loop with real processes: flow -> Parquet archive -> Ray retrain -> Redis -> the running flow.

A real redis-server, the flow as `creditflow run` processes into embedded chDB,
a local Ray started and stopped by the retrain. Conversions sent after a publish
(or a rollback) carry that version on their data-driven credit rows, and
``model_weights`` in ClickHouse lists every publish and the rollback.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from tests_support import query

from creditflow.config import DAY_MS
from creditflow.weights_store import current_version, rollback
from jobs.retrain import RetrainSettings, retrain
from jobs.synthetic import SyntheticWorld, generate
from jobs.train import MethodResult, path_credit
from sinks.archive_reader import read_archive
from sources.redis_streams import publish

pytestmark = pytest.mark.integration

TENANT = "acme"
STREAM = "ev"


def journey_events(prefix: str, persons: int, seed: int, end_ms: int) -> list[dict]:
    """Synthetic journeys (known effects, the high-intent confounder) as click and conversion events.

    A person who does not convert comes back as a direct visit 22 days later: with the tenant's
    21-day idle TTL (longer than any gap within a journey) that closes the journey unconverted,
    so the archive holds both outcomes.
    """
    rng = random.Random(seed)
    events: list[dict] = []
    for i, j in enumerate(generate(SyntheticWorld(), persons=persons, seed=seed)):
        person = f"{prefix}-{i}"
        end = end_ms - rng.randrange(0, 3 * 3_600_000)
        base = {"tenant_id": TENANT, "user_id": person}
        for k, (channel, age) in enumerate(j.touches):
            ts = end - int(age * DAY_MS) - 1000 + k  # strictly before the journey's end, in touch order
            events.append({**base, "event_id": f"{person}-t{k}", "event_type": "click", "timestamp": ts,
                           "channel": channel})  # fmt: skip
        if j.converted:
            events.append({**base, "event_id": f"{person}-c", "event_type": "conversion", "timestamp": end,
                           "conversion": {"conversion_id": f"{person}-o", "value": 50.0}})  # fmt: skip
        else:
            events.append({**base, "event_id": f"{person}-back", "event_type": "page_view",
                           "timestamp": end + 22 * DAY_MS, "channel": "direct"})  # fmt: skip
    return events


def conversions_of(events: list[dict]) -> set[str]:
    return {e["conversion"]["conversion_id"] for e in events if e["event_type"] == "conversion"}


def flow_cmd(redis_url: str, tmp: Path, *, ends: bool) -> list[str]:
    source = f"{redis_url}?streams={STREAM}" + ("&stop_at_end=1" if ends else "")
    return [sys.executable, "-m", "creditflow.cli", "run", "--no-summary", "--source", source,
            "--data-dir", str(tmp), "--clickhouse", f"chdb://{tmp / 'ch'}", "--tenants", str(tmp / "tenants.json"),
            "--snapshot-interval", "1", "--archive-flush-s", "0.5"]  # fmt: skip


def test_archive_retrain_publish_and_hot_swap_into_a_running_flow(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "tenants.json").write_text(json.dumps({"defaults": {"idle_ttl_days": 21}}))
    client = redis.Redis.from_url(redis_url)
    end_ms = int(time.time() * 1000) - 23 * DAY_MS  # the "come back" visits stay in the past

    # 1. history: a finite run archives every closed journey (converted and expired)
    history = journey_events("h", 20_000, seed=1, end_ms=end_ms)
    publish(client, STREAM, history)
    done = subprocess.run(flow_cmd(redis_url, tmp_path, ends=True), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    archived = read_archive(str(tmp_path / "archive"), TENANT)
    outcomes = archived.column("outcome").to_pylist()
    assert outcomes.count("converted") == len(conversions_of(history))
    touched = {e["user_id"] for e in history if e["event_type"] == "click"}
    came_back = {e["user_id"] for e in history if e["event_id"].endswith("-back")}
    assert outcomes.count("expired") == len(came_back & touched)  # a person never touched had no journey
    assert len(set(archived.column("journey_id").to_pylist())) == archived.num_rows  # the latest revision of each
    every = read_archive(str(tmp_path / "archive"), TENANT, latest=False)  # a restated conversion: a row per revision
    revisions = list(zip(every.column("journey_id").to_pylist(), every.column("revision").to_pylist(), strict=True))
    assert len(set(revisions)) == len(revisions)  # each once

    # 2. retrain in a local Ray it starts and stops; the chosen weights become v1
    (report,) = retrain(RetrainSettings(str(tmp_path / "archive"), redis_url, seed=7))
    assert (report.tenant_id, report.status, report.version) == (TENANT, "published", 1), report
    assert report.chosen == "incrementality"  # the confounder-robust model wins on held-out log loss
    assert report.weights["direct"] < 0.25 * max(report.weights.values())  # direct has no true effect
    assert current_version(client, TENANT) == 1

    # 3. the live flow (resumed) scores with whatever version is current when a conversion arrives
    live = subprocess.Popen(flow_cmd(redis_url, tmp_path, ends=False), stderr=subprocess.PIPE, text=True)
    try:
        batches: dict[str, list[dict]] = {}

        def send(name: str) -> None:
            batches[name] = journey_events(name, 60, seed=len(batches) + 10, end_ms=end_ms)
            publish(client, STREAM, batches[name])
            time.sleep(4)  # read, scored, written (write-behind 0.1 s, snapshots every 1 s)

        time.sleep(3)
        send("b")  # scored with v1
        (again,) = retrain(RetrainSettings(str(tmp_path / "archive"), redis_url, seed=7))
        assert again.version == 2
        time.sleep(1.0)  # the bound: a published version is in use within 1 s
        send("c")  # v2
        rollback(client, TENANT, 1)
        time.sleep(1.0)
        send("d")  # v1 again
        assert live.poll() is None
    finally:
        live.send_signal(signal.SIGTERM)
        _, err = live.communicate(timeout=30)
    assert live.returncode == 128 + signal.SIGTERM, err[-3000:]
    # whatever the stop left unwritten is written by a resumed finite run (nothing new arrives meanwhile)
    done = subprocess.run(flow_cmd(redis_url, tmp_path, ends=True), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    dsn = f"chdb://{tmp_path / 'ch'}"
    rows = query(dsn, "SELECT conversion_id, any(model_version), count(DISTINCT model_version), sum(credit) "
                      "FROM attribution_credits FINAL WHERE model = 'data_driven' GROUP BY conversion_id")  # fmt: skip
    version = {c: v for c, v, n, total in rows if n == 1 and abs(total - 1.0) < 1e-9}
    assert len(version) == len(rows)
    expected = {"h": 0, "b": 1, "c": 2, "d": 1}
    for name, evs in [("h", history), *batches.items()]:
        got = {version.get(c) for c in conversions_of(evs)}
        assert got == {expected[name]}, (name, got)

    weights_rows = query(dsn, "SELECT version, action, method FROM model_weights FINAL ORDER BY published_at")
    assert [(v, a) for v, a, _ in weights_rows] == [(1, "publish"), (2, "publish"), (1, "rollback")]

    # the online credit of each v2 conversion is the trained rule applied to its path
    (w2,) = query(dsn, "SELECT channel_weights, half_life_days, split FROM model_weights FINAL WHERE version = 2")
    rule = MethodResult("v2", dict(w2[0]), w2[1], w2[2], {}, {})
    paths = query(dsn, "SELECT conversion_id, groupArray((channel, toUnixTimestamp64Milli(conversion_ts) "
                       "- toUnixTimestamp64Milli(touch_ts), credit)) FROM attribution_credits FINAL "
                       f"WHERE model = 'data_driven' AND conversion_id IN {sorted(conversions_of(batches['c']))} "
                       "AND channel != '(unattributed)' GROUP BY conversion_id")  # fmt: skip
    assert len(paths) >= 3
    for conv, touches in paths:
        path = [(ch, int(age) / DAY_MS) for ch, age, _ in touches]
        assert [c for *_, c in touches] == pytest.approx(path_credit(rule, path)), conv
