"""Identity and privacy end to end: `creditflow run` on a real redis-server into chDB.

A cross-device person, a probabilistic link, an opt-in tenant and a consent
withdrawal, with emails and IPs in the traffic: what lands in ClickHouse, the
recovery store and the archive. Then a second run, resumed from the first's
recovery store, brings a login that links a laptop whose touch preceded a
conversion already credited: the conversion is restated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from tests_support import query

from sources.redis_streams import publish

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
HOUR = 3_600_000
EMAIL = "Kim.Example@Mail.TEST"
IP = "203.0.113.77"


def ev(eid: str, tenant: str, etype: str, ts: int, **fields: object) -> dict[str, object]:
    return {"event_id": eid, "tenant_id": tenant, "event_type": etype, "timestamp": ts, **fields}


def conversion(cid: str, tenant: str, ts: int, **ids: object) -> dict[str, object]:
    return ev("v-" + cid, tenant, "conversion", ts, conversion={"conversion_id": cid, "value": 50.0}, **ids)


HOME = {"ip": IP, "country": "DE", "user_agent": "Mozilla/5.0 (Macintosh) Safari/605.1.15"}

EVENTS = [
    # shop (identity graph on, opt-out): kim browses on a laptop, logs in on it, buys from the phone
    ev("k1", "shop", "click", T0, anonymous_id="kim-laptop", channel="display", context=HOME),
    ev("k2", "shop", "click", T0 + HOUR, anonymous_id="kim-laptop", channel="email", context=HOME),
    ev("k3", "shop", "identify", T0 + 2 * HOUR, anonymous_id="kim-laptop", user_id="kim",
       traits={"email": EMAIL}, context=HOME),
    ev("k4", "shop", "click", T0 + 3 * HOUR, device_id="kim-phone", user_id="kim", channel="paid_social"),
    conversion("shop-1", "shop", T0 + 4 * HOUR, device_id="kim-phone", user_id="kim"),
    # shop: an anonymous tablet at kim's home minutes before a login there: a probable link
    ev("t1", "shop", "click", T0 + 5 * HOUR, anonymous_id="kim-tablet", channel="affiliate", context=HOME),
    ev("t2", "shop", "identify", T0 + 5 * HOUR + 60_000, device_id="kim-phone", user_id="kim", context=HOME),
    conversion("shop-2", "shop", T0 + 6 * HOUR, user_id="kim"),
    # shop: lee withdraws; the later sale is not credited and the touch before is dropped
    ev("l1", "shop", "click", T0, user_id="lee", channel="display"),
    ev("l2", "shop", "consent", T0 + HOUR, user_id="lee", consent={"analytics": False}),
    ev("l3", "shop", "click", T0 + 2 * HOUR, user_id="lee", channel="email"),
    conversion("shop-3", "shop", T0 + 3 * HOUR, user_id="lee"),
    # news (opt-in): nothing before the grant
    ev("n1", "news", "click", T0, anonymous_id="max", channel="display"),
    ev("n2", "news", "consent", T0 + HOUR, anonymous_id="max", consent={"analytics": True}),
    ev("n3", "news", "click", T0 + 2 * HOUR, anonymous_id="max", channel="email"),
    conversion("news-1", "news", T0 + 3 * HOUR, anonymous_id="max"),
    ev("m1", "news", "click", T0, anonymous_id="mia", channel="display"),
    conversion("news-2", "news", T0 + HOUR, anonymous_id="mia"),
    # shop: ray's sale is recorded server-side (user id only), before the laptop he browsed on is known
    conversion("shop-4", "shop", T0 + 9 * HOUR, user_id="ray"),
    # a broken record carrying the email and the IP: a dead letter, scrubbed
    ev("bad", "shop", "click", "yesterday", user_id="kim", traits={"email": EMAIL}, context=HOME),
]  # fmt: skip

LATE = [
    # the second run: the laptop's touch before the sale, then a login on it; the link arrives late
    ev("r1", "shop", "click", T0 + 7 * HOUR, anonymous_id="ray-laptop", channel="paid_search", campaign_id="brand"),
    ev("r2", "shop", "identify", T0 + 8 * HOUR, anonymous_id="ray-laptop", user_id="ray"),
]

TENANTS = """
[tenants.shop]
identity_graph = true

