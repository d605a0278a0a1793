"""Probabilistic device links: keys, the confidence formula, matching, bounds, TTL, resume, no raw PII."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given
from hypothesis import strategies as st

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import Context, Event, SourcePosition
from creditflow.kpis import KEY_SEP
from operators.state_guard import StateLayoutError, guarded_builder
from state.probable_links import (
    MAX_EMITTED,
    MAX_NETWORK_USERS,
    MAX_OBSERVATIONS,
    NETWORK_LAYOUT_AT,
    PROBABLE_LINKS_LAYOUT,
    NetworkKeyer,
    NetworkRow,
    NetworkState,
    Observation,
    ProbableLink,
    ProbableLinkEnv,
    ProbableLinkLogic,
    Sighting,
    link_confidence,
    network_key,
    sighting_of,
    ua_hash,
)

T0 = 1_767_225_600_000
MIN = 60_000
WINDOW = 30 * MIN
POS = SourcePosition("test", "p0", "0")
HOME_IP = "203.0.113.42"
LAPTOP_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15"
PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


def event(
    eid: str,
    minute: float,
    *,
    anonymous_id: str = "",
    user_id: str = "",
    device_id: str = "",
    ua: str = LAPTOP_UA,
    country: str = "DE",
    tenant: str = "t1",
    etype: str = "page_view",
    ip: str = HOME_IP,
) -> Event:
    ctx = Context(ip=ip, user_agent=ua, country=country)
    return Event(
        eid,
        tenant,
        etype,
        T0 + int(minute * MIN),
        POS,
        anonymous_id=anonymous_id,
        user_id=user_id,
        device_id=device_id,
        context=ctx,
    )


def laptop(minute: float = 0, **kw) -> Event:
    """The anonymous laptop of the household."""
    return event(f"lap-{minute}", minute, anonymous_id="lap", **kw)


def phone(minute: float = 3, user: str = "u1", **kw) -> Event:
    """The logged-in phone."""
    return event(f"ph-{user}-{minute}", minute, user_id=user, device_id=f"ph-{user}", ua=PHONE_UA, **kw)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def env(cfg: TenantConfig | None = None, tenants: dict[str, TenantConfig] | None = None, clock=None):
    configs = TenantConfigs(defaults=cfg or TenantConfig(), tenants=tenants or {})
    return ProbableLinkEnv(configs, now=clock or Clock())


def salt(tenant: str) -> bytes:
    return b"salt-" + tenant.encode()


def sight(*events: Event) -> list[Sighting]:
    """The events as the matcher receives them (each with its tenant's salt); all must be of use to it."""
    out = [sighting_of(ev, salt(ev.tenant_id)) for ev in events]
    assert None not in out
    return out  # type: ignore[return-value]


def feed(lg: ProbableLinkLogic, *events: Event) -> list[ProbableLink]:
    """Links emitted, one event per batch."""
    out: list[ProbableLink] = []
    for ev in events:
        emitted, discard = lg.on_batch(sight(ev))
        assert discard is False
        out.extend(emitted)
    return out


def observations(lg: ProbableLinkLogic) -> list[Observation]:
    """The observations of the matcher's snapshot (a row of plain tuples), by name."""
    return [Observation(*o) for o in NetworkState(*lg.snapshot()).observations]


# --------------------------------------------------------------------------- #
# Keys
# --------------------------------------------------------------------------- #


def test_network_key_is_tenant_and_short_salted_hash_without_the_ip() -> None:
    key = network_key(laptop(), b"s1")
    assert key is not None
    tenant, digest = key.split(KEY_SEP)
    assert tenant == "t1" and len(digest) == 16 and int(digest, 16) >= 0
    assert HOME_IP not in key
    assert network_key(laptop(), b"s2") != key  # salted
    assert network_key(laptop(tenant="t2"), b"s1") != key  # tenant in the key
    assert network_key(phone(), b"s1") == key  # same IP, other device


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:abcd::9", True),  # one /64
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),  # neighbouring /64
        ("192.0.2.1", "192.0.2.2", False),  # IPv4: the exact address
        ("192.0.2.1", "::ffff:192.0.2.1", True),  # IPv4-mapped IPv6 is IPv4
        (" 192.0.2.1 ", "192.0.2.1", True),
        ("[2001:db8::1]", "2001:db8::2", True),
        ("fe80::1%eth0", "fe80::2", True),
        ("10.0.0.1", "10.0.0.1", True),  # private addresses are kept
    ],
)
def test_network_key_groups_addresses_by_network(a: str, b: str, same: bool) -> None:
    ka, kb = network_key(laptop(ip=a), b"s"), network_key(laptop(ip=b), b"s")
    assert ka is not None and kb is not None
    assert (ka == kb) is same


