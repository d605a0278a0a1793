"""Journeys follow identity and consent, through the whole attribution flow (Bytewax testing runner)."""

from __future__ import annotations

from bytewax.testing import TestingSink, TestingSource, run_main

from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import ConversionRow, CreditRow, SuppressedEvent
from flows.attribution import FlowSettings, build_flow
from state.kpi_windows import WindowSettings
from tests.flows.test_attribution_flow import T0, by_type, ev, records

HOUR = 3_600_000


def run(payloads: list[bytes], **tenant: object) -> dict[type, list]:
    tenant.setdefault("identity_graph", True)
    settings = FlowSettings(
        configs=TenantConfigs(defaults=TenantConfig(**tenant)),  # type: ignore[arg-type]
        windows=WindowSettings(length_ms=5000, allowed_lateness_ms=60 * DAY_MS),
    )
    out: list = []
    run_main(build_flow(TestingSource(records(payloads)), TestingSink(out), settings))
    return by_type(out)


def last_touch(rows: list[CreditRow], conversion_id: str) -> tuple[str, str]:
    (row,) = [r for r in rows if r.conversion_id == conversion_id and r.model == "last_touch" and r.credit > 0]
    return row.person_id, row.touch_event_id


def linear_touches(rows: list[CreditRow], conversion_id: str) -> set[str]:
    return {r.touch_event_id for r in rows if r.conversion_id == conversion_id and r.model == "linear"}


def conversion(cid: str, ts: int, **ids: str) -> bytes:
    return ev("v-" + cid, "t1", "conversion", ts, conversion={"conversion_id": cid, "value": 10.0}, **ids)


def test_touches_of_an_anonymous_device_are_credited_to_the_persons_later_conversion() -> None:
    out = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="laptop", channel="display"),
            ev("mail", "t1", "click", T0 + HOUR, anonymous_id="laptop", channel="email"),
            ev("login", "t1", "identify", T0 + 2 * HOUR, anonymous_id="laptop", user_id="ann"),
            ev("seo", "t1", "click", T0 + 3 * HOUR, device_id="phone", user_id="ann", channel="organic_search"),
            conversion("o1", T0 + 4 * HOUR, user_id="ann"),  # server-side, names only the user
        ]
    )
    credit_rows = out[CreditRow]
    assert linear_touches(credit_rows, "o1") == {"ad", "mail", "seo"}
    assert last_touch(credit_rows, "o1") == ("u:ann", "seo")
    (conv,) = out[ConversionRow]
    assert (conv.person_id, conv.touch_count, conv.first_touch_channel) == ("u:ann", 3, "display")


def test_a_device_seen_logged_in_sends_its_later_anonymous_events_to_the_person() -> None:
    out = run(
        [
            ev("login", "t1", "page_view", T0, anonymous_id="tablet", user_id="bob", channel="direct"),
            ev("ad", "t1", "click", T0 + HOUR, anonymous_id="tablet", channel="paid_social"),  # logged out
            conversion("o1", T0 + 2 * HOUR, device_id="tv", user_id="bob"),
        ]
    )
    assert last_touch(out[CreditRow], "o1") == ("u:bob", "ad")


def test_an_unlinked_device_is_its_own_person_and_a_guest_conversion_is_credited_there() -> None:
    out = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="guest", channel="display"),
            conversion("o1", T0 + HOUR, anonymous_id="guest"),
            ev("later", "t1", "click", T0 + 2 * HOUR, anonymous_id="guest", channel="email"),
            ev("login", "t1", "identify", T0 + 3 * HOUR, anonymous_id="guest", user_id="cy"),
            conversion("o2", T0 + 4 * HOUR, user_id="cy"),
            conversion("o1", T0 + 5 * HOUR, user_id="cy"),  # the guest order again: a retry, not a second sale
        ]
    )
    credit_rows = out[CreditRow]
    assert last_touch(credit_rows, "o1") == ("a:guest", "ad")
    assert linear_touches(credit_rows, "o2") == {"later"}  # the guest order consumed "ad"
    assert sorted(c.conversion_id for c in out[ConversionRow]) == ["o1", "o2"]


def test_one_user_on_two_devices_is_one_person() -> None:
    out = run(
        [
            ev("p1", "t1", "click", T0, device_id="phone", user_id="dee", channel="paid_social"),
            ev("l1", "t1", "click", T0 + HOUR, device_id="laptop", user_id="dee", channel="email"),
            conversion("o1", T0 + 2 * HOUR, device_id="phone", user_id="dee"),
        ]
    )
    assert linear_touches(out[CreditRow], "o1") == {"p1", "l1"}


