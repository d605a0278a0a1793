"""StreamTrimmer: streams trimmed from a thread of its own, against a real redis-server (tests/conftest.py)."""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import sources.redis_trim as redis_trim
from sources.redis_streams import RedisStreamSource
from sources.redis_trim import StreamTrimmer

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def trim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("creditflow-trim-")]


def test_open_partitions_streams_are_trimmed_off_the_worker_thread_until_they_close(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_url)
    ids = [client.xadd("ev", {b"data": b"{}"}) for _ in range(10)]
    reads: list[str] = []

    def safe_ids(store: Path, step_id: str) -> dict[str, str]:
        reads.append(threading.current_thread().name)
        return {"ev": ids[6].decode()}  # what the recovery store says no resume can read again

    monkeypatch.setattr(redis_trim, "trimmable_ids", safe_ids)
    source = RedisStreamSource(redis_url, ["ev"], trim_store=tmp_path, trim_every_s=0.05)
    part = source.build_part("creditflow.source", "ev", None)
    assert len(part.next_batch()) == 10  # the read itself never trims
    assert wait_for(lambda: client.xlen("ev") == 4), "entries before the safe id are trimmed"
    assert reads and threading.main_thread().name not in reads  # the store is read on the trimmer's thread
    assert [t.name for t in trim_threads()] == ["creditflow-trim-creditflow.source"]
    part.close()
    assert wait_for(lambda: not trim_threads()), "the thread ends with the last partition"
    client.close()


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (sqlite3.OperationalError("part-0.sqlite3 changed while being copied 3 times"), "could not read"),
        (pickle.UnpicklingError("invalid load key, 'x'."), "trimming the streams of creditflow.source failed"),
    ],
    ids=["store-changing", "unforeseen"],  # the second would end the thread if not caught
)
def test_a_failed_round_is_logged_and_the_next_one_trims(
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    logged: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    ids = [client.xadd("ev", {b"data": b"{}"}) for _ in range(5)]
    calls: list[int] = []

    def flaky(store: Path, step_id: str) -> dict[str, str]:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return {"ev": ids[2].decode()}

    monkeypatch.setattr(redis_trim, "trimmable_ids", flaky)
    trimmer = StreamTrimmer(tmp_path, "creditflow.source", 0.05, lambda: redis.Redis.from_url(redis_url))
    with caplog.at_level(logging.WARNING, logger="creditflow.sources.redis"):
        trimmer.watch("ev")
        assert wait_for(lambda: client.xlen("ev") == 3), "the round after the failed one trims"
    trimmer.unwatch("ev")
    assert logged in caplog.text and str(error) in caplog.text
    assert trimmer.rounds >= 1
    client.close()
