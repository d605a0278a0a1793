"""Versioned model weights in Redis: publish, roll back, list, and follow them live.

Layout (one Redis, shared by the retrain job and every flow process)::

    weights:{tenant}:next     INCR counter: the last version number handed out
    weights:{tenant}:v{n}     JSON of version n (``ModelWeights``, action "publish")
    weights:current           HASH tenant -> the version the flow scores with
    weights:log               STREAM of every publish and rollback (field ``data``: JSON),
                              which the flow copies into ClickHouse ``model_weights``

A publish writes ``v{n}``, points ``current`` at it and logs it in one MULTI,
so a flow never sees a version that is not stored. :class:`RedisWeights` polls
``weights:current`` (one HGETALL) every ``poll_s`` and loads a version when it
changes: a running flow scores with a new version within ``poll_s`` plus one
round trip of the publish (``tests/creditflow/test_weights_store.py`` measures it).

>>> import pathlib, tempfile; from loadtest.redis_server import start_on_free_port
>>> server = start_on_free_port(pathlib.Path(tempfile.mkdtemp()))
>>> client = redis.Redis.from_url(server.url)
>>> w = ModelWeights("acme", 0, "markov", {"email": 1.0}, None, "per_channel")
>>> publish(client, w, now_ms=1).version, publish(client, w, now_ms=2).version
(1, 2)
>>> rollback(client, "acme", 1, now_ms=3).action, current_version(client, "acme")
('rollback', 1)
>>> live = RedisWeights(server.url, poll_s=0.1); live.current("acme").version
1
>>> live.close(); client.close(); server.stop()
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

import redis

from creditflow.errors import CreditflowError
from creditflow.model_weights import ModelWeights, ModelWeightsError, model_weights_from_json
from creditflow.weights import UNTRAINED, ScoringWeights, check_scoring

__all__ = [
    "CURRENT_KEY",
    "LOG_STREAM",
    "RedisWeights",
    "current_version",
    "publish",
    "rollback",
    "version_key",
    "versions",
]

log = logging.getLogger("creditflow.weights")

CURRENT_KEY = "weights:current"
LOG_STREAM = "weights:log"
LOG_MAXLEN = 100_000
"""The log stream keeps about this many publishes and rollbacks (MAXLEN ~)."""


def version_key(tenant_id: str, version: int) -> str:
    return f"weights:{tenant_id}:v{version}"


def _next_key(tenant_id: str) -> str:
    return f"weights:{tenant_id}:next"


def _now_ms() -> int:
    return int(time.time() * 1000)


def publish(client: redis.Redis, weights: ModelWeights, now_ms: int | None = None) -> ModelWeights:
    """Store ``weights`` as the tenant's next version and make it current; returns it with its version."""
    version = int(client.incr(_next_key(weights.tenant_id)))
    published = dataclasses.replace(weights, version=version, action="publish", published_at_ms=now_ms or _now_ms())
    check_scoring(published.tenant_id, published.scoring())
    data = published.to_json()
    pipe = client.pipeline(transaction=True)
    pipe.set(version_key(published.tenant_id, version), data)
    pipe.hset(CURRENT_KEY, published.tenant_id, version)
    pipe.xadd(LOG_STREAM, {"data": data}, maxlen=LOG_MAXLEN, approximate=True)
    pipe.execute()
    return published


def rollback(client: redis.Redis, tenant_id: str, version: int, now_ms: int | None = None) -> ModelWeights:
    """Make an earlier ``version`` current again; returns the logged rollback record."""
    data = client.get(version_key(tenant_id, version))
    if data is None:
        known = [w.version for w in versions(client, tenant_id)]
        raise CreditflowError(
            f"tenant {tenant_id!r} has no weights version {version}; known versions: {known or 'none'} "
            "(see `creditflow weights list`)"
        )
    record = model_weights_from_json(data).as_action("rollback", now_ms or _now_ms())
    pipe = client.pipeline(transaction=True)
    pipe.hset(CURRENT_KEY, tenant_id, version)
    pipe.xadd(LOG_STREAM, {"data": record.to_json()}, maxlen=LOG_MAXLEN, approximate=True)
    pipe.execute()
    return record


def current_version(client: redis.Redis, tenant_id: str) -> int:
    """The version the flow scores ``tenant_id`` with (0: none published)."""
    v = client.hget(CURRENT_KEY, tenant_id)
    return int(v) if v is not None else 0


def versions(client: redis.Redis, tenant_id: str) -> list[ModelWeights]:
    """Every stored version of the tenant, oldest first."""
    keys = sorted(
        (int(k.rsplit(b":v", 1)[1]), k) for k in client.scan_iter(match=f"weights:{tenant_id}:v*", count=1000)
    )
    out = []
    for _, key in keys:
        data = client.get(key)
        if data is not None:
            out.append(model_weights_from_json(data))
    return out


class RedisWeights:
    """A ``WeightsProvider`` following ``weights:current``: new versions apply without a restart.

    ``current()`` is a dict lookup (it runs at every conversion); a daemon
    thread polls Redis every ``poll_s`` seconds. If Redis is unreachable the
    last versions loaded stay in use and a warning is logged (at most every
    ``warn_every_s``); a version whose record is invalid is refused with an
    error naming its key, and the previous one stays in use.
    """

    def __init__(self, url: str, poll_s: float = 0.25, warn_every_s: float = 30.0) -> None:
        if not poll_s > 0:
            raise CreditflowError(f"weights poll interval must be > 0 s (got {poll_s})")
        self.url = url
        self.poll_s = poll_s
        self._warn_every_s = warn_every_s
        self._last_warn = 0.0
        self._client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._by_tenant: dict[str, ScoringWeights] = {}
        self._refused: dict[str, int] = {}
        self.loads = 0
        """How many versions were loaded (for tests and logs)."""
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="creditflow-weights", daemon=True)
        self._thread.start()

    def current(self, tenant_id: str) -> ScoringWeights:
        return self._by_tenant.get(tenant_id, UNTRAINED)

    def refresh(self) -> None:
        """Load every tenant whose current version changed (the poll thread calls this)."""
        try:
            pointers: dict[Any, Any] = self._client.hgetall(CURRENT_KEY)
            changed = {}
            for raw_tenant, raw_version in pointers.items():
                tenant, version = raw_tenant.decode(), int(raw_version)
                if self.current(tenant).version == version or self._refused.get(tenant) == version:
                    continue
                key = version_key(tenant, version)
                data = self._client.get(key)
                try:
                    if data is None:
                        raise ModelWeightsError("the record is missing")
                    changed[tenant] = model_weights_from_json(data).scoring()
                except ModelWeightsError as e:
                    self._refused[tenant] = version
                    log.error("weights %s refused (%s); tenant %r keeps version %d", key, e, tenant,
                              self.current(tenant).version)  # fmt: skip
        except (redis.RedisError, OSError) as e:
            now = time.monotonic()
            if now - self._last_warn >= self._warn_every_s:
                self._last_warn = now
                log.warning("cannot read weights from Redis (%s); scoring with the versions loaded so far", e)
            return
        if changed:
            self._by_tenant = {**self._by_tenant, **changed}  # one reference swap: readers never see a half update
            self.loads += len(changed)
            for tenant, w in changed.items():
                log.info("tenant %r now scores data_driven with weights v%d", tenant, w.version)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._client.close()