def test_opt_in_tenant_keeps_and_credits_nothing_before_consent_and_counts_it() -> None:
    out = run(
        [
            ev("early", "t1", "click", T0, anonymous_id="a1", channel="display"),
            conversion("o0", T0 + HOUR, anonymous_id="a1"),
            ev("yes", "t1", "consent", T0 + 2 * HOUR, anonymous_id="a1", consent={"analytics": True}),
            ev("after", "t1", "click", T0 + 3 * HOUR, anonymous_id="a1", channel="email"),
            conversion("o1", T0 + 4 * HOUR, anonymous_id="a1"),
        ],
        consent_mode="opt_in",
    )
    assert {c.conversion_id for c in out[ConversionRow]} == {"o1"}
    assert linear_touches(out[CreditRow], "o1") == {"after"}  # "early" was never kept
    suppressed = out[SuppressedEvent]
    assert sorted((s.reason, s.event_type) for s in suppressed) == [
        ("no_consent", "click"),
        ("no_consent", "conversion"),
    ]
    assert all("a1" not in repr(s) and "early" not in repr(s) for s in suppressed)


def test_withdrawal_drops_the_persons_touches_and_suppresses_what_follows() -> None:
    out = run(
        [
            ev("c1", "t1", "click", T0, user_id="eve", channel="display"),
            ev("no", "t1", "consent", T0 + HOUR, user_id="eve", consent={"analytics": False, "ads": True}),
            ev("c2", "t1", "click", T0 + 2 * HOUR, user_id="eve", channel="email"),
            conversion("o1", T0 + 3 * HOUR, user_id="eve"),
            ev("yes", "t1", "consent", T0 + 4 * HOUR, user_id="eve", consent={"analytics": True}),
            conversion("o2", T0 + 5 * HOUR, user_id="eve"),
        ]
    )
    assert {c.conversion_id for c in out[ConversionRow]} == {"o2"}
    (conv,) = out[ConversionRow]
    assert not conv.attributed  # c1 was dropped at the withdrawal, c2 was never kept
    assert len(out[SuppressedEvent]) == 2


def test_consent_follows_the_device_into_the_person() -> None:
    out = run(
        [
            ev("yes", "t1", "consent", T0, anonymous_id="a9", consent={"analytics": True}),
            ev("ad", "t1", "click", T0 + HOUR, anonymous_id="a9", channel="display"),
            ev("login", "t1", "identify", T0 + 2 * HOUR, anonymous_id="a9", user_id="fay"),
            conversion("o1", T0 + 3 * HOUR, user_id="fay"),
        ],
        consent_mode="opt_in",
    )
    assert last_touch(out[CreditRow], "o1") == ("u:fay", "ad")
    assert not out[SuppressedEvent]


def test_a_later_withdrawal_on_one_device_wins_over_an_earlier_grant() -> None:
    out = run(
        [
            ev("no", "t1", "consent", T0 + HOUR, anonymous_id="a7", consent={"analytics": False}),
            ev("yes", "t1", "consent", T0, user_id="gus", consent={"analytics": True}),
            ev("c1", "t1", "click", T0 + 2 * HOUR, user_id="gus", channel="display"),
            ev("login", "t1", "identify", T0 + 3 * HOUR, anonymous_id="a7", user_id="gus"),
            conversion("o1", T0 + 4 * HOUR, user_id="gus"),
        ],
        consent_mode="opt_in",
    )
    assert not out[ConversionRow]  # the device's withdrawal (T0+1h) is newer than the grant (T0)
    assert [s.event_type for s in out[SuppressedEvent]] == ["conversion"]


def test_under_opt_in_a_login_from_a_device_without_consent_ties_the_device_to_nobody() -> None:
    """Hal granted on his laptop; his phone never did. The phone's login reaches Hal, its later events do not."""
    out = run(
        [
            ev("yes", "t1", "consent", T0, user_id="hal", device_id="laptop", consent={"analytics": True}),
            ev("mail", "t1", "click", T0 + HOUR, user_id="hal", device_id="laptop", channel="email"),
            ev("login", "t1", "identify", T0 + 2 * HOUR, device_id="phone", user_id="hal"),
            ev("ad", "t1", "click", T0 + 3 * HOUR, device_id="phone", channel="paid_social"),  # logged out
            conversion("o1", T0 + 4 * HOUR, user_id="hal"),
        ],
        consent_mode="opt_in",
    )
    assert last_touch(out[CreditRow], "o1") == ("u:hal", "mail")  # not "ad": the phone was never linked
    assert [s.event_type for s in out[SuppressedEvent]] == ["click"]  # the phone's own click: nobody's consent


