"""Journey state: ordering, eligibility, consumption, de-duplication and bounds."""

from __future__ import annotations

import bisect
import hashlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import state.journey_state
from creditflow.config import DAY_MS, TenantConfig, TenantConfigs
from creditflow.events import (
    EMPTY_UTM,
    UNATTRIBUTED_CHANNEL,
    ClosedJourney,
    Conversion,
    ConversionRow,
    CreditRow,
    DeadLetter,
    Event,
    PersonEvent,
    SourcePosition,
    Utm,
)
from creditflow.kpis import KpiDelta, delta_of
from creditflow.weights import NoWeights, StaticWeights
from operators.state_guard import StateLayoutError, guarded_builder
from state.conversion_dedup import duplicate_conversion, duplicate_event
from state.journey_state import Journey, pack_id, split_ids, unpack_id
from state.journeys import (
    MAX_SEEN_CONVERSIONS,
    RECENT_TOUCH_IDS,
    STATE_LAYOUT_VERSION,
    ExpiredJourney,
    JourneyEnv,
    JourneyLogic,
    JourneyState,
    ScoredConversion,
    credit_rows,
    eligible_touches,
    is_touchpoint,
)

T0 = 1_767_225_600_000
POS = SourcePosition("test", "p0", "0")


def touch(
    eid: str, day: float, channel: str, etype: str = "click", campaign: str = "", utm: Utm = EMPTY_UTM
) -> PersonEvent:
    ev = Event(
        eid, "t1", etype, T0 + int(day * DAY_MS), POS, user_id="u1", channel=channel, campaign_id=campaign, utm=utm
    )
    return PersonEvent("u:u1", ev)


def conversion(eid: str, day: float, cid: str, value: float = 100.0) -> PersonEvent:
    ev = Event(
        eid, "t1", "conversion", T0 + int(day * DAY_MS), POS, user_id="u1", conversion=Conversion(cid, value, "EUR")
    )
    return PersonEvent("u:u1", ev)


def logic(cfg: TenantConfig | None = None, weights=None, archive: bool = False) -> JourneyLogic:
    env = JourneyEnv(
        TenantConfigs(defaults=cfg or TenantConfig()), weights or NoWeights(), now=lambda: 1000.0, archive=archive
    )
    return JourneyLogic(env, None)


def feed(lg: JourneyLogic, *items: PersonEvent) -> list:
    """Rows the journey emitted (a scored conversion flattened into its rows)."""
    out: list = []
    for it in items:
        emitted, discard = lg.on_item(it)
        assert discard is False
        for e in emitted:
            out.extend(e.rows() if isinstance(e, ScoredConversion) else [e])
    return out


def credit_of(out: list, model: str) -> dict[str, tuple[float, float]]:
    return {
        r.touch_event_id: (r.credit, r.revenue_credit) for r in out if isinstance(r, CreditRow) and r.model == model
    }


def test_three_touches_every_model_matches_hand_computed_values() -> None:
    lg = logic()
    out = feed(
        lg,
        touch("a", 0, "email"),
        touch("b", 7, "paid_search"),
        touch("c", 14, "display"),
        conversion("v", 14, "o1", 100.0),
    )
    approx = pytest.approx
    assert credit_of(out, "first_touch") == {"a": (1.0, 100.0), "b": (0.0, 0.0), "c": (0.0, 0.0)}
    assert credit_of(out, "last_touch") == {"a": (0.0, 0.0), "b": (0.0, 0.0), "c": (1.0, 100.0)}
    lin = credit_of(out, "linear")
    assert {k: v[0] for k, v in lin.items()} == approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    td = credit_of(out, "time_decay")
    assert {k: v[0] for k, v in td.items()} == approx({"a": 1 / 7, "b": 2 / 7, "c": 4 / 7})
    assert {k: v[1] for k, v in td.items()} == approx({"a": 100 / 7, "b": 200 / 7, "c": 400 / 7})
    pb = credit_of(out, "position_based")
    assert {k: v[0] for k, v in pb.items()} == approx({"a": 0.4, "b": 0.2, "c": 0.4})
    dd = [r for r in out if isinstance(r, CreditRow) and r.model == "data_driven"]
    assert {r.model_version for r in dd} == {0}
    assert {r.touch_event_id: r.credit for r in dd} == approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert (conv.touch_count, conv.attributed, conv.first_touch_channel, conv.last_touch_channel) == (
        3,
        True,
        "email",
        "display",
    )


