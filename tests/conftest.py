"""Shared fixtures: a real redis-server on a free loopback port.

``redis_server`` (session) starts one ``redis-server`` for the whole run and
yields its URL; ``redis_url`` (function) is the same URL after a FLUSHALL, so
each test starts from an empty database. ``redis_process`` (function) starts a
private server a test may stop and restart (outage tests). The server keeps
nothing on disk (``--save ''``, ``--appendonly no``). Without ``redis-server`` on
PATH these tests are skipped with a message saying how to install it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from loadtest.redis_server import RedisNotInstalled, RedisProcess, start_on_free_port


def _start_on_free_port(workdir: Path) -> RedisProcess:
    try:
        return start_on_free_port(workdir)
    except RedisNotInstalled as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server shared by the whole test session."""
    server = _start_on_free_port(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session server's URL, flushed (FLUSHALL) before the test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[Callable[[], RedisProcess]]:
    """A private redis-server the test can ``stop()`` and ``start()`` again on the same port."""
    servers: list[RedisProcess] = []

    def make() -> RedisProcess:
        server = _start_on_free_port(tmp_path / f"redis-{len(servers)}")
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