@pytest.mark.parametrize("ip", ["", "not-an-ip", "300.1.1.1", "192.0.2.1:443"])
def test_network_key_is_none_without_a_usable_ip(ip: str) -> None:
    assert network_key(laptop(ip=ip), b"s") is None
    no_ctx = Event("e", "t1", "click", T0, POS, anonymous_id="a")
    assert network_key(no_ctx, b"s") is None


def test_network_keyer_uses_each_tenants_salt() -> None:
    salts = {"t1": b"one", "t2": b"two"}
    key = NetworkKeyer(salts.__getitem__)
    assert key(laptop()) == network_key(laptop(), b"one")
    assert key(laptop(tenant="t2")) == network_key(laptop(tenant="t2"), b"two")


# --------------------------------------------------------------------------- #
# The confidence formula
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("same_ua", "same_country", "gap_min", "users", "devices", "expected"),
    [
        (False, True, 0, 1, 2, 0.8),
        (False, True, 3, 1, 2, 0.76),
        (True, True, 3, 1, 2, 0.912),
        (False, None, 0, 1, 2, 0.72),
        (False, False, 0, 1, 2, 0.4),
        (False, True, 30, 1, 2, 0.4),
        (False, True, 31, 1, 2, 0.0),
        (True, True, 0, 2, 3, 0.48),
        (False, True, 0, MAX_NETWORK_USERS, 5, 0.2),
        (True, True, 0, MAX_NETWORK_USERS + 1, 6, 0.0),
        (True, True, 0, 1, 9, 0.0),
    ],
)
def test_link_confidence_table(
    same_ua: bool, same_country: bool | None, gap_min: float, users: int, devices: int, expected: float
) -> None:
    got = link_confidence(
        same_ua=same_ua,
        same_country=same_country,
        gap_ms=int(gap_min * MIN),
        window_ms=WINDOW,
        users=users,
        devices=devices,
    )
    assert got == expected


def test_link_confidence_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="users must be >= 1"):
        link_confidence(same_ua=True, same_country=True, gap_ms=0, window_ms=WINDOW, users=0)
    with pytest.raises(ValueError, match="window_ms must be > 0"):
        link_confidence(same_ua=True, same_country=True, gap_ms=0, window_ms=0, users=1)


@given(
    same_ua=st.booleans(),
    same_country=st.sampled_from([True, None, False]),
    gap=st.integers(0, 10 * WINDOW),
    more=st.integers(0, 10 * WINDOW),
    window=st.integers(1, 10 * WINDOW),
    users=st.integers(1, 10),
    devices=st.integers(1, 12),
)
def test_confidence_is_in_0_1_and_never_grows_with_the_gap_or_the_crowd(
    same_ua: bool, same_country: bool | None, gap: int, more: int, window: int, users: int, devices: int
) -> None:
    def c(gap_ms: int = gap, n_users: int = users, ua: bool = same_ua) -> float:
        return link_confidence(
            same_ua=ua, same_country=same_country, gap_ms=gap_ms, window_ms=window, users=n_users, devices=devices
        )

    assert 0.0 <= c() <= 1.0
    assert c() == round(c(), 3)
    assert c(gap + more) <= c()
    assert c(-gap) == c()
    assert c(n_users=users + 1) <= c()
    assert c(ua=False) <= c(ua=True)


# --------------------------------------------------------------------------- #
# Matching
# --------------------------------------------------------------------------- #


def test_anonymous_laptop_then_logged_in_phone_on_home_wifi_links() -> None:
    links = feed(ProbableLinkLogic(env(), None), laptop(0), phone(3))
    assert links == [ProbableLink("t1", "a:lap", "u1", 0.76, T0 + 3 * MIN)]


