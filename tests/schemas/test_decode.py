"""Decoder tests: valid events of every type, one test per dead-letter reason, fuzzing."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditflow.events import (
    DEAD_LETTER_REASONS,
    EMPTY_UTM,
    EVENT_TYPES,
    RAW_CAP_BYTES,
    Context,
    Conversion,
    DeadLetter,
    Event,
    RawRecord,
    SourcePosition,
    SpendMetrics,
    Utm,
)
from creditflow.pii import PiiHasher
from schemas.decode import MAX_PAYLOAD_BYTES, decode, decode_mapping, encode_avro
from schemas.registry import LATEST_VERSION, SCHEMA_VERSIONS, allowed_fields

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POS = SourcePosition("test", "p0", "42")


def base(event_type: str, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": f"e-{event_type}",
        "tenant_id": "acme",
        "event_type": event_type,
        "timestamp": NOW - 60_000,
    }
    ev.update(extra)
    return ev


VALID: dict[str, dict[str, Any]] = {
    "impression": base("impression", anonymous_id="a1", channel="display", campaign_id="c1", utm={"source": "dv360"}),
    "click": base(
        "click",
        timestamp="2026-01-01T00:00:00Z",
        anonymous_id="a1",
        user_id="u1",
        device_id="d1",
        channel="paid_search",
        campaign_id="c1",
        utm={"source": "google", "medium": "cpc", "campaign": "spring", "content": "ad1", "term": "shoes"},
        click_ids={"gclid": "Cj0KCQ", "fbclid": "", "msclkid": None},
        referrer="https://www.google.com/",
        context={"ip": "10.0.0.1", "user_agent": "Mozilla/5.0", "device_type": "mobile", "country": "DE"},
        metadata={"page": "/landing", "ab": [1, 2]},
    ),
    "page_view": base("page_view", timestamp="2026-01-01T02:00:00+02:00", device_id="d1", referrer="x"),
    "conversion": base(
        "conversion",
        user_id="u1",
        conversion={"conversion_id": "o-1", "value": 99.5, "currency": "eur", "type": "purchase"},
    ),
    "ad_spend": base(
        "ad_spend",
        channel="paid_social",
        campaign_id="c2",
        metrics={"impressions": 1000, "clicks": 10, "cost": 12.5, "conversions": 2},
    ),
    "identify": base("identify", anonymous_id="a1", user_id="u1", traits={"email": "x@example.com"}),
    "consent": base("consent", anonymous_id="a1", consent={"analytics": True, "marketing": False}),
    "deletion_request": base("deletion_request", user_id="u1"),
}
assert set(VALID) == EVENT_TYPES

V2_ONLY = {"identify", "consent"}  # the ones using fields added in v2


def record(obj: Any, fmt: str = "json", version: int | None = None) -> RawRecord:
    if fmt == "json":
        payload = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        return RawRecord(payload, POS)
    return RawRecord(encode_avro(obj, version), POS, format="avro", schema_version=version)


def dead(obj: Any, reason: str, *names: str, fmt: str = "json") -> DeadLetter:
    """Decode ``obj``, assert a dead letter of ``reason`` whose detail names every one of ``names``."""
    dl = decode(record(obj, fmt), NOW)
    assert isinstance(dl, DeadLetter), dl
    assert dl.reason == reason, dl.detail
    for name in names:
        assert name in dl.detail, dl.detail
    assert dl.position == POS
    return dl


# ---------------------------------------------------------------- valid events


@pytest.mark.parametrize("fmt", ["json", "avro"])
@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_valid_event_of_every_type(event_type: str, fmt: str) -> None:
    src = VALID[event_type]
    ev = decode(record(src, fmt), NOW)
    assert isinstance(ev, Event), ev
    assert (ev.event_id, ev.tenant_id, ev.event_type) == (src["event_id"], "acme", event_type)
    assert ev.position == POS
    assert ev.schema_version == LATEST_VERSION
    assert ev.ts_ms == (NOW if isinstance(src["timestamp"], str) else src["timestamp"])
    assert ev.anonymous_id == src.get("anonymous_id", "")
    assert ev.user_id == src.get("user_id", "")
    assert ev.device_id == src.get("device_id", "")


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_click_fields(fmt: str) -> None:
    ev = decode(record(VALID["click"], fmt), NOW)
    assert isinstance(ev, Event)
    assert ev.utm == Utm("google", "cpc", "spring", "ad1", "shoes")
    assert dict(ev.click_ids) == {"gclid": "Cj0KCQ"}  # empty/null click ids dropped
    assert ev.context == Context("10.0.0.1", "Mozilla/5.0", "mobile", "DE")
    assert ev.referrer == "https://www.google.com/"
    assert (ev.channel, ev.campaign_id) == ("paid_search", "c1")
    assert ev.metadata == {"page": "/landing", "ab": [1, 2]}
    assert ev.conversion is None and ev.metrics is None
    assert ev.is_touch


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_conversion_spend_identify_consent_fields(fmt: str) -> None:
    conv = decode(record(VALID["conversion"], fmt), NOW)
    assert isinstance(conv, Event)
    assert conv.conversion == Conversion("o-1", 99.5, "EUR", "purchase")
    assert conv.utm is EMPTY_UTM and dict(conv.click_ids) == {} and conv.metadata is None
    spend = decode(record(VALID["ad_spend"], fmt), NOW)
    assert isinstance(spend, Event)
    assert spend.metrics == SpendMetrics(1000, 10, 12.5, 2)
    ident = decode(record(VALID["identify"], fmt), NOW)
    hashed = PiiHasher.unkeyed().hash_email("acme", "x@example.com")  # the decoder's default hasher
    assert isinstance(ident, Event) and ident.metadata == {"traits": {"email": hashed}}
    consent = decode(record(VALID["consent"], fmt), NOW)
    assert isinstance(consent, Event)
    assert consent.metadata == {"consent": {"analytics": True, "marketing": False}}


def test_conversion_value_defaults_to_zero_and_accepts_integers() -> None:
    ev = decode(record(base("conversion", user_id="u", conversion={"conversion_id": "o"})), NOW)
    assert isinstance(ev, Event) and ev.conversion == Conversion("o", 0.0, "", "")
    ev = decode(record(base("conversion", user_id="u", conversion={"conversion_id": "o", "value": 5})), NOW)
    assert isinstance(ev, Event) and ev.conversion is not None and ev.conversion.value == 5.0


def test_metadata_merges_with_traits() -> None:
    ev = decode(record(dict(VALID["identify"], metadata={"src": "crm"})), NOW)
    assert isinstance(ev, Event)
    assert ev.metadata == {"src": "crm", "traits": {"email": PiiHasher.unkeyed().hash_email("acme", "x@example.com")}}


def test_metadata_as_serialized_json_object() -> None:
    # how Avro carries it, and how Avro container files re-encoded to JSON deliver it
    ev = decode(record(dict(VALID["click"], metadata='{"page": "/x"}')), NOW)
    assert isinstance(ev, Event) and ev.metadata == {"page": "/x"}


def test_optional_fields_may_be_null() -> None:
    ev = decode(record(base("click", user_id="u", anonymous_id=None, utm=None, metadata=None, channel=None)), NOW)
    assert isinstance(ev, Event) and ev.utm is EMPTY_UTM and ev.channel == "" and ev.anonymous_id == ""


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES - V2_ONLY))
def test_avro_written_with_v1_is_read_with_latest(event_type: str) -> None:
    ev = decode(record(VALID[event_type], "avro", version=1), NOW)
    assert isinstance(ev, Event), ev
    assert ev.schema_version == 1
    from_json = decode(record(VALID[event_type], "json"), NOW)
    assert isinstance(from_json, Event)
    assert ev == dataclasses.replace(from_json, schema_version=1)


@pytest.mark.parametrize("version", sorted(SCHEMA_VERSIONS))
def test_json_schema_version_field(version: int) -> None:
    ev = decode(record(dict(VALID["click"], schema_version=version)), NOW)
    assert isinstance(ev, Event) and ev.schema_version == version


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01T00:00:00+00:00", NOW),
        ("2026-01-01T02:00:00+02:00", NOW),
        ("2025-12-31T19:00:00-05:00", NOW),
        ("2026-01-01T00:00:00.123Z", NOW + 123),
        ("2026-01-01T00:00:00.123999+00:00", NOW + 123),
        (NOW, NOW),
        (NOW - 1, NOW - 1),
        (NOW + 86_400_000, NOW + 86_400_000),  # exactly 24 h ahead is still fine
        (946_684_800_000, 946_684_800_000),  # 2000-01-01
    ],
)
def test_timestamps(ts: Any, expected: int) -> None:
    ev = decode(record(base("click", user_id="u", timestamp=ts)), NOW)
    assert isinstance(ev, Event), ev
    assert ev.ts_ms == expected
    ev = decode(record(base("click", user_id="u", timestamp=ts), "avro"), NOW)
    assert isinstance(ev, Event) and ev.ts_ms == expected


def test_naive_timestamp_hint() -> None:
    dl = dead(base("click", user_id="u", timestamp="2026-01-01T00:00:00"), "invalid_timestamp")
    assert dl.detail == "field 'timestamp' has no UTC offset: '2026-01-01T00:00:00'; append 'Z' or '+00:00'"


@pytest.mark.parametrize(
    ("ts", "hint"),
    [
        (1_767_225_600, "milliseconds"),  # seconds
        (0, "milliseconds"),
        (-5, "milliseconds"),
        (946_684_799_999, "2000-01-01"),
        ("1999-12-31T23:59:59Z", "2000-01-01"),
        (NOW + 86_400_001, "future"),
        (NOW * 1000, "future"),  # microseconds
        ("2030-01-01T00:00:00Z", "future"),
        (1.767e12, "float"),
        (True, "boolean"),
        ("yesterday", "ISO-8601"),
        ("2026-13-01T00:00:00Z", "ISO-8601"),
        ("2026-01-01", "UTC offset"),
        ("", "ISO-8601"),
        ([1], "ISO-8601"),
        ({"ms": 1}, "ISO-8601"),
    ],
)
def test_invalid_timestamps(ts: Any, hint: str) -> None:
    dl = dead(base("click", user_id="u", timestamp=ts), "invalid_timestamp", "'timestamp'", hint)
    assert (dl.event_id, dl.tenant_id, dl.event_type) == ("e-click", "acme", "click")


# ---------------------------------------------------------------- dead letters, one reason at a time


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b'{"event_id": "e1", "tenant_id": ',
        b'{"event_id": NaN}',
        b'{"value": Infinity}',
        b"[1, 2]",
        b'"just a string"',
        b"null",
        b"\xff\xfe\x00",
        b'{"a": 1} trailing',
        b"[" * 5000,
    ],
)
def test_parse_error(payload: bytes) -> None:
    dl = dead(payload, "parse_error", "JSON")
    assert dl.raw == payload[:RAW_CAP_BYTES]


@pytest.mark.parametrize(
    ("payload", "version"),
    [(b"", None), (b"\x02e", None), (b"\xff" * 20, None), (encode_avro(VALID["click"]) + b"\x00", None)],
)
def test_avro_parse_error(payload: bytes, version: int | None) -> None:
    dl = decode(RawRecord(payload, POS, format="avro", schema_version=version), NOW)
    assert isinstance(dl, DeadLetter) and dl.reason == "parse_error"
    assert "Avro" in dl.detail


def test_avro_unknown_writer_version() -> None:
    dl = decode(RawRecord(encode_avro(VALID["click"]), POS, format="avro", schema_version=99), NOW)
    assert isinstance(dl, DeadLetter) and dl.reason == "schema_violation" and "99" in dl.detail


def test_unknown_format() -> None:
    dl = decode(RawRecord(b"{}", POS, format="xml"), NOW)  # type: ignore[arg-type]
    assert isinstance(dl, DeadLetter) and dl.reason == "parse_error" and "'json'" in dl.detail


def test_unknown_top_level_field_is_named_and_allowed_listed() -> None:
    dl = dead(dict(VALID["click"], utm_source="google"), "schema_violation", "'utm_source'", "event_id", "metadata")
    assert dl.event_id == "e-click"


def test_v2_field_on_v1_event() -> None:
    dead(dict(VALID["consent"], schema_version=1), "schema_violation", "'consent'", "schema_version")


@pytest.mark.parametrize("sv", [0, 99, "2", 1.0, True])
def test_unknown_schema_version(sv: Any) -> None:
    dead(dict(VALID["click"], schema_version=sv), "schema_violation", "'schema_version'")


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ({"event_id": None}, "'event_id'"),
        ({"event_id": ""}, "'event_id'"),
        ({"event_id": "  "}, "'event_id'"),
        ({"event_id": 123}, "'event_id'"),
        ({"tenant_id": ["acme"]}, "'tenant_id'"),
        ({"event_id": "x" * 257}, "'event_id'"),
        ({"event_id": "e\n1"}, "'event_id'"),
        ({"user_id": "u\x00"}, "'user_id'"),
        ({"channel": "paid\x7f"}, "'channel'"),
        ({"campaign_id": "c\t1"}, "'campaign_id'"),
        ({"utm": {"source": "goo\x1fgle"}}, "'utm.source'"),
        ({"click_ids": {"gclid": "a\rb"}}, "'click_ids.gclid'"),
        ({"click_ids": {"gclid": 5}}, "'click_ids.gclid'"),
        ({"click_ids": ["gclid"]}, "'click_ids'"),
        ({"event_type": 7}, "'event_type'"),
        ({"event_type": None}, "'event_type'"),
        ({"referrer": "r" * 2049}, "'referrer'"),
        ({"utm": "google"}, "'utm'"),
        ({"utm": {"utm_source": "google"}}, "utm.utm_source"),
        ({"context": {"locale": "de"}}, "context.locale"),
        ({"context": {"ip": 1234}}, "'context.ip'"),
        ({"conversion": {"conversion_id": "o"}}, "'conversion'"),
        ({"metrics": {"impressions": 1, "clicks": 0, "cost": 0}}, "'metrics'"),
        ({"metadata": [1, 2]}, "'metadata'"),
        ({"metadata": "[1, 2]"}, "'metadata'"),
        ({"metadata": "not json"}, "'metadata'"),
        ({"consent": {"analytics": "yes"}}, "'consent.analytics'"),
        ({"consent": {"": True}}, "'consent'"),
        ({"traits": {"email": 5}}, "'traits.email'"),
        ({"traits": "x"}, "'traits'"),
    ],
)
def test_schema_violation_names_field(mutation: dict[str, Any], field: str) -> None:
    dead(dict(VALID["click"], **mutation), "schema_violation", field)


@pytest.mark.parametrize("event_type", sorted({"impression", "click", "page_view", "conversion"} | V2_ONLY))
def test_person_id_required(event_type: str) -> None:
    ev = {k: v for k, v in VALID[event_type].items() if k not in ("anonymous_id", "user_id", "device_id")}
    dead(dict(ev, user_id=""), "schema_violation", "'anonymous_id'", "'user_id'", "'device_id'")


def test_ad_spend_needs_no_person() -> None:
    assert isinstance(decode(record(VALID["ad_spend"]), NOW), Event)


@pytest.mark.parametrize(
    ("conversion", "field"),
    [
        ({"conversion_id": ""}, "'conversion.conversion_id'"),
        ({"value": 5}, "'conversion.conversion_id'"),
        ({"conversion_id": "o", "value": -1}, "'conversion.value'"),
        ({"conversion_id": "o", "value": "5"}, "'conversion.value'"),
        ({"conversion_id": "o", "value": True}, "'conversion.value'"),
        ({"conversion_id": "o", "currency": "EURO"}, "'conversion.currency'"),
        ({"conversion_id": "o", "currency": "E1R"}, "'conversion.currency'"),
        ({"conversion_id": "o", "revenue": 5}, "conversion.revenue"),
        ("o-1", "'conversion'"),
    ],
)
def test_conversion_violations(conversion: Any, field: str) -> None:
    dead(dict(VALID["conversion"], conversion=conversion), "schema_violation", field)


def test_conversion_value_must_be_finite_from_avro() -> None:
    ev = dict(VALID["conversion"], conversion={"conversion_id": "o", "value": float("inf")})
    dead(ev, "schema_violation", "'conversion.value'", "finite", fmt="avro")


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        ({"metrics": None}, "'metrics'"),
        ({"channel": ""}, "'channel'"),
        ({"campaign_id": None}, "'campaign_id'"),
        ({"metrics": {"impressions": 1, "clicks": 1}}, "'metrics.cost'"),
        ({"metrics": {"impressions": 1.5, "clicks": 1, "cost": 1}}, "'metrics.impressions'"),
        ({"metrics": {"impressions": 1, "clicks": "1", "cost": 1}}, "'metrics.clicks'"),
        ({"metrics": {"impressions": 1, "clicks": 1, "cost": 1, "conversions": False}}, "'metrics.conversions'"),
        ({"metrics": {"impressions": 1, "clicks": 1, "cost": 1, "ctr": 1.0}}, "metrics.ctr"),
    ],
)
def test_ad_spend_schema_violations(mutation: dict[str, Any], field: str) -> None:
    dead(dict(VALID["ad_spend"], **mutation), "schema_violation", field)


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"impressions": -1, "clicks": 0, "cost": 0}, "'metrics.impressions'"),
        ({"impressions": 10, "clicks": -1, "cost": 0}, "'metrics.clicks'"),
        ({"impressions": 10, "clicks": 1, "cost": -0.5}, "'metrics.cost'"),
        ({"impressions": 10, "clicks": 1, "cost": 1, "conversions": -2}, "'metrics.conversions'"),
        ({"impressions": 10, "clicks": 11, "cost": 1}, "'metrics.clicks'"),
        ({"impressions": 10, "clicks": 5, "cost": 1, "conversions": 6}, "'metrics.conversions'"),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_quality_violation(metrics: dict[str, Any], field: str, fmt: str) -> None:
    dl = dead(dict(VALID["ad_spend"], metrics=metrics), "quality_violation", field, fmt=fmt)
    assert (dl.tenant_id, dl.event_id, dl.event_type) == ("acme", "e-ad_spend", "ad_spend")


def test_schema_violation_wins_over_quality() -> None:
    ev = dict(VALID["ad_spend"], metrics={"impressions": 1, "clicks": 5, "cost": 1}, metadata="x")
    dead(ev, "schema_violation", "'metadata'")


def test_unknown_event_type() -> None:
    dl = dead(dict(VALID["click"], event_type="purchase"), "unknown_event_type", "'event_type'", "'purchase'", "click")
    assert dl.event_type == "purchase"


def test_size_violation_payload() -> None:
    ev = dict(VALID["click"], referrer="x" * 2000)
    payload = orjson.dumps(ev)
    payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES + 1 - len(payload)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES + 1
    dl = dead(payload, "size_violation", "32768")
    assert len(dl.raw) == RAW_CAP_BYTES
    assert dl.event_id == ""  # not parsed
    out = decode(RawRecord(payload, POS, format="avro"), NOW)
    assert isinstance(out, DeadLetter) and out.reason == "size_violation"
    # exactly at the limit is fine
    ok = payload[:-2] + b"}"
    assert isinstance(decode(record(ok), NOW), Event)


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_size_violation_metadata(fmt: str) -> None:
    dead(dict(VALID["click"], metadata={"blob": "x" * 2040}), "size_violation", "'metadata'", "2048", fmt=fmt)
    ok = dict(VALID["click"], metadata={"blob": "x" * (2048 - len('{"blob":""}'))})
    assert isinstance(decode(record(ok, fmt), NOW), Event)


def test_decode_mapping_accepts_any_mapping_and_rejects_non_mappings() -> None:
    from types import MappingProxyType

    ev = decode_mapping(MappingProxyType(VALID["conversion"]), RawRecord(b"", POS), NOW)
    assert isinstance(ev, Event) and ev.conversion is not None
    dl = decode_mapping([1, 2], RawRecord(b"", POS), NOW)  # type: ignore[arg-type]
    assert isinstance(dl, DeadLetter) and dl.reason == "schema_violation"
    dl = decode_mapping({1: "x"}, RawRecord(b"", POS), NOW)  # type: ignore[dict-item]
    assert isinstance(dl, DeadLetter) and dl.reason == "schema_violation" and "unknown field 1" in dl.detail


def test_huge_numbers_and_odd_types_do_not_raise() -> None:
    for value in (10**400, -(10**5000), float("nan"), b"bytes", object(), {1, 2}):
        for field in ("timestamp", "conversion"):
            dl = decode_mapping(dict(VALID["conversion"], **{field: value}), RawRecord(b"", POS), NOW)
            assert isinstance(dl, DeadLetter) and dl.reason in DEAD_LETTER_REASONS
        conv = {"conversion_id": "o", "value": value}
        dl = decode_mapping(dict(VALID["conversion"], conversion=conv), RawRecord(b"", POS), NOW)
        assert isinstance(dl, DeadLetter) and "'conversion.value'" in dl.detail
    dl = decode_mapping(dict(VALID["click"], event_id=10**5000), RawRecord(b"", POS), NOW)
    assert isinstance(dl, DeadLetter) and "integer of" in dl.detail and "'event_id'" in dl.detail


# ---------------------------------------------------------------- removing required fields


def _required_paths(event_type: str) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [("event_id",), ("tenant_id",), ("event_type",), ("timestamp",)]
    if event_type == "conversion":
        paths += [("conversion",), ("conversion", "conversion_id")]
    if event_type == "ad_spend":
        paths += [("channel",), ("campaign_id",), ("metrics",)]
        paths += [("metrics", name) for name in ("impressions", "clicks", "cost")]
    if event_type == "consent":
        paths += [("consent",)]
    return paths


REQUIRED = [(et, path) for et in sorted(EVENT_TYPES) for path in _required_paths(et)]


@pytest.mark.parametrize("replacement", ["remove", None])
@pytest.mark.parametrize(("event_type", "path"), REQUIRED, ids=[f"{et}:{'.'.join(p)}" for et, p in REQUIRED])
def test_removing_a_required_field_dead_letters(event_type: str, path: tuple[str, ...], replacement: Any) -> None:
    ev = copy.deepcopy(VALID[event_type])
    target = ev
    for key in path[:-1]:
        target = target[key]
    if replacement == "remove":
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
    fmts = ["json"]
    if len(path) == 1 and path[0] not in ("event_id", "tenant_id", "event_type", "timestamp"):
        fmts.append("avro")  # Avro cannot even write the others without them
    for fmt in fmts:
        dl = decode(record(ev, fmt), NOW)
        assert isinstance(dl, DeadLetter), (fmt, dl)
        assert dl.reason == "schema_violation"
        assert f"'{'.'.join(path)}'" in dl.detail, dl.detail


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_hypothesis_remove_required_field(data: st.DataObject) -> None:
    event_type, path = data.draw(st.sampled_from(REQUIRED))
    ev = copy.deepcopy(VALID[event_type])
    target = ev
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    extra: dict[str, Any] = data.draw(st.sampled_from([{}, {"schema_version": 1}, {"metadata": {"k": "v"}}]))
    if event_type not in V2_ONLY:
        ev.update(extra)
    dl = decode(record(ev), NOW)
    assert isinstance(dl, DeadLetter) and dl.reason == "schema_violation"


# ---------------------------------------------------------------- fuzzing: never raise

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _assert_result(out: Any) -> None:
    assert isinstance(out, Event | DeadLetter)
    if isinstance(out, DeadLetter):
        assert out.reason in DEAD_LETTER_REASONS
        assert out.detail
        assert len(out.raw) <= RAW_CAP_BYTES
        assert out.position == POS


@given(payload=st.binary(max_size=512), fmt=st.sampled_from(["json", "avro"]), version=st.sampled_from([None, 1, 2, 7]))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_never_raise(payload: bytes, fmt: str, version: int | None) -> None:
    _assert_result(decode(RawRecord(payload, POS, format=fmt, schema_version=version), NOW))  # type: ignore[arg-type]


@given(value=json_values)
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_never_raises(value: Any) -> None:
    _assert_result(decode(RawRecord(orjson.dumps(value), POS), NOW))
    _assert_result(decode_mapping(value, RawRecord(b"", POS), NOW))


@given(
    event_type=st.sampled_from(sorted(EVENT_TYPES)),
    field=st.sampled_from(sorted(allowed_fields(LATEST_VERSION))),
    value=json_values,
    nested=st.booleans(),
)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_wrong_types_everywhere_never_raise(event_type: str, field: str, value: Any, nested: bool) -> None:
    ev = copy.deepcopy(VALID[event_type])
    if nested and isinstance(ev.get(field), dict) and ev[field]:
        ev[field][sorted(ev[field])[0]] = value
    else:
        ev[field] = value
    out = decode(record(ev), NOW)
    _assert_result(out)
    try:
        avro = encode_avro(ev)
    except Exception:
        return  # not representable in Avro
    _assert_result(decode(RawRecord(avro, POS, format="avro"), NOW))


def test_deeply_nested_json_never_raises() -> None:
    deep = b'{"event_id": "e", "metadata": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
    _assert_result(decode(RawRecord(deep, POS), NOW))
    nested: Any = 1
    for _ in range(600):
        nested = {"a": nested}
    ev = dict(VALID["click"], metadata=nested)
    _assert_result(decode_mapping(ev, RawRecord(b"", POS), NOW))


@given(
    event_type=st.sampled_from(sorted(EVENT_TYPES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    version=st.sampled_from([None, 1]),
)
@settings(max_examples=500, deadline=None)
def test_corrupted_avro_never_raises(event_type: str, edits: list[tuple[int, int]], version: int | None) -> None:
    src = VALID[event_type]
    if version == 1 and event_type in V2_ONLY:
        version = None
    payload = bytearray(encode_avro(src, version))
    for pos, byte in edits:
        payload[pos % len(payload)] = byte
    _assert_result(decode(RawRecord(bytes(payload), POS, format="avro", schema_version=version), NOW))


def test_source_error_payload_is_dead_lettered_with_the_sources_message() -> None:
    from creditflow.events import RawRecord, SourcePosition
    from schemas.decode import decode
    from sources import error_payload

    rec = RawRecord(
        error_payload("redis stream entry has neither a 'data' nor an 'avro' field"),
        SourcePosition("redis", "s", "1-0"),
    )
    dead = decode(rec, 1_767_225_600_000)
    assert dead.reason == "source_error"
    assert "neither a 'data' nor an 'avro' field" in dead.detail