def test_out_of_order_touch_is_inserted_in_event_time_order() -> None:
    lg = logic()
    out = feed(lg, touch("late", 5, "display"), touch("early", 1, "email"), conversion("v", 6, "o1"))
    assert credit_of(out, "first_touch")["early"][0] == 1.0
    assert credit_of(out, "last_touch")["late"][0] == 1.0


def test_touches_are_consumed_and_a_later_conversion_credits_only_later_touches() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), conversion("v1", 1, "o1"))
    out = feed(lg, touch("b", 2, "display"), conversion("v2", 3, "o2"))
    assert set(credit_of(out, "linear")) == {"b"}


def test_a_touch_arriving_after_the_conversion_that_covered_its_time_is_not_credited_later() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), conversion("v1", 2, "o1"))
    out = feed(lg, touch("late", 1, "display"), touch("b", 3, "video"), conversion("v2", 4, "o2"))
    assert set(credit_of(out, "linear")) == {"b"}


def test_same_conversion_id_is_not_credited_twice() -> None:
    lg = logic()
    first = feed(lg, touch("a", 0, "email"), conversion("v1", 1, "o1"))
    again = feed(lg, touch("b", 1.5, "email"), conversion("v1-retry", 2, "o1"))
    assert any(isinstance(r, CreditRow) for r in first)
    (dup,) = [r for r in again if isinstance(r, DeadLetter)]
    assert isinstance(dup, DeadLetter) and dup.reason == "duplicate_conversion" and dup.event_id == "v1-retry"
    assert [t[4] for t in lg.state.touches] == ["b"]  # the retry consumed nothing


def test_conversion_without_eligible_touch_is_recorded_unattributed() -> None:
    lg = logic()
    out = feed(lg, conversion("v", 0, "o1", 42.0))
    rows = [r for r in out if isinstance(r, CreditRow)]
    assert {r.model for r in rows} == set(TenantConfig().models)
    assert all(r.channel == UNATTRIBUTED_CHANNEL and r.credit == 1.0 and r.revenue_credit == 42.0 for r in rows)
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert conv.attributed is False and conv.touch_count == 0


def test_lookback_excludes_old_clicks_and_impressions_need_view_through() -> None:
    out = feed(logic(), touch("old", 0, "email"), touch("imp", 30.5, "display", "impression"), conversion("v", 31, "o"))
    # click older than 30 days; impression without view-through: nothing eligible, so unattributed
    assert credit_of(out, "linear") == {"": (1.0, 100.0)}
    vt = TenantConfig(view_through=True)
    out = feed(
        logic(vt),
        touch("imp-old", 0, "display", "impression"),
        touch("imp", 30.5, "display", "impression"),
        conversion("v", 31, "o"),
    )
    assert set(credit_of(out, "linear")) == {"imp"}  # impressions count for 1 day only


def test_touch_cap_keeps_the_newest() -> None:
    lg = logic(TenantConfig(max_touches=3))
    feed(lg, *(touch(f"t{i}", i * 0.1, "email") for i in range(10)))
    assert [t[4] for t in lg.state.touches] == ["t7", "t8", "t9"]


def test_event_time_idle_ttl_resets_state() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    feed(lg, touch("a", 0, "email"), touch("b", 5, "display"))
    assert [t[4] for t in lg.state.touches] == ["b"]


def test_wall_time_idle_ttl_discards_state() -> None:
    lg = logic(TenantConfig(idle_ttl_days=1))
    feed(lg, touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 86_400)
    assert lg.on_notify() == ((), True)


def test_archive_gets_the_credited_path_of_each_conversion() -> None:
    lg = logic(archive=True)
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "search"), conversion("v", 2, "o1", 40.0))
    (closed,) = [r for r in out if isinstance(r, ClosedJourney)]
    assert closed == ClosedJourney(
        "t1", "u:u1", "u:u1:converted:o1", "converted", T0 + 2 * DAY_MS, "o1", 40.0,
        ("email", "search"), (T0, T0 + DAY_MS),
    )  # fmt: skip
    # consumed: the next conversion's path starts after it (no eligible touch: an empty path)
    out = feed(lg, conversion("w", 3, "o2"))
    assert [r.touch_channels for r in out if isinstance(r, ClosedJourney)] == [()]