def test_logged_in_phone_then_anonymous_laptop_also_links() -> None:
    links = feed(ProbableLinkLogic(env(), None), phone(0), laptop(3))
    assert links == [ProbableLink("t1", "a:lap", "u1", 0.76, T0 + 3 * MIN)]


def test_a_batch_links_like_single_events() -> None:
    lg = ProbableLinkLogic(env(), None)
    links, discard = lg.on_batch(sight(laptop(0), phone(3)))
    assert list(links) == feed(ProbableLinkLogic(env(), None), laptop(0), phone(3)) and discard is False


def test_a_different_country_does_not_link() -> None:
    assert feed(ProbableLinkLogic(env(), None), laptop(0, country="FR"), phone(3)) == []


def test_far_apart_in_time_does_not_link() -> None:
    assert feed(ProbableLinkLogic(env(), None), laptop(0), phone(25)) == []  # 0.467 < 0.7
    assert feed(ProbableLinkLogic(env(), None), laptop(0), phone(45)) == []  # outside the window


def test_an_event_older_than_the_window_is_ignored() -> None:
    lg = ProbableLinkLogic(env(), None)
    feed(lg, phone(60))
    assert feed(lg, laptop(20)) == []  # 40 minutes behind the newest observation
    assert [o.device_key for o in observations(lg)] == ["d:ph-u1"]


def test_a_nat_network_with_six_users_links_nobody() -> None:
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.01)), None)
    users = [phone(i * 0.1, user=f"u{i}") for i in range(6)]
    anonymous = [event(f"a{i}", 1 + i * 0.1, anonymous_id=f"a{i}", ua=PHONE_UA) for i in range(2)]
    assert feed(lg, *users, *anonymous, *users[:2]) == []


def test_links_are_decided_online_with_the_users_seen_so_far() -> None:
    # The matcher cannot wait for a network to turn out crowded: a pair linked while it had one user stays
    # linked (and is not re-proposed); once the crowd is visible nothing more links.
    lg = ProbableLinkLogic(env(), None)
    assert len(feed(lg, laptop(0), phone(1))) == 1
    crowd = [phone(1.1 + i * 0.1, user=f"n{i}") for i in range(5)]
    assert feed(lg, *crowd, event("late", 2, anonymous_id="late", ua=PHONE_UA), phone(2.5)) == []


def test_two_users_split_the_confidence() -> None:
    # With a low threshold a two-user network links, to the best user: the one with the laptop's own UA.
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.4)), None)
    other = event("o", 1, user_id="u2", device_id="mac2", ua=LAPTOP_UA)
    links = feed(lg, phone(0), other, laptop(2))
    assert links == [ProbableLink("t1", "a:lap", "u2", round(0.8 * 1.2 * (1 - 0.5 / 30) / 2, 3), T0 + 2 * MIN)]


def test_a_crowded_public_network_links_nobody() -> None:
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.01)), None)
    strangers = [event(f"s{i}", 0.1, anonymous_id=f"s{i}") for i in range(9)]
    assert feed(lg, *strangers, phone(1), laptop(2)) == []


def test_a_device_seen_with_a_user_is_never_proposed() -> None:
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.01)), None)
    tablet_login = event("t-in", 0, user_id="u1", device_id="tab")
    tablet_anon = event("t-anon", 1, device_id="tab")  # the same device, logged out
    links = feed(lg, tablet_login, tablet_anon, phone(2), laptop(3))
    assert [link.device_key for link in links] == ["a:lap"]


def test_a_device_that_logs_in_later_is_not_proposed_again() -> None:
    lg = ProbableLinkLogic(env(), None)
    assert len(feed(lg, laptop(0), phone(1))) == 1
    login = event("lap-in", 2, anonymous_id="lap", user_id="u9")
    assert feed(lg, login, phone(3), laptop(4)) == []


def test_a_user_without_a_device_is_no_evidence() -> None:
    assert sighting_of(event("srv", 1, user_id="u1"), salt("t1")) is None  # never sent to the matcher


def test_events_that_place_nobody_are_ignored() -> None:
    assert sighting_of(event("sp", 0, anonymous_id="lap", etype="ad_spend"), salt("t1")) is None