def test_under_opt_in_a_device_that_grants_is_linked_and_a_withdrawal_there_unlinks_it() -> None:
    out = run(
        [
            ev("login", "t1", "identify", T0, device_id="phone", user_id="ida", consent={"analytics": True}),
            ev("ad", "t1", "click", T0 + HOUR, device_id="phone", channel="paid_social"),  # logged out: linked
            conversion("o1", T0 + 2 * HOUR, user_id="ida"),
            ev("no", "t1", "consent", T0 + 3 * HOUR, device_id="phone", consent={"analytics": False}),
            ev("yes", "t1", "consent", T0 + 4 * HOUR, user_id="ida", device_id="laptop", consent={"analytics": True}),
            ev("ad2", "t1", "click", T0 + 5 * HOUR, device_id="phone", channel="display"),  # unlinked now
            conversion("o2", T0 + 6 * HOUR, user_id="ida"),
        ],
        consent_mode="opt_in",
    )
    assert last_touch(out[CreditRow], "o1") == ("u:ida", "ad")
    (o2,) = [c for c in out[ConversionRow] if c.conversion_id == "o2"]
    assert not o2.attributed  # the withdrawal dropped "ad"; "ad2" came from a device tied to nobody
    assert [s.event_type for s in out[SuppressedEvent]] == ["click"]  # ad2, on the phone that withdrew


def test_under_opt_out_a_withdrawal_on_a_device_reaches_the_person_and_unlinks_the_device() -> None:
    out = run(
        [
            ev("login", "t1", "identify", T0, device_id="tv", user_id="jo"),
            ev("no", "t1", "consent", T0 + HOUR, device_id="tv", consent={"analytics": False}),
            ev("ad", "t1", "click", T0 + 2 * HOUR, device_id="tv", channel="display"),
            ev("web", "t1", "click", T0 + 3 * HOUR, user_id="jo", device_id="laptop", channel="email"),
            conversion("o1", T0 + 4 * HOUR, user_id="jo"),
        ]
    )
    assert not out[ConversionRow]  # jo withdrew: nothing of jo counts
    # ad: the tv, tied to nobody now, keeps its own withdrawal; web and o1: jo's
    assert sorted(s.event_type for s in out[SuppressedEvent]) == ["click", "click", "conversion"]


def test_an_anonymous_device_on_the_users_home_network_minutes_before_login_joins_the_person() -> None:
    home = {"ip": "203.0.113.7", "country": "DE", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}
    out = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="laptop", channel="display", context=home),
            ev("login", "t1", "identify", T0 + 120_000, device_id="phone", user_id="hal", context=home),
            conversion("o1", T0 + HOUR, user_id="hal"),
        ]
    )
    assert last_touch(out[CreditRow], "o1") == ("u:hal", "ad")


def test_a_busy_network_or_a_strict_threshold_links_nothing() -> None:
    cafe = {"ip": "198.51.100.9", "country": "DE"}
    events = [
        ev(f"login{i}", "t1", "identify", T0 + i, device_id=f"phone{i}", user_id=f"u{i}", context=cafe)
        for i in range(6)
    ]
    events.append(ev("ad", "t1", "click", T0 + 60_000, anonymous_id="laptop", channel="display", context=cafe))
    events.append(conversion("o1", T0 + HOUR, user_id="u0"))
    assert not linear_touches(run(events)[CreditRow], "o1") - {""}
    home = {"ip": "203.0.113.7", "country": "DE"}
    strict = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="laptop", channel="display", context=home),
            ev("login", "t1", "identify", T0 + 120_000, device_id="phone", user_id="hal", context=home),
            conversion("o1", T0 + HOUR, user_id="hal"),
        ],
        link_threshold=0.95,
    )
    assert not linear_touches(strict[CreditRow], "o1") - {""}


def test_no_raw_ip_or_email_reaches_any_output() -> None:
    ctx = {"ip": "203.0.113.7", "country": "DE"}
    out = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="laptop", channel="display", context=ctx),
            ev(
                "login",
                "t1",
                "identify",
                T0 + 60_000,
                device_id="phone",
                user_id="ivy",
                context=ctx,
                traits={"email": "Ivy@Example.com", "phone": "+49 30 1234567"},
            ),
            conversion("o1", T0 + HOUR, user_id="ivy"),
            b'{"event_id": "broken", "traits": {"email": "Ivy@Example.com"}, "context": {"ip": "203.0.113.7"',
        ]
    )
    text = repr(out).lower()
    assert "ivy@example.com" not in text and "203.0.113.7" not in text and "1234567" not in text


def test_without_the_identity_graph_the_person_is_the_user_else_the_device() -> None:
    out = run(
        [
            ev("ad", "t1", "click", T0, anonymous_id="laptop", channel="display"),
            ev("login", "t1", "identify", T0 + HOUR, anonymous_id="laptop", user_id="jo"),
            ev("mail", "t1", "click", T0 + 2 * HOUR, anonymous_id="laptop", user_id="jo", channel="email"),
            conversion("o1", T0 + 3 * HOUR, user_id="jo"),
            conversion("o2", T0 + 4 * HOUR, anonymous_id="laptop"),
        ],
        identity_graph=False,
    )
    assert linear_touches(out[CreditRow], "o1") == {"mail"}
    assert last_touch(out[CreditRow], "o2") == ("a:laptop", "ad")
