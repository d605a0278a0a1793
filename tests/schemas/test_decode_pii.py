"""The decoder hashes PII traits and scrubs dead letters (``creditflow.pii``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditflow.events import RAW_CAP_BYTES, DeadLetter, Event, RawRecord, SourcePosition
from creditflow.pii import PiiHasher, is_hashed
from schemas.decode import MAX_PAYLOAD_BYTES, decode, decode_mapping, encode_avro
from sources import error_payload

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POS = SourcePosition("test", "p0", "1")
PII = PiiHasher(b"k" * 32)
EMAIL = "Ann.Lee@Example.com"
PHONE = "+1 (555) 010-0100"
IP = "203.0.113.7"


def identify(email: str = EMAIL, phone: str = PHONE, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": "id-1",
        "tenant_id": "acme",
        "event_type": "identify",
        "timestamp": NOW - 1000,
        "anonymous_id": "a1",
        "user_id": "u1",
        "traits": {"email": email, "phone_number": phone, "plan": "pro"},
        "context": {"ip": IP, "user_agent": "Mozilla/5.0", "device_type": "desktop", "country": "DE"},
    }
    ev.update(extra)
    return ev


def run(payload: bytes | dict[str, Any], fmt: str = "json") -> Event | DeadLetter:
    if isinstance(payload, dict):
        payload = orjson.dumps(payload) if fmt == "json" else encode_avro(payload)
    return decode(RawRecord(payload, POS, format=fmt), NOW, PII)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_identify_traits_are_hashed(fmt: str) -> None:
    ev = run(identify(), fmt)
    assert isinstance(ev, Event) and ev.metadata is not None
    assert ev.metadata["traits"] == {
        "email": PII.hash_email("acme", "ann.lee@example.com"),
        "phone_number": PII.hash_phone("acme", "+15550100100"),
        "plan": "pro",
    }
    assert all(is_hashed(ev.metadata["traits"][k]) for k in ("email", "phone_number"))


def test_case_and_whitespace_do_not_change_the_hash_but_the_tenant_does() -> None:
    a, b, c = (run(identify(email=e)) for e in (EMAIL, "  ann.lee@EXAMPLE.COM\t", "ann.lee@example.com"))
    other = run(identify(tenant_id="globex"))
    traits = [x.metadata["traits"]["email"] for x in (a, b, c, other)]  # type: ignore[union-attr,index]
    assert traits[0] == traits[1] == traits[2] != traits[3]


def test_a_redecoded_event_keeps_its_hashes() -> None:
    ev = run(identify())
    assert isinstance(ev, Event) and ev.metadata is not None
    again = run(identify(email=ev.metadata["traits"]["email"], phone=ev.metadata["traits"]["phone_number"]))
    assert isinstance(again, Event) and again.metadata == ev.metadata


def test_metadata_pii_keys_are_hashed_at_any_depth() -> None:
    md = {"Email": EMAIL, "crm": {"contacts": [{"phone": PHONE}]}, "page": "/x"}
    ev = run(identify(metadata=md, traits=None))
    assert isinstance(ev, Event)
    assert ev.metadata == {
        "Email": PII.hash_email("acme", EMAIL),
        "crm": {"contacts": [{"phone": PII.hash_phone("acme", PHONE)}]},
        "page": "/x",
    }
    assert md["Email"] == EMAIL  # the caller's object is not modified
    ev = decode_mapping(identify(metadata=orjson.dumps(md).decode()), RawRecord(b"", POS), NOW, PII)
    assert isinstance(ev, Event) and EMAIL not in repr(ev)


def test_the_default_hasher_is_the_unkeyed_one() -> None:
    ev = decode(RawRecord(orjson.dumps(identify()), POS), NOW)
    assert isinstance(ev, Event) and ev.metadata is not None
    assert ev.metadata["traits"]["email"] == PiiHasher.unkeyed().hash_email("acme", EMAIL)


BROKEN: dict[str, tuple[bytes, str]] = {
    "truncated JSON": (orjson.dumps(identify())[:-30], "json"),
    "invalid timestamp": (orjson.dumps(identify(timestamp="yesterday")), "json"),
    "unknown field": (orjson.dumps(identify(mail=EMAIL)), "json"),
    "phone as a number": (orjson.dumps(identify(phone=15550100100)), "json"),
    "not an object": (orjson.dumps([identify()]), "json"),
    "size violation": (orjson.dumps(identify(referrer="x" * MAX_PAYLOAD_BYTES)), "json"),
    "avro invalid timestamp": (encode_avro(identify(timestamp=17)), "avro"),
    "avro trailing bytes": (encode_avro(identify()) + b"\x00", "avro"),
    "source error": (error_payload("bad entry", fields={"payload": orjson.dumps(identify()).decode()}), "json"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_dead_letters_hold_no_email_phone_or_ip(case: str) -> None:
    payload, fmt = BROKEN[case]
    dl = run(payload, fmt)
    assert isinstance(dl, DeadLetter), dl
    for value in (EMAIL, EMAIL.lower(), PHONE, "15550100100", IP):
        assert value.encode() not in dl.raw, (value, dl.raw)
        assert value not in dl.detail, (value, dl.detail)
    assert dl.raw and len(dl.raw) <= RAW_CAP_BYTES


def test_a_parsed_dead_letter_keeps_its_shape_with_hashed_traits() -> None:
    dl = run(identify(timestamp="yesterday"))
    assert isinstance(dl, DeadLetter) and dl.reason == "invalid_timestamp"
    raw = orjson.loads(dl.raw)
    assert raw["traits"]["email"] == PII.hash_email("acme", EMAIL)
    assert raw["context"]["ip"] == "[ip]" and raw["timestamp"] == "yesterday" and raw["user_id"] == "u1"
    fixed = run(dict(raw, timestamp=NOW - 1000))  # a fixed and replayed dead letter hashes alike
    assert isinstance(fixed, Event) and fixed.metadata == run(identify()).metadata  # type: ignore[union-attr]


def test_the_phone_of_a_wrongly_typed_trait_is_not_in_the_detail() -> None:
    dl = run(identify(phone=15550100100))
    assert isinstance(dl, DeadLetter) and dl.reason == "schema_violation"
    assert "traits.phone_number" in dl.detail and "15550100100" not in dl.detail


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    email=st.emails(),
    field=st.sampled_from(["traits", "metadata", "nested"]),
    breakage=st.sampled_from(["none", "timestamp", "truncate", "unknown_field", "avro", "avro_bad_ts"]),
    cut=st.integers(1, 200),
)
def test_no_decoded_event_or_dead_letter_contains_the_email(email: str, field: str, breakage: str, cut: int) -> None:
    if field == "traits":
        ev = identify(email=email)
    elif field == "metadata":
        ev = identify(metadata={"email_address": email}, traits=None)
    else:
        ev = identify(metadata={"people": [{"contact": {"EMAIL": email}}]}, traits=None)
    fmt = "json"
    if breakage == "timestamp":
        ev["timestamp"] = "not a time"
    elif breakage == "unknown_field":
        ev["surprise"] = 1
    elif breakage == "avro_bad_ts":
        ev["timestamp"] = 17
    if breakage.startswith("avro"):
        fmt = "avro"
        payload = encode_avro(ev)
    else:
        payload = orjson.dumps(ev)
        if breakage == "truncate":
            payload = payload[: max(1, len(payload) - cut)]
    out = decode(RawRecord(payload, POS, format=fmt), NOW, PII)  # type: ignore[arg-type]
    if breakage in ("none", "avro"):
        assert isinstance(out, Event)
    else:
        assert isinstance(out, DeadLetter)
    text = repr(out)
    for value in {email, email.lower(), email.strip()}:
        assert value not in text
        if isinstance(out, DeadLetter):
            assert value.encode() not in out.raw