def test_a_sighting_carries_what_the_matcher_reads_and_no_ip() -> None:
    ev = laptop(0)
    s = sighting_of(ev, salt("t1"))
    assert s is not None
    assert (s.tenant_id, s.ts_ms, s.device_key, s.user_id, s.position) == ("t1", ev.ts_ms, "a:lap", "", ev.position)
    assert s.ua == ua_hash(ev.context.user_agent, salt("t1")) != b""
    assert ev.context.ip and ev.context.ip not in repr(s) and ev.context.user_agent not in repr(s)
    assert len(pickle.dumps(s)) < len(pickle.dumps(ev))  # it crosses to the network's process instead


def test_each_pair_is_emitted_once() -> None:
    lg = ProbableLinkLogic(env(), None)
    links = feed(lg, laptop(0), phone(1), laptop(1.5), phone(2), laptop(2.5), phone(2.6))
    assert [(link.device_key, link.user_id) for link in links] == [("a:lap", "u1")]


def test_threshold_is_per_tenant() -> None:
    strict = TenantConfig(link_threshold=0.95)
    e = env(tenants={"strict": strict})
    assert feed(ProbableLinkLogic(e, None), laptop(0, tenant="strict"), phone(3, tenant="strict")) == []
    assert len(feed(ProbableLinkLogic(e, None), laptop(0), phone(3))) == 1


def test_window_is_per_tenant() -> None:
    e = env(tenants={"short": TenantConfig(link_window_minutes=2)})
    assert feed(ProbableLinkLogic(e, None), laptop(0, tenant="short"), phone(3, tenant="short")) == []


# --------------------------------------------------------------------------- #
# Bounds, TTL, snapshots
# --------------------------------------------------------------------------- #


def test_observations_stay_capped_on_a_busy_network() -> None:
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.01)), None)
    devices = [event(f"e{i}", i / 100, anonymous_id=f"dev{i}") for i in range(1000)]
    links = feed(lg, *devices, phone(10.5), *devices[:50])
    state = NetworkState(*lg.snapshot())
    assert links == []
    assert len(state.observations) <= MAX_OBSERVATIONS and len(state.emitted) <= MAX_EMITTED
    assert min(o.ts_ms for o in observations(lg)) >= T0 + 968 * MIN // 100  # the newest were kept


def test_emitted_pairs_stay_capped() -> None:
    lg = ProbableLinkLogic(env(TenantConfig(link_threshold=0.01)), None)
    for i in range(100):  # one user, one anonymous device at a time, each soon gone from the window
        feed(lg, phone(i * 40), event(f"a{i}", i * 40 + 1, anonymous_id=f"a{i}"))
        assert len(NetworkState(*lg.snapshot()).emitted) <= MAX_EMITTED
    assert len(observations(lg)) <= 2


