"""Right to be forgotten end to end: `creditflow run` on a real redis-server into chDB, then `creditflow forget`.

Kim browses on a laptop, logs in, buys from her phone; a broken record of hers
becomes a dead letter; her journey is archived. A deletion request arrives in a
second run, with more of her events after it. The flow erases her at once
(state, credits, conversions, dead letters, archive); the sweep removes her
raw events from Redis and the names of her emptied keys from the recovery
store. A backfill of her old events by a fresh run brings nothing back. Then
every store is searched for her ids: Redis, every ClickHouse table and its
mutation log, the archive and recovery files byte by byte.
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
KIM_IDS = ("kim-9q", "kim-lap-9q", "kim-ph-9q")
HOME = {"ip": "203.0.113.9", "country": "DE", "user_agent": "Mozilla/5.0 (Macintosh) Safari/605.1.15"}


def ev(eid: str, etype: str, ts: object, **fields: object) -> dict[str, object]:
    return {"event_id": eid, "tenant_id": "shop", "event_type": etype, "timestamp": ts, **fields}


def conversion(cid: str, ts: int, **ids: object) -> dict[str, object]:
    return ev("v-" + cid, "conversion", ts, conversion={"conversion_id": cid, "value": 40.0}, **ids)


KIM = [
    ev("k1", "click", T0, anonymous_id="kim-lap-9q", channel="display", context=HOME),
    ev("k2", "identify", T0 + HOUR, anonymous_id="kim-lap-9q", user_id="kim-9q", traits={"email": "kim@x.test"},
       context=HOME),
    ev("k3", "click", T0 + 2 * HOUR, device_id="kim-ph-9q", user_id="kim-9q", channel="email", context=HOME),
    conversion("shop-k1", T0 + 3 * HOUR, user_id="kim-9q"),
    ev("k-bad", "click", "yesterday", user_id="kim-9q", channel="email"),  # a dead letter naming her
]  # fmt: skip
BOB = [
    ev("b1", "click", T0, anonymous_id="bob-lap", user_id="bob", channel="paid_search"),
    conversion("shop-b1", T0 + 3 * HOUR, user_id="bob"),
]
ERASURE = [
    ev("del-kim", "deletion_request", T0 + 4 * HOUR, user_id="kim-9q"),
    ev("k4", "click", T0 + 5 * HOUR, device_id="kim-ph-9q", channel="display"),  # her phone, after the request
    conversion("shop-k2", T0 + 6 * HOUR, user_id="kim-9q"),
    ev("b2", "click", T0 + 5 * HOUR, anonymous_id="bob-lap", channel="email"),
    conversion("shop-b2", T0 + 6 * HOUR, user_id="bob"),
]

TENANTS = """
[tenants.shop]
identity_graph = true
link_window_minutes = 0.02
"""


def run(redis_url: str, tmp: Path, stream: str, *extra: str) -> None:
    cmd = [sys.executable, "-m", "creditflow.cli", "run", "--no-summary", "--data-dir", str(tmp),
           "--source", f"{redis_url}?streams={stream}&stop_at_end=1", "--tenants", str(tmp / "tenants.toml"),
           "--archive-flush-s", "0.2", "--snapshot-interval", "1", *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def forget(redis_url: str, tmp: Path, streams: str) -> str:
    cmd = [sys.executable, "-m", "creditflow.cli", "forget", "--data-dir", str(tmp), "--redis", redis_url,
           "--streams", streams]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def dsn_of(tmp: Path) -> str:
    return f"chdb://{(tmp / 'clickhouse').resolve()}"


def rows_naming(dsn: str, needle: str) -> dict[str, int]:
    """Rows of every table of the database with a String column containing ``needle``."""
    found: dict[str, int] = {}
    tables = [t for (t,) in query(dsn, "SELECT name FROM system.tables WHERE database = currentDatabase()")]
    for table in tables:
        columns = query(
            dsn,
            f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}' "
            "AND type LIKE '%String%'",
        )
        if not columns:
            continue
        where = " OR ".join(f"position(toString(`{c}`), '{needle}') > 0" for (c,) in columns)
        ((n,),) = query(dsn, f"SELECT count() FROM `{table}` WHERE {where}")
        if n:
            found[table] = n
    return found


@pytest.fixture(scope="module")
def erased(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("erasure")
    (tmp / "tenants.toml").write_text(TENANTS)
    client = redis.Redis.from_url(redis_server)
    client.delete("erase-ev", "erase-backfill")
    publish(client, "erase-ev", KIM + BOB)
    run(redis_server, tmp, "erase-ev")
    dsn = dsn_of(tmp)
    seen: dict[str, object] = {
        "kim_rows_before": rows_naming(dsn, "kim-9q"),
        "archived_before": sum(p.read_bytes().count(b"kim-9q") for p in (tmp / "archive").rglob("*.parquet")),
    }

    publish(client, "erase-ev", ERASURE)
    run(redis_server, tmp, "erase-ev")  # resumes: the request erases her in the flow
    seen["kim_rows_after_flow"] = {n: rows_naming(dsn, n) for n in KIM_IDS}
    seen["listed"] = query(dsn, "SELECT count() FROM forgotten_ids FINAL")[0][0]
    seen["suppressed"] = query(dsn, "SELECT count() FROM suppressed_events FINAL WHERE reason = 'forgotten'")[0][0]
    seen["sweep"] = forget(redis_server, tmp, "erase-ev")

    # A backfill of her old events from elsewhere, by a fresh run: the suppression list keeps her out.
    publish(client, "erase-backfill", KIM + BOB)
    run(redis_server, tmp, "erase-backfill", "--fresh-state")
    seen["after_backfill"] = {n: rows_naming(dsn, n) for n in KIM_IDS}
    seen["sweep_2"] = forget(redis_server, tmp, "erase-ev,erase-backfill")
    return dsn, tmp, seen


def test_before_the_request_kim_is_everywhere(erased: tuple[str, Path, dict[str, object]]) -> None:
    _, _, seen = erased
    before = seen["kim_rows_before"]
    assert isinstance(before, dict) and {"attribution_credits", "conversions", "dead_letters"} <= set(before)
    assert seen["archived_before"], "her converted journey was archived"


def test_the_flow_erases_her_rows_at_once_and_lists_only_hashes(erased: tuple[str, Path, dict[str, object]]) -> None:
    dsn, _, seen = erased
    assert seen["kim_rows_after_flow"] == {n: {} for n in KIM_IDS}
    assert seen["listed"] == 3  # her user key, laptop and phone
    assert seen["suppressed"] >= 1  # her later order (her phone's click is erased or suppressed: either order)
    assert "suppression list: 3 erased person keys" in str(seen["sweep"])


def test_a_backfill_brings_nothing_of_her_back_and_bob_is_untouched(
    erased: tuple[str, Path, dict[str, object]],
) -> None:
    dsn, _, seen = erased
    assert seen["after_backfill"] == {n: {} for n in KIM_IDS}
    conversions = {cid for (cid,) in query(dsn, "SELECT conversion_id FROM conversions_latest")}
    assert conversions == {"shop-b1", "shop-b2"}
    models = query(
        dsn,
        "SELECT model, round(sum(credit), 6) FROM attribution_credits_latest WHERE conversion_id = 'shop-b2' "
        "GROUP BY model",
    )
    assert len(models) == 6 and all(total == 1.0 for _, total in models)


def test_no_store_holds_anything_of_her(redis_server: str, erased: tuple[str, Path, dict[str, object]]) -> None:
    dsn, tmp, _ = erased
    for needle in KIM_IDS:
        assert rows_naming(dsn, needle) == {}, needle
        mutations = query(dsn, f"SELECT count() FROM system.mutations WHERE position(command, '{needle}') > 0")
        assert mutations == [[0]], needle
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter():
        if client.type(key) == b"stream":
            for _, fields in client.xrange(key):
                blob = b"".join(fields.values())
                assert not any(n.encode() in blob for n in KIM_IDS), (key, blob[:200])
        assert not any(n.encode() in key for n in KIM_IDS), key
    files = [p for p in tmp.rglob("*") if p.is_file() and "clickhouse" not in p.parts]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name.endswith(".sqlite3") for p in files)
    for path in files:
        data = path.read_bytes()
        assert not any(n.encode() in data for n in KIM_IDS), path