[tenants.news]
consent_mode = "opt_in"
"""


@pytest.fixture(scope="module")
def landed(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("identity")
    redis_url = redis_server  # module-scoped: the session server, this test's own stream
    client = redis.Redis.from_url(redis_url)
    client.delete("identity-ev")
    publish(client, "identity-ev", EVENTS)
    (tmp / "tenants.toml").write_text(TENANTS)
    dsn = f"chdb://{tmp / 'ch'}"
    cmd = [sys.executable, "-m", "creditflow.cli", "run", "--no-summary", "--clickhouse", dsn,
           "--source", f"{redis_url}?streams=identity-ev&stop_at_end=1", "--data-dir", str(tmp),
           "--tenants", str(tmp / "tenants.toml")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert linear(dsn, "shop-4") == {"": 1.0}  # nothing known before it: unattributed
    publish(client, "identity-ev", LATE)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # resumes from the recovery store
    assert done.returncode == 0, done.stderr[-3000:]
    return dsn, tmp


def linear(dsn: str, conversion_id: str) -> dict[str, float]:
    rows = query(
        dsn,
        "SELECT touch_event_id, credit FROM attribution_credits_latest "
        f"WHERE model = 'linear' AND conversion_id = '{conversion_id}'",
    )
    return {t: round(c, 6) for t, c in rows}


def test_a_cross_device_journey_credits_pre_login_touches(landed: tuple[str, Path]) -> None:
    dsn, _ = landed
    assert linear(dsn, "shop-1") == {"k1": 0.333333, "k2": 0.333333, "k4": 0.333333}
    assert query(dsn, "SELECT person_id FROM conversions_latest WHERE conversion_id = 'shop-1'") == [["u:kim"]]


def test_a_probable_link_brings_the_tablets_touch_to_the_person(landed: tuple[str, Path]) -> None:
    dsn, _ = landed
    assert linear(dsn, "shop-2") == {"t1": 1.0}


def test_a_link_arriving_after_the_conversion_restates_its_credit(landed: tuple[str, Path]) -> None:
    dsn, _ = landed
    assert linear(dsn, "shop-4") == {"r1": 1.0}  # the laptop's touch, adopted at the late login
    revisions = query(
        dsn,
        "SELECT revision, groupUniqArray(channel), round(sum(credit), 9) FROM attribution_credits "
        "WHERE conversion_id = 'shop-4' AND model = 'linear' GROUP BY revision ORDER BY revision",
    )
    assert revisions == [[0, ["(unattributed)"], 1.0], [1, ["paid_search"], 1.0]]  # both kept, each sums to 1
    sums = query(dsn, "SELECT model, sum(credit) FROM attribution_credits_latest WHERE conversion_id = 'shop-4' "
                      "GROUP BY model")  # fmt: skip
    assert len(sums) == 6 and all(abs(total - 1.0) < 1e-9 for _, total in sums)
    assert query(dsn, "SELECT revision, attributed, touch_count FROM conversions_latest "
                      "WHERE conversion_id = 'shop-4'") == [[1, 1, 1]]  # fmt: skip
    # the KPI window of the sale moved its conversion from (unattributed) to the touch's channel and campaign
    window = query(
        dsn,
        "SELECT channel, campaign_id, conversions FROM kpi_windows_latest WHERE tenant_id = 'shop' AND "
        f"window_start = fromUnixTimestamp64Milli({T0 + 9 * HOUR}, 'UTC') ORDER BY channel",
    )
    assert window == [["(unattributed)", "", 0.0], ["paid_search", "brand", 1.0]]
    assert query(dsn, "SELECT count() FROM dead_letters WHERE reason = 'late_event'") == [[0]]


def test_withdrawal_and_opt_in_keep_and_credit_nothing_without_consent(landed: tuple[str, Path]) -> None:
    dsn, _ = landed
    assert query(dsn, "SELECT attributed FROM conversions_latest WHERE conversion_id = 'shop-3'") == []
    assert linear(dsn, "news-1") == {"n3": 1.0}
    assert query(dsn, "SELECT count() FROM conversions WHERE conversion_id = 'news-2'") == [[0]]
    suppressed = query(
        dsn,
        "SELECT tenant_id, event_type, count() FROM suppressed_events FINAL "
        "GROUP BY tenant_id, event_type ORDER BY tenant_id, event_type",
    )
    assert suppressed == [["news", "click", 2], ["news", "conversion", 1], ["shop", "click", 1],
                          ["shop", "conversion", 1]]  # fmt: skip


def test_no_raw_email_or_ip_in_clickhouse_the_recovery_store_or_the_archive(landed: tuple[str, Path]) -> None:
    dsn, tmp = landed
    assert query(dsn, "SELECT reason FROM dead_letters FINAL") == [["invalid_timestamp"]]
    tables = [t for (t,) in query(dsn, "SELECT name FROM system.tables WHERE database = currentDatabase() "
                                       "AND engine LIKE '%MergeTree'")]  # fmt: skip
    assert "dead_letters" in tables and "attribution_credits" in tables
    for table in tables:  # the stored values, whatever their compression on disk
        for needle in (EMAIL, IP):
            hits = query(dsn, f"SELECT count() FROM {table} WHERE positionCaseInsensitive("
                              f"formatRow('TabSeparated', *), '{needle}') > 0")  # fmt: skip
            assert hits == [[0]], f"{table} holds {needle}"
    needles = (EMAIL.encode(), EMAIL.lower().encode(), IP.encode())
    for path in tmp.rglob("*"):
        if path.is_file() and path.name != "tenants.toml":
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"{path} holds a raw email or IP"