def test_archive_gets_the_unconverted_rest_when_the_person_goes_idle() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2), archive=True)
    feed(lg, touch("a", 0, "email"), conversion("v", 0.5, "o1"), touch("b", 1, "display"))
    out, discard = lg.on_notify()
    assert discard is True
    assert list(out) == [ExpiredJourney(T0 + DAY_MS, ("display",), (T0 + DAY_MS,))]
    assert list(out)[0].closed("t1", "u:u1").journey_id == "u:u1:expired:" + str(T0 + DAY_MS)
    # ... and when an event comes back after more than the idle TTL of event time
    lg = logic(TenantConfig(idle_ttl_days=2), archive=True)
    out = feed(lg, touch("a", 0, "email"), touch("b", 5, "search"))
    (closed,) = [r for r in out if isinstance(r, ClosedJourney)]
    assert (closed.outcome, closed.touch_channels, closed.closed_at_ms) == ("expired", ("email",), T0)


def test_an_idle_journey_is_archived_unconverted_for_training_and_kept_until_the_idle_ttl() -> None:
    clock = [1000.0]
    env = JourneyEnv(
        TenantConfigs(defaults=TenantConfig(idle_ttl_days=30, training_close_days=7)), NoWeights(),
        now=lambda: clock[0], archive=True,
    )  # fmt: skip
    lg = JourneyLogic(env, None)
    lg.on_item(touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 7 * 86_400)  # the training close first
    clock[0] += 7 * 86_400
    out, discard = lg.on_notify()
    assert discard is False and [o.outcome for o in out] == ["unconverted"]
    assert list(out)[0].closed("t1", "u:u1").journey_id == f"u:u1:unconverted:{T0}"
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 30 * 86_400)  # then the idle TTL
    clock[0] = 1000.0 + 30 * 86_400
    out, discard = lg.on_notify()
    assert discard is True and [o.outcome for o in out] == ["expired"]  # same path: the retrain keeps one


def test_without_the_archive_there_is_no_training_close() -> None:
    lg = logic(TenantConfig(idle_ttl_days=30, training_close_days=7))
    lg.on_item(touch("a", 0, "email"))
    assert lg.notify_at().timestamp() == pytest.approx(1000.0 + 30 * 86_400)


def test_no_archive_rows_unless_asked() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    out = feed(lg, touch("a", 0, "email"), conversion("v", 0.5, "o1"), touch("b", 1, "x"), touch("c", 9, "y"))
    assert not [r for r in out if isinstance(r, ClosedJourney)]
    assert lg.on_notify() == ((), True)


def test_duplicate_touch_delivery_is_kept_once_counted_once_and_dead_lettered() -> None:
    lg = logic()
    out = feed(lg, touch("a", 0, "email"), touch("a", 0, "email"))
    assert len(lg.state.touches) == 1
    assert [d.clicks for d in out if isinstance(d, KpiDelta)] == [1]
    (dup,) = [d for d in out if isinstance(d, DeadLetter)]
    assert dup.reason == "duplicate_event" and dup.event_id == "a"


def test_touch_ids_remembered_are_bounded() -> None:
    lg = logic()
    feed(lg, *(touch(f"t{i}", i * 0.01, "email") for i in range(RECENT_TOUCH_IDS + 5)))
    assert len(lg.state.recent_touch_ids) == RECENT_TOUCH_IDS * 8
    # a copy of the newest is still caught; a copy of one older than the window is counted again
    assert [d for d in feed(lg, touch(f"t{RECENT_TOUCH_IDS + 4}", 1, "email")) if isinstance(d, DeadLetter)]
    assert not [d for d in feed(lg, touch("t0", 1, "email")) if isinstance(d, DeadLetter)]


def test_first_and_last_utm_are_exposed_on_conversions() -> None:
    lg = logic()
    out = feed(
        lg,
        touch("a", 0, "email", utm=Utm(source="newsletter", medium="email")),
        touch("b", 1, "paid_search", utm=Utm(source="google", medium="cpc")),
        conversion("v", 2, "o"),
    )
    (conv,) = [r for r in out if isinstance(r, ConversionRow)]
    assert conv.first_utm.source == "newsletter" and conv.last_utm.source == "google"


