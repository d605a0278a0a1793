"""The load test's publisher: every scheduled event reaches its partition's stream, in order, stamped."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import redis

from loadtest.publisher import DATA_FIELD, PublisherSettings, publish
from loadtest.traffic import TS_MARK, TrafficSettings, read_schedule, write_schedule

STREAMS = ("lt0", "lt1", "lt2")
STAMPED = re.compile(rb'"timestamp":(\d{13})')


def _publish(redis_url: str, tmp_path: Path, events: int, rate: float, pipeline: int) -> tuple[list, dict]:
    path = tmp_path / "run.traffic"
    write_schedule(TrafficSettings(events=events, rate=2_000.0, partitions=len(STREAMS)), path)
    out = io.StringIO()
    done = publish(PublisherSettings(redis_url, path, STREAMS, events, rate=rate, pipeline=pipeline), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "started" and lines[-1] == {"event": "done", **done}
    return list(read_schedule(path))[:events], done


def _payloads(redis_url: str) -> dict[str, list[bytes]]:
    client = redis.Redis.from_url(redis_url)
    try:
        return {s: [fields[DATA_FIELD] for _, fields in client.xrange(s)] for s in STREAMS}
    finally:
        client.close()


def _template(payload: bytes) -> bytes:
    return STAMPED.sub(TS_MARK, payload, count=1)


def test_as_fast_as_possible_every_event_lands_on_its_partition_in_order(redis_url: str, tmp_path: Path) -> None:
    scheduled, done = _publish(redis_url, tmp_path, events=1_200, rate=0.0, pipeline=500)
    assert done["published"] == 1_200
    got = _payloads(redis_url)
    for p, stream in enumerate(STREAMS):
        want = [t for part, t in scheduled if part == p]
        assert want and [_template(x) for x in got[stream]] == want


def test_at_a_fixed_rate_events_are_stamped_when_they_leave(redis_url: str, tmp_path: Path) -> None:
    _, done = _publish(redis_url, tmp_path, events=400, rate=2_000.0, pipeline=50)
    assert done["published"] == 400
    stamps: list[Any] = [int(m.group(1)) for s in _payloads(redis_url).values() for x in s if (m := STAMPED.search(x))]
    assert len(stamps) >= 390  # a few templates are deliberately broken
    assert done["t0"] * 1000 - 5 <= min(stamps) <= max(stamps) <= done["t"] * 1000 + 5
    assert max(stamps) - min(stamps) >= 150  # 400 events at 2,000/s: spread over ~0.2 s, not sent at once
    assert done["behind_s"]["max"] < 1.0