def test_one_observation_per_device_and_user() -> None:
    lg = ProbableLinkLogic(env(), None)
    feed(lg, *(laptop(m / 10) for m in range(100)))
    assert [o.ts_ms for o in observations(lg)] == [T0 + 99 * MIN // 10]


def test_no_raw_ip_or_user_agent_in_the_snapshot() -> None:
    lg = ProbableLinkLogic(env(), None)
    feed(lg, laptop(0), phone(3))
    blob = pickle.dumps(lg.snapshot())
    for secret in (HOME_IP, "203.0.113", "Mozilla", "iPhone", "Macintosh", "AppleWebKit"):
        assert secret.encode() not in blob
    assert len(blob) < 400


def test_user_agents_are_hashed_with_the_tenant_salt() -> None:
    one, two = ProbableLinkLogic(env(), None), ProbableLinkLogic(env(), None)
    feed(one, laptop(0))
    feed(two, laptop(0, tenant="t2"))
    assert observations(one)[0].ua != observations(two)[0].ua


def test_notify_at_is_the_last_event_plus_the_window_and_on_notify_discards() -> None:
    clock = Clock(5000.0)
    lg = ProbableLinkLogic(env(clock=clock), None)
    assert lg.notify_at() is None
    feed(lg, laptop(0))
    clock.t = 5100.0
    feed(lg, phone(1))
    assert lg.notify_at() == datetime.fromtimestamp(5100.0 + 30 * 60, tz=UTC)
    assert lg.on_notify() == ((), True)
    assert lg.on_eof() == ((), False)


def test_a_resumed_matcher_continues() -> None:
    e = env()
    lg = ProbableLinkLogic(e, None)
    feed(lg, laptop(0))
    resumed = ProbableLinkLogic(e, pickle.loads(pickle.dumps(lg.snapshot())))
    assert feed(resumed, phone(3)) == feed(lg, phone(3)) == [ProbableLink("t1", "a:lap", "u1", 0.76, T0 + 3 * MIN)]
    again = ProbableLinkLogic(e, pickle.loads(pickle.dumps(resumed.snapshot())))
    assert feed(again, laptop(4), phone(5)) == []  # the emitted pair survived the resume
    assert again.notify_at() == lg.notify_at()


def test_a_resumed_matcher_keeps_its_tenants_window() -> None:
    e = env(tenants={"short": TenantConfig(link_window_minutes=2)})
    lg = ProbableLinkLogic(e, None)
    feed(lg, laptop(0, tenant="short"))
    resumed = ProbableLinkLogic(e, lg.snapshot())
    assert resumed.notify_at() == datetime.fromtimestamp(1000.0 + 120, tz=UTC)


def test_snapshot_layout_is_guarded() -> None:
    state = ProbableLinkLogic(env(), None).snapshot()
    assert type(state) is tuple and NetworkState(*state).layout == PROBABLE_LINKS_LAYOUT  # a plain row
    build = guarded_builder("probable_links", PROBABLE_LINKS_LAYOUT + 1, lambda resume: resume, NETWORK_LAYOUT_AT)
    with pytest.raises(StateLayoutError, match="snapshot has state layout 1"):
        build(state)


def test_probable_links_pickle_positionally() -> None:
    pos = SourcePosition("redis", "ev0", "1-0")
    link = ProbableLink("t1", "a:lap", "u1", 0.76, T0, pos)
    assert pickle.loads(pickle.dumps(link)) == link
    assert link.__reduce__() == (ProbableLink, ("t1", "a:lap", "u1", 0.76, T0, pos))
    assert pickle.loads(pickle.dumps(link)).position == pos


# --------------------------------------------------------------------------- #
# In a dataflow
# --------------------------------------------------------------------------- #


def test_runs_as_bytewax_stateful_batch_logic() -> None:
    assert isinstance(ProbableLinkLogic(env(), None), StatefulBatchLogic)
    e = env(clock=time.time)  # Bytewax compares notify_at with the real clock: a fake one would expire everything
    key = NetworkKeyer(lambda tenant: b"salt-" + tenant.encode())
    away = event("away", 3, user_id="u7", device_id="other", ip="198.51.100.9")  # another network
    flow = Dataflow("probable_links_test")
    events = op.input("in", flow, TestingSource([laptop(0), away, phone(3), laptop(4)]))
    keyed = op.filter_map("key", events, lambda ev: (k, *sight(ev)) if (k := key(ev)) is not None else None)

    def build(resume: NetworkRow | None) -> Any:  # a virtual subclass: Any, as operators.state_guard does
        return ProbableLinkLogic(e, resume)

    links = op.stateful_batch("match", keyed, build)
    out: list = []
    op.output("out", links, TestingSink(out))
    run_main(flow)
    assert out == [(network_key(laptop(), b"salt-t1"), ProbableLink("t1", "a:lap", "u1", 0.76, T0 + 3 * MIN))]


def test_cached_network_keys_and_ua_hashes_equal_fresh_ones_and_the_caches_stay_bounded() -> None:
    import state.probable_links as links

    key = links.NetworkKeyer(lambda tenant: tenant.encode())
    links._ua_hash.cache_clear()
    for i in range(links.NETWORK_KEY_CACHE_MAX + 200):
        tenant, ip, ua = f"t{i % 3}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"Agent/{i}"
        ev = Event("e", tenant, "click", 0, SourcePosition("f", "0", "0"), context=Context(ip=ip, user_agent=ua))
        assert key(ev) == links.network_key(ev, tenant.encode())
        assert key(ev) == links.network_key(ev, tenant.encode())  # the second answer comes from the cache
        assert links.ua_hash(ua, tenant.encode()) == links._ua_hash.__wrapped__(ua, tenant.encode())
    assert key.cache_info().hits >= links.NETWORK_KEY_CACHE_MAX
    assert key.cache_info().currsize == links.NETWORK_KEY_CACHE_MAX
    assert links._ua_hash.cache_info().currsize == links.UA_HASH_CACHE_MAX