def test_data_driven_uses_published_weights_and_their_version() -> None:
    lg = logic(weights=StaticWeights({"t1": (4, {"email": 3.0, "display": 1.0})}))
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "display"), conversion("v", 2, "o"))
    dd = [r for r in out if isinstance(r, CreditRow) and r.model == "data_driven"]
    assert {r.model_version for r in dd} == {4}
    assert {r.touch_event_id: r.credit for r in dd} == pytest.approx({"a": 0.75, "b": 0.25})


def test_kpi_deltas_follow_the_tenant_kpi_model() -> None:
    lg = logic(TenantConfig(kpi_model="linear"))
    out = feed(lg, touch("a", 0, "email"), touch("b", 1, "display"), conversion("v", 2, "o", 10.0))
    deltas = [r for r in out if isinstance(r, KpiDelta) and r.conversions]
    assert sorted((d.channel, d.conversions, d.revenue) for d in deltas) == [("display", 0.5, 5.0), ("email", 0.5, 5.0)]


def test_snapshot_is_a_copy() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"))
    snap = lg.snapshot()
    feed(lg, touch("b", 1, "email"))
    assert isinstance(snap, JourneyState) and len(snap.touches) == 1


# --------------------------------------------------------------------------- #
# Packed state (layout 3): ids, round trips, pickling, equivalence with the plain model
# --------------------------------------------------------------------------- #

UUID = "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    "text",
    [
        UUID,
        UUID.upper(),  # not canonical: kept as text
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5",  # 35 chars
        "6f1c3e0a-2b4d-4e6f-8a9b 0c1d2e3f4a5b",  # a blank where a dash belongs
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f 4a5",  # fromhex would skip the blank
        "6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5g",
        "",
        "a",
        "ord-1",
        "x" * 126,
        "x" * 127,  # the first length that takes two bytes
        "é" * 256,  # 512 UTF-8 bytes
        "\ud800lone surrogate",
        "emoji 🎯",
    ],
)
def test_packed_ids_round_trip_and_delimit_themselves(text: str) -> None:
    packed = pack_id(text)
    assert unpack_id(packed) == text
    assert len(packed) == (
        17 if text == UUID else len(text.encode("utf-8", "surrogatepass")) + (1 if len(packed) < 128 else 2)
    )
    assert split_ids(pack_id("a") + packed + pack_id(UUID)) == [pack_id("a"), packed, pack_id(UUID)]


@given(st.lists(st.text(max_size=300) | st.uuids().map(str), max_size=8))
def test_packed_ids_round_trip_property(texts: list[str]) -> None:
    joined = b"".join(pack_id(t) for t in texts)
    assert [unpack_id(p) for p in split_ids(joined)] == texts
    assert all((pack_id(a) == pack_id(b)) == (a == b) for a in texts for b in texts)


def test_an_id_too_long_to_pack_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        pack_id("x" * 40_000)


def _full_state() -> JourneyLogic:
    """A journey with touches (UUID and plain ids, ties), UTMs, conversions and digests."""
    lg = logic(TenantConfig(view_through=True))
    feed(
        lg,
        touch("a", 0, "email", utm=Utm(source="newsletter", medium="email")),
        touch(UUID, 1, "display", "impression", campaign="banner"),
        conversion("v", 1.5, "o1"),
        touch("b", 2, "paid_search", campaign="brand", utm=Utm("google", "cpc", "brand", "ad", "shoes")),
        touch("c", 2, "email"),  # same time as b
        touch("ünï", 3, "video", "page_view"),
        conversion("v2", 2.5, "o2"),
    )
    return lg


def test_state_unpacks_to_what_was_fed() -> None:
    st_ = _full_state().state
    assert st_.touches == [(T0 + 3 * DAY_MS, "page_view", "video", "", "ünï")]
    assert st_.consumed_until_ms == T0 + int(2.5 * DAY_MS)
    assert st_.last_event_ms == T0 + 3 * DAY_MS
    assert st_.last_seen_wall_s == 1000.0
    assert st_.first_utm == (T0, Utm(source="newsletter", medium="email"))
    assert st_.last_utm == (T0 + 2 * DAY_MS, Utm("google", "cpc", "brand", "ad", "shoes"))
    assert st_.seen_conversions == [("o1", T0 + int(1.5 * DAY_MS)), ("o2", T0 + int(2.5 * DAY_MS))]
    assert len(st_.recent_touch_ids) == 5 * 8


