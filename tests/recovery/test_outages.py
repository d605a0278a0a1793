"""redis-server crashes mid-run: the flow retries, resumes on its own and loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.kill_harness import HarnessSettings, run_harness
from loadtest.redis_server import RedisNotInstalled, start_on_free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_redis_outages_during_runs_lose_nothing(tmp_path: Path) -> None:
    try:
        server = start_on_free_port(tmp_path / "redis", persist=True)
    except RedisNotInstalled as exc:
        pytest.skip(str(exc))
    try:
        settings = HarnessSettings(
            redis_url=server.url,
            workdir=tmp_path / "flow",
            kills=4,
            redis_outages=3,
            alive_s=(5.0, 7.0),
            process_plan=(1, 2),
            persons=400,
            rng_seed=7,
            trim=True,  # every second: an XTRIM during an outage fails, is logged and retried
        )
        report = run_harness(settings, say=print, redis_server=server)
    finally:
        server.stop()
    assert report.redis_outages == 3
    assert report.early_exits == [], "a Redis outage must not stop the flow"
    assert report.mismatches == []
    assert report.duplicate_credit_rows == report.duplicate_kpi_rows == report.duplicate_dead_letters == 0
    assert report.stream_entries_left < report.events / 2, "streams were trimmed, outages notwithstanding"
    log = (tmp_path / "flow" / "flow.log").read_text()
    assert "creditflow.sources.redis" in log and "WARNING" in log  # the outage was logged, with its retries
