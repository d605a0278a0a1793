"""Versioned weights in a real redis-server: publish, rollback, and a live provider's hot swap."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from creditflow.errors import CreditflowError
from creditflow.model_weights import ModelWeights, model_weights_from_json
from creditflow.weights_store import (
    CURRENT_KEY,
    LOG_STREAM,
    RedisWeights,
    current_version,
    publish,
    rollback,
    version_key,
    versions,
)


def weights(tenant: str = "acme", **over) -> ModelWeights:
    base = {
        "tenant_id": tenant,
        "version": 0,
        "method": "incrementality",
        "channel_weights": {"search": 2.0, "email": 1.0},
        "half_life_days": 7.0,
        "split": "per_touch",
        "journeys": 100,
        "metrics": {"log_loss": 0.3, "auc": 0.7},
    }
    return ModelWeights(**{**base, **over})


@pytest.fixture
def client(redis_url: str):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_versions_are_numbered_per_tenant_and_the_newest_becomes_current(client) -> None:
    assert [publish(client, weights()).version for _ in range(3)] == [1, 2, 3]
    assert publish(client, weights("globex")).version == 1
    assert current_version(client, "acme") == 3 and current_version(client, "globex") == 1
    assert [w.version for w in versions(client, "acme")] == [1, 2, 3]
    assert current_version(client, "initech") == 0


def test_rollback_points_current_back_and_logs_both_actions(client) -> None:
    publish(client, weights(channel_weights={"search": 1.0}))
    publish(client, weights(channel_weights={"email": 1.0}))
    back = rollback(client, "acme", 1, now_ms=123)
    assert (back.version, back.action, back.published_at_ms, dict(back.channel_weights)) == (
        1, "rollback", 123, {"search": 1.0},
    )  # fmt: skip
    assert current_version(client, "acme") == 1
    log_entries = [model_weights_from_json(f[b"data"]) for _, f in client.xrange(LOG_STREAM)]
    assert [(w.version, w.action) for w in log_entries] == [(1, "publish"), (2, "publish"), (1, "rollback")]


def test_rollback_to_an_unknown_version_names_the_known_ones(client) -> None:
    publish(client, weights())
    with pytest.raises(CreditflowError, match=r"no weights version 7; known versions: \[1\]"):
        rollback(client, "acme", 7)


def test_publish_refuses_weights_the_scorer_cannot_use(client) -> None:
    with pytest.raises(CreditflowError, match="'email' has weight -1.0"):
        publish(client, weights(channel_weights={"email": -1.0}))
    assert client.hget(CURRENT_KEY, "acme") is None


def test_a_live_provider_scores_with_a_new_version_within_one_second(redis_url, client) -> None:
    publish(client, weights())
    live = RedisWeights(redis_url, poll_s=0.25)
    try:
        assert live.current("acme").version == 1  # loaded before the flow starts scoring
        lags = []
        for _ in range(5):
            t0 = time.monotonic()
            v = publish(client, weights()).version
            while live.current("acme").version != v:
                assert time.monotonic() - t0 < 2.0, "the provider did not pick up the new version"
                time.sleep(0.005)
            lags.append(time.monotonic() - t0)
        assert max(lags) < 1.0, lags
        rollback(client, "acme", 1)
        t0 = time.monotonic()
        while live.current("acme").version != 1:
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.005)
        w = live.current("acme")
        assert (w.half_life_days, w.split, dict(w.channel_weights)) == (7.0, "per_touch", {"search": 2.0, "email": 1.0})
    finally:
        live.close()


def test_an_invalid_record_is_refused_and_the_previous_version_kept(redis_url, client, caplog) -> None:
    publish(client, weights())
    live = RedisWeights(redis_url, poll_s=10)
    try:
        client.set(version_key("acme", 2), b'{"tenant_id": "acme"}')
        client.hset(CURRENT_KEY, "acme", 2)
        with caplog.at_level(logging.ERROR, logger="creditflow.weights"):
            live.refresh()
        assert live.current("acme").version == 1
        assert "weights:acme:v2 refused" in caplog.text and "lacks 'version'" in caplog.text
    finally:
        live.close()


def test_redis_down_keeps_the_loaded_weights(redis_process, caplog) -> None:
    server = redis_process()
    c = redis.Redis.from_url(server.url)
    publish(c, weights())
    c.close()
    live = RedisWeights(server.url, poll_s=10)
    try:
        server.stop()
        with caplog.at_level(logging.WARNING, logger="creditflow.weights"):
            live.refresh()
        assert live.current("acme").version == 1
        assert "cannot read weights from Redis" in caplog.text
    finally:
        live.close()