def test_pack_unpack_round_trip() -> None:
    st_ = _full_state().state
    j = Journey.unpack(st_.packed, st_.refs)
    assert j.pack() == (st_.packed, st_.refs)
    assert Journey.unpack(b"", ()).pack() == Journey().pack()


def test_snapshot_pickles_values_and_loads_shared_again(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = _full_state().snapshot()
    data = pickle.dumps(snap)
    assert b"creditflow.events" not in data  # UTMs travel as plain values
    # A fresh process has empty intern tables: the snapshot must not need them.
    monkeypatch.setattr(state.journey_state, "_metas", {})
    monkeypatch.setattr(state.journey_state, "_utms", {})
    loaded = pickle.loads(data)
    assert loaded == snap and loaded.layout == STATE_LAYOUT_VERSION
    assert loaded.touches == snap.touches and loaded.first_utm == snap.first_utm
    again = pickle.loads(data)
    assert again.refs[2] is loaded.refs[2]  # shared through the (new) intern table
    assert again.refs[1] is loaded.refs[1]


def test_a_resumed_journey_continues_exactly() -> None:
    lg = _full_state()
    resumed = JourneyLogic(lg._ctx.env, pickle.loads(pickle.dumps(lg.snapshot())))
    more = (touch("d", 4, "email"), conversion("v3", 5, "o3"), conversion("v3-retry", 5, "o1"))
    assert feed(resumed, *more) == feed(lg, *more)
    assert resumed.snapshot() == lg.snapshot()


# A snapshot pickled by layout 2 (the dataclass of lists), captured from that code.
LAYOUT_2_SNAPSHOT = bytes.fromhex(
    "80049574010000000000008c0e73746174652e6a6f75726e657973948c0c4a6f75726e657953746174659493942981944e7d94288c07746f"
    "7563686573945d94288a0600a8da769b018c05636c69636b948c05656d61696c948c026331948c026531947494618c11636f6e73756d6564"
    "5f756e74696c5f6d73944affffffff8c0d6c6173745f6576656e745f6d73948a0600a8da769b018c106c6173745f7365656e5f77616c6c5f"
    "739447408f4000000000008c0966697273745f75746d948a0600a8da769b018c11637265646974666c6f772e6576656e7473948c0355746d"
    "9493942981945d94288c0a6e6577736c65747465729468088c009468166816656286948c086c6173745f75746d948a0600a8da769b016812"
    "2981945d942868156808681668166816656286948c107365656e5f636f6e76657273696f6e73945d948c026f31948a0600a8da769b018694"
    "618c10726563656e745f746f7563685f6964739443083132333435363738948c066c61796f7574944b02758694622e"
)


def test_a_layout_2_snapshot_is_refused_by_the_state_guard() -> None:

    old = pickle.loads(LAYOUT_2_SNAPSHOT)
    assert isinstance(old, JourneyState) and old.layout == 2
    build = guarded_builder("journey", STATE_LAYOUT_VERSION, lambda resume: resume)
    with pytest.raises(
        StateLayoutError, match=f"snapshot has state layout 2, this code expects {STATE_LAYOUT_VERSION}"
    ):
        build(old)


def test_touches_are_pruned_exactly_at_the_lookback_horizon() -> None:
    lg = logic()
    feed(lg, touch("a", 0, "email"), touch("b", 1, "email"))
    feed(lg, PersonEvent("u:u1", Event("c", "t1", "click", T0 + 30 * DAY_MS, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["a", "b", "c"]  # "a" is exactly 30 days old: kept
    feed(lg, PersonEvent("u:u1", Event("d", "t1", "click", T0 + 30 * DAY_MS + 1, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["b", "c", "d"]
    lg = logic()
    feed(lg, touch("a", 0, "email"), touch("b", 1, "email"), touch("c", 31, "email"))
    assert [t[4] for t in lg.state.touches] == ["b", "c"]  # "b" is exactly 30 days old


def test_event_time_idle_ttl_is_exclusive() -> None:
    lg = logic(TenantConfig(idle_ttl_days=2))
    feed(lg, touch("a", 0, "email"), touch("b", 2, "email"))
    assert [t[4] for t in lg.state.touches] == ["a", "b"]  # exactly the TTL apart: the same journey
    feed(lg, PersonEvent("u:u1", Event("c", "t1", "click", T0 + 4 * DAY_MS + 1, POS, user_id="u1", channel="email")))
    assert [t[4] for t in lg.state.touches] == ["c"]


def test_a_touch_digest_counts_only_at_a_digest_boundary() -> None:
    digest = hashlib.blake2b(b"x", digest_size=8).digest()
    j = Journey()
    j.recent_touch_ids = b"\0" * 4 + digest + b"\0" * 4  # the digest of "x" straddles two remembered digests
    lg = logic()
    lg._packed, lg._refs = j.pack()
    assert not [d for d in feed(lg, touch("x", 0, "email")) if isinstance(d, DeadLetter)]
    assert [d for d in feed(lg, touch("x", 0, "email")) if isinstance(d, DeadLetter)]


def test_seen_conversions_are_bounded() -> None:
    lg = logic()
    feed(lg, *(conversion(f"v{i}", i * 0.01, f"o{i}") for i in range(MAX_SEEN_CONVERSIONS + 3)))
    seen = lg.state.seen_conversions
    assert [c for c, _ in seen] == [f"o{i}" for i in range(3, MAX_SEEN_CONVERSIONS + 3)]
    # forgotten once older than the idle TTL (event time)
    feed(lg, touch("late", 29.9, "email"))
    assert len(lg.state.seen_conversions) == MAX_SEEN_CONVERSIONS
    lg2 = logic(TenantConfig(idle_ttl_days=2))
    feed(lg2, conversion("v", 0, "o1"), touch("a", 1.5, "email"), touch("b", 2.5, "email"))
    assert lg2.state.seen_conversions == []


# -- the packed logic against the plain model it replaced (layout 2) --------------


class PlainJourney:
    """The journey of layout 2, lists of tuples, kept as the reference model."""

    def __init__(self, cfg: TenantConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.touches: list[tuple[int, str, str, str, str]] = []
        self.consumed = -1
        self.last = -1
        self.first_utm: tuple[int, Utm] | None = None
        self.last_utm: tuple[int, Utm] | None = None
        self.seen: list[tuple[str, int]] = []
        self.ids: list[str] = []

    def on_item(self, pe: PersonEvent) -> list:
        ev, cfg, out = pe.event, self.cfg, []
        if self.last >= 0 and ev.ts_ms - self.last > cfg.idle_ttl_ms:
            self.reset()
        self.last = max(self.last, ev.ts_ms)
        if ev.is_touch:
            if ev.event_id in self.ids:
                return [duplicate_event(ev)]
            self.ids = (self.ids + [ev.event_id])[-RECENT_TOUCH_IDS:]
            if not ev.utm.is_empty():
                if self.first_utm is None or ev.ts_ms < self.first_utm[0]:
                    self.first_utm = (ev.ts_ms, ev.utm)
                if self.last_utm is None or ev.ts_ms >= self.last_utm[0]:
                    self.last_utm = (ev.ts_ms, ev.utm)
            if is_touchpoint(pe, cfg) and ev.ts_ms > self.consumed:
                bisect.insort(self.touches, (ev.ts_ms, ev.event_type, ev.channel, ev.campaign_id, ev.event_id))
                del self.touches[: max(0, len(self.touches) - cfg.max_touches)]
            out.extend(d for d in [delta_of(ev, cfg.kpi_volume_source)] if d is not None)
        elif ev.event_type == "conversion":
            conv = ev.conversion
            assert conv is not None
            first = next((c for c in self.seen if c[0] == conv.conversion_id), None)
            if first is not None:
                out.append(duplicate_conversion(ev, f"this person's conversion at event time {first[1]} ms"))
            else:
                self.seen.append((conv.conversion_id, ev.ts_ms))
                eligible = eligible_touches(self.touches, ev.ts_ms, self.consumed, cfg)
                rows = credit_rows(pe, eligible, cfg)
                last_utm = next((u[1] for u in (self.last_utm, self.first_utm) if u and u[0] <= ev.ts_ms), EMPTY_UTM)
                out.extend(rows)
                out.append(
                    ConversionRow(
                        "t1",
                        conv.conversion_id,
                        pe.person_id,
                        ev.event_id,
                        ev.ts_ms,
                        conv.value,
                        conv.currency,
                        conv.type,
                        len(eligible),
                        bool(eligible),
                        eligible[0][2] if eligible else "",
                        eligible[-1][2] if eligible else "",
                        self.first_utm[1] if self.first_utm else EMPTY_UTM,
                        last_utm,
                    )
                )
                out.extend(
                    KpiDelta.conversion("t1", r.channel, r.campaign_id, ev.ts_ms, r.credit, r.revenue_credit, POS)
                    for r in rows
                    if r.model == cfg.kpi_model and r.credit > 0
                )
                self.touches = [t for t in self.touches if t[0] > ev.ts_ms]
                self.consumed = max(self.consumed, ev.ts_ms)
        horizon = self.last - max(cfg.lookback_ms("click"), cfg.lookback_ms("impression"))
        self.touches = [t for t in self.touches if t[0] >= horizon]
        self.seen = [c for c in self.seen if c[1] >= self.last - cfg.idle_ttl_ms][-MAX_SEEN_CONVERSIONS:]
        return out


HOUR = DAY_MS // 24
touch_events = st.builds(
    lambda eid, ms, etype, channel, campaign, utm: PersonEvent(
        "u:u1",
        Event(eid, "t1", etype, T0 + ms, POS, user_id="u1", channel=channel, campaign_id=campaign, utm=utm),
    ),
    st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", UUID, "ünï"]) | st.uuids().map(str),
    st.integers(0, 24 * 70).map(lambda h: h * HOUR) | st.sampled_from([0, 1, 30 * DAY_MS, 30 * DAY_MS + 1]),
    st.sampled_from(["click", "page_view", "impression"]),
    st.sampled_from(["email", "display", "paid_search", "(internal)"]),
    st.sampled_from(["", "c1", "c2"]),
    st.sampled_from([EMPTY_UTM, Utm("google", "cpc"), Utm("newsletter", "email", "spring", "a", "b")]),
)
conversion_events = st.builds(
    lambda eid, ms, cid, value: PersonEvent(
        "u:u1",
        Event(eid, "t1", "conversion", T0 + ms, POS, user_id="u1", conversion=Conversion(cid, value, "EUR")),
    ),
    st.sampled_from(["v1", "v2", "v3"]),
    st.integers(0, 24 * 70).map(lambda h: h * HOUR) | st.sampled_from([1, 2 * DAY_MS + 1, 30 * DAY_MS + 1]),
    st.sampled_from(["o1", "o2", "o3", "o4", UUID]),
    st.sampled_from([0.0, 10.0, 99.5]),
)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(touch_events | conversion_events, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    cfg=st.builds(
        TenantConfig,
        view_through=st.booleans(),
        max_touches=st.sampled_from([1, 3, 50]),
        idle_ttl_days=st.sampled_from([2.0, 30.0]),
        lookback_days=st.sampled_from([1.0, 30.0]),
    ),
)
def test_packed_logic_equals_the_plain_model(events: list[PersonEvent], cuts: list[int], cfg: TenantConfig) -> None:
    """Any events, in batches of any size, resumed from pickled snapshots at the cuts: same output, same state."""
    plain = PlainJourney(cfg)
    expected = [r for pe in events for r in plain.on_item(pe)]
    lg = logic(cfg)
    got: list = []
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        emitted, discard = lg.on_batch(events[lo:hi])
        assert discard is False
        got.extend(r for e in emitted for r in (e.rows() if isinstance(e, ScoredConversion) else [e]))
        lg = JourneyLogic(lg._ctx.env, pickle.loads(pickle.dumps(lg.snapshot())))
    assert got == expected
    state = lg.state
    assert state.touches == plain.touches
    assert (state.consumed_until_ms, state.last_event_ms) == (plain.consumed, plain.last)
    assert (state.first_utm, state.last_utm) == (plain.first_utm, plain.last_utm)
    assert state.seen_conversions == plain.seen
    assert len(state.recent_touch_ids) == 8 * len(plain.ids)
