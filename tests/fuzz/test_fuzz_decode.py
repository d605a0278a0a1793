"""Hypothesis fuzz of ``schemas.decode.decode``: bad input of every kind becomes a typed dead letter.

Each category is a strategy of ``Case``: the raw JSON bytes of one record and the
outcome that is certain for it: a dead-letter reason, ``EVENT`` (valid but weird
data, which must decode with the odd value unchanged) or ``ANY`` (random bytes:
only "never raises" is certain). The categories whose outcome is always a dead
letter are built by ``bad_case_strategies(now_ms)``; ``test_fuzz_flow.py`` reuses
them to interleave bad records into whole flows.

The base events are real ones (``sources.generator``) plus consent and deletion
requests, so every mutation starts from an event that decodes.
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditflow.config import DAY_MS
from creditflow.events import (
    CLICK_ID_NAMES,
    DEAD_LETTER_REASONS,
    EVENT_TYPES,
    RAW_CAP_BYTES,
    UTM_FIELDS,
    DeadLetter,
    Event,
    RawRecord,
    SourcePosition,
)
from creditflow.pii import PiiHasher, scrub_payload
from schemas.decode import (
    MAX_FUTURE_MS,
    MAX_ID_CHARS,
    MAX_METADATA_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    MIN_TS_MS,
    decode,
    encode_avro,
)
from schemas.registry import SCHEMA_VERSIONS
from sources.generator import DEFAULT_START_MS, generate_events

EVENT = "event"
"""Expected outcome: a valid Event (valid-but-weird data)."""
ANY = "any"
"""Expected outcome: anything but an exception (random bytes)."""

NOW = DEFAULT_START_MS + 2 * DAY_MS
"""``now_ms`` of the decode fuzz: the base events are from the day before."""
POS = SourcePosition("fuzz", "p0", "7")

SCALE = float(os.environ.get("CREDITFLOW_FUZZ_SCALE", "1"))
"""Multiplies every fuzz test's number of examples (e.g. 20 for a long local hunt)."""


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


def fuzz_settings(n: int) -> settings:
    """Settings of every fuzz test: ``n`` examples (times the scale), no deadline, no example database."""
    return settings(
        max_examples=examples(n),
        deadline=None,
        database=None,  # nothing written to .hypothesis/; every run explores afresh
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


FUZZ = fuzz_settings(500)
"""500 examples per decode category."""

C0_DEL = "".join(map(chr, range(0x20))) + "\x7f"
"""What the decoder calls control characters (U+0000-U+001F, U+007F)."""


@dataclass(frozen=True)
class Case:
    """One fuzzed record and its certain outcome."""

    category: str
    payload: bytes
    expected: str
    """A reason of DEAD_LETTER_REASONS, EVENT or ANY."""
    note: str = ""
    """What was done to the base event (shown when an assertion fails)."""
    keep: tuple[tuple[str, ...], Any] | None = None
    """For EVENT cases: (path on the decoded Event, value it must have) - the odd value, unchanged."""

    def __repr__(self) -> str:  # payloads reach 100 KB: show their ends only
        p = self.payload
        shown = repr(p) if len(p) <= 400 else f"{p[:300]!r}...<{len(p)} bytes>...{p[-80:]!r}"
        return f"Case({self.category!r}, {shown}, expected={self.expected!r}, note={self.note[:300]!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints dataclasses field by field
        printer.text(repr(self))


# ---------------------------------------------------------------- base events


def _base_events() -> list[dict[str, Any]]:
    events = list(generate_events(seed=11, n_persons=40, tenants=("acme", "globex"), days=1.0))
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        by_type[ev["event_type"]].append(ev)
    t = DEFAULT_START_MS + 3_600_000
    extra = [
        {
            "event_id": "fz-consent",
            "tenant_id": "acme",
            "event_type": "consent",
            "timestamp": t,
            "anonymous_id": "a-1",
            "consent": {"analytics": True, "marketing": False},
        },
        {
            "event_id": "fz-delete",
            "tenant_id": "globex",
            "event_type": "deletion_request",
            "timestamp": t,
            "user_id": "u",
        },
        {
            "event_id": "fz-spend",
            "tenant_id": "acme",
            "event_type": "ad_spend",
            "timestamp": t,
            "channel": "paid_social",
            "campaign_id": "c-1",
            "metrics": {"impressions": 1000, "clicks": 40, "cost": 12.5, "conversions": 3},
        },
    ]
    return [ev for et in sorted(by_type) for ev in by_type[et][:4]] + extra


BASE_EVENTS: list[dict[str, Any]] = _base_events()
BASE_TYPES = {ev["event_type"] for ev in BASE_EVENTS}
assert BASE_TYPES == EVENT_TYPES, BASE_TYPES


def dumps(ev: Mapping[str, Any]) -> bytes:
    return orjson.dumps(ev)


def put(ev: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``ev`` with ``path`` set to ``value`` (missing parent objects created)."""
    out = copy.deepcopy(dict(ev))
    target = out
    for key in path[:-1]:
        nxt = target.get(key)
        if not isinstance(nxt, dict):
            nxt = target[key] = {}
        target = nxt
    target[path[-1]] = value
    return out


SENTINEL = "@@fuzz-literal@@"


def with_literal(ev: Mapping[str, Any], path: tuple[str, ...], literal: bytes) -> bytes:
    """The JSON of ``ev`` with the value at ``path`` replaced by raw JSON text ``literal``."""
    payload = dumps(put(ev, path, SENTINEL))
    marker = b'"' + SENTINEL.encode() + b'"'
    assert payload.count(marker) == 1
    return payload.replace(marker, literal)


base_events = st.sampled_from(BASE_EVENTS)


def base_of(*types: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from([ev for ev in BASE_EVENTS if ev["event_type"] in types])


# ---------------------------------------------------------------- the fields of the contract


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]
    kind: str
    """id (required/identifier string), str, enum, currency, ts, obj, meta, number, int, bool, sv."""
    ctrl: bool = False
    """The decoder refuses control characters in it."""
    limit: int = 0
    """Maximum length in characters (strings)."""
    types: frozenset[str] = frozenset(EVENT_TYPES)
    """Event types it is tried on."""


_CONV = frozenset({"conversion"})
_SPEND = frozenset({"ad_spend"})
FIELDS: list[Field] = [
    Field(("event_id",), "id", True, MAX_ID_CHARS),
    Field(("tenant_id",), "id", True, MAX_ID_CHARS),
    Field(("event_type",), "enum"),
    Field(("timestamp",), "ts"),
    *(Field((name,), "str", True, MAX_ID_CHARS) for name in ("anonymous_id", "user_id", "device_id", "campaign_id")),
    Field(("channel",), "str", True, MAX_STRING_CHARS),
    Field(("referrer",), "str", True, MAX_STRING_CHARS),
    *(Field(("utm", k), "str", True, MAX_STRING_CHARS) for k in UTM_FIELDS),
    *(Field(("click_ids", k), "str", True, MAX_STRING_CHARS) for k in CLICK_ID_NAMES),
    *(Field(("context", k), "str", False, MAX_STRING_CHARS) for k in ("ip", "user_agent", "device_type", "country")),
    Field(("utm",), "obj"),
    Field(("click_ids",), "obj"),
    Field(("context",), "obj"),
    Field(("conversion",), "obj"),
    Field(("conversion", "conversion_id"), "id", True, MAX_ID_CHARS, _CONV),
    Field(("conversion", "value"), "number", types=_CONV),
    Field(("conversion", "currency"), "currency", types=_CONV),
    Field(("conversion", "type"), "str", True, MAX_STRING_CHARS, _CONV),
    Field(("metrics",), "obj"),
    *(Field(("metrics", k), "int", types=_SPEND) for k in ("impressions", "clicks", "conversions")),
    Field(("metrics", "cost"), "number", types=_SPEND),
    Field(("metadata",), "meta"),
    Field(("schema_version",), "sv"),
    Field(("consent",), "obj"),
    Field(("consent", "fuzz_purpose"), "bool"),
    Field(("traits",), "obj"),
    Field(("traits", "fuzz_trait"), "str", False, MAX_STRING_CHARS),
]
TEXT_FIELDS = [f for f in FIELDS if f.kind in ("id", "str")]
CTRL_FIELDS = [f for f in TEXT_FIELDS if f.ctrl]


def event_and_field(fields: list[Field]) -> st.SearchStrategy[tuple[dict[str, Any], Field]]:
    pairs = [(ev, f) for ev in BASE_EVENTS for f in fields if ev["event_type"] in f.types]
    return st.sampled_from(pairs)


def event_value(ev: Event, path: tuple[str, ...]) -> Any:
    """The decoded value of a contract field."""
    head = path[0]
    if len(path) == 1:
        return getattr(ev, head)
    if head == "click_ids":
        return ev.click_ids.get(path[1])
    if head == "traits":
        assert ev.metadata is not None
        return ev.metadata["traits"][path[1]]
    if head == "metadata":
        assert ev.metadata is not None
        return ev.metadata[path[1]]
    return getattr(getattr(ev, head), path[1])


# ---------------------------------------------------------------- value strategies

_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes as integers
_floats = st.floats(allow_nan=False, allow_infinity=False)
_lists = st.lists(st.integers(-5, 5) | st.text(max_size=3), max_size=3)
_dicts = st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=3)
_texts = st.text(max_size=20)
_not_json_object = st.text(max_size=20).map(lambda s: "x" + s)  # never parses as JSON

WRONG_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "id": _ints | _floats | st.booleans() | _lists | _dicts,
    "ts": st.booleans() | _floats | _lists | _dicts,
    "obj": _ints | _floats | st.booleans() | _texts | _lists,
    "meta": _ints | _floats | st.booleans() | _lists | _not_json_object,
    "number": _texts | st.booleans() | _lists | _dicts,
    "int": _floats | _texts | st.booleans() | _lists | _dicts,
    "bool": st.none() | _ints | _floats | _texts | _lists | _dicts,
    "sv": _ints.filter(lambda v: v not in SCHEMA_VERSIONS) | _floats | _texts | st.booleans() | _lists,
}
for _kind in ("str", "enum", "currency"):
    WRONG_TYPE[_kind] = WRONG_TYPE["id"]

clean_chars = st.characters(exclude_categories=["Cs"], exclude_characters=C0_DEL)
"""Any code point the decoder accepts in text: no surrogates, no C0/DEL controls."""

INJECTIONS = [
    "'; DROP TABLE x; --",
    "' OR '1'='1",
    "Robert'); DROP TABLE Students;--",
    "1; DELETE FROM attribution_credits WHERE 1=1",
    "x' UNION SELECT name FROM system.tables --",
    '" OR ""="',
    "`; SYSTEM SHUTDOWN; `",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "javascript:alert(document.cookie)",
    "${jndi:ldap://evil/a}",
    "{{7*7}}",
    "%00%27%3B--",
    "\\x00\\u0000",
    "../../../etc/passwd",
    "C:\\Windows\\System32",
    "\u202egnp.exe\u202c",  # RIGHT-TO-LEFT OVERRIDE ... POP DIRECTIONAL FORMATTING
    "\u200f\u200e\u061cmark",  # RTL / LTR / Arabic letter marks
    "\u2066isolate\u2069",
    "\ufeffbom",
    "zero\u200bwidth\u200d",
    "\u0085\u009b31m",  # C1 controls (NEL, CSI): not control characters for the decoder
    "\U0001d54f\U0001f642\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\uff33\uff25\uff2c\uff25\uff23\uff34",
    "a\u00a0b\u3000c",
    "\U0010ffff\ufffd",
    "NULL",
    "None",
    "{}",
    "'",
    "\\",
]
injection_text = st.builds(
    lambda head, tail: head + tail, st.sampled_from(INJECTIONS), st.text(alphabet=clean_chars, max_size=30)
)
"""Weird but valid text: never empty, never only whitespace, no control characters, <= 256 chars."""


def _utc_ms(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _iso(dt: datetime, z: bool) -> str:
    text = dt.isoformat()
    return text[:-6] + "Z" if z and text.endswith("+00:00") else text


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


def aware_datetimes(lo: datetime, hi: datetime) -> st.SearchStrategy[str]:
    """ISO-8601 strings with a UTC offset whose local time is within [lo, hi]."""
    return st.builds(_iso, st.datetimes(min_value=lo, max_value=hi, timezones=offsets), st.booleans())


def _naive(ms: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(milliseconds=ms)


# ---------------------------------------------------------------- bad categories (certain dead letters)


def malformed_json() -> st.SearchStrategy[Case]:
    def truncated(ev: dict[str, Any], frac: float) -> Case:
        full = dumps(ev)
        cut = int(frac * len(full))
        return Case("malformed_json", full[:cut], "parse_error", f"truncated at {cut}/{len(full)}")

    def trailing(ev: dict[str, Any], tail: bytes) -> Case:
        return Case("malformed_json", dumps(ev) + tail, "parse_error", f"trailing {tail!r}")

    def in_string(ev: dict[str, Any], bad: bytes) -> Case:
        payload = with_literal(ev, ("referrer",), b'"ab' + bad + b'cd"')
        return Case("malformed_json", payload, "parse_error", f"string with {bad!r}")

    def not_object(value: Any) -> Case:
        return Case("malformed_json", orjson.dumps(value), "parse_error", "top level not an object")

    def too_deep(ev: dict[str, Any], depth: int) -> Case:
        payload = with_literal(ev, ("metadata",), b'{"a":' * depth + b"1" + b"}" * depth)
        return Case("malformed_json", payload, "parse_error", f"nesting depth {depth}")

    raw_ctrl = st.integers(0, 0x1F).map(lambda c: bytes([c]))
    bad_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82"])
    lone_surrogate = st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d", b"\\ud83dx", b"\\u12zz", b"\\q"])
    tails = st.sampled_from([b"x", b"}", b",", b"{}", b"[]", b"\x00", b"null", b'"', b"\n{}"])
    return st.one_of(
        st.builds(truncated, base_events, st.floats(0, 1, exclude_max=True)),
        st.builds(trailing, base_events, tails),
        st.builds(in_string, base_events, raw_ctrl | bad_utf8 | lone_surrogate),
        st.builds(not_object, _ints | _floats | _texts | st.none() | st.booleans() | st.lists(_ints, max_size=4)),
        st.builds(too_deep, base_events, st.integers(1100, 5000)),
    )


def oversized_payload() -> st.SearchStrategy[Case]:
    def padded(ev: dict[str, Any], extra: int) -> Case:
        payload = dumps(ev)
        payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES + 1 - len(payload) + extra) + b"}"
        return Case("oversized_payload", payload, "size_violation", f"{len(payload)} bytes of padded JSON")

    def big_field(ev: dict[str, Any], path: tuple[str, ...], n: int, unit: str) -> Case:
        payload = dumps(put(ev, path, (unit * n)[: MAX_PAYLOAD_BYTES + n]))
        return Case("oversized_payload", payload, "size_violation", f"{len(payload)} bytes, big {'.'.join(path)}")

    def junk(seed: bytes, n: int) -> Case:
        payload = (seed * (n // len(seed) + 1))[:n]
        return Case("oversized_payload", payload, "size_violation", f"{n} junk bytes")

    big = MAX_PAYLOAD_BYTES + 1
    return st.one_of(
        st.builds(padded, base_events, st.integers(0, 50_000)),
        st.builds(
            big_field,
            base_events,
            st.sampled_from([("referrer",), ("metadata", "blob"), ("utm", "term"), ("event_id",)]),
            st.integers(big, 3 * big),
            st.sampled_from(["x", "\u00e9", "\U0001f642", '"', "\x00"]),
        ),
        st.builds(junk, st.binary(min_size=1, max_size=64), st.integers(big, 4 * big)),
    )


def oversized_metadata() -> st.SearchStrategy[Case]:
    def as_object(ev: dict[str, Any], extra: dict[str, Any], n: int, as_string: bool) -> Case:
        md: Any = {**extra, "blob": "m" * n}
        if as_string:  # how Avro carries metadata: a serialized JSON object
            md = orjson.dumps(md).decode()
        payload = dumps(put(ev, ("metadata",), md))
        assert len(payload) <= MAX_PAYLOAD_BYTES
        return Case("oversized_metadata", payload, "size_violation", f"metadata blob of {n} (string={as_string})")

    def as_list(ev: dict[str, Any], n: int) -> Case:
        payload = dumps(put(ev, ("metadata",), {"ids": list(range(n))}))
        return Case("oversized_metadata", payload, "size_violation", f"metadata list of {n} ints")

    small = st.dictionaries(st.text(max_size=8), _ints | _texts | st.booleans() | st.none(), max_size=4)
    return st.one_of(
        st.builds(as_object, base_events, small, st.integers(MAX_METADATA_BYTES, 25_000), st.booleans()),
        st.builds(as_list, base_events, st.integers(700, 4000)),
    )


def wrong_type() -> st.SearchStrategy[Case]:
    @st.composite
    def case(draw: st.DrawFn) -> Case:
        ev, field = draw(event_and_field(FIELDS))
        value = draw(WRONG_TYPE[field.kind])
        expected = "invalid_timestamp" if field.kind == "ts" else "schema_violation"
        return Case("wrong_type", dumps(put(ev, field.path, value)), expected, f"{'.'.join(field.path)} = {value!r}")

    def misplaced(ev: dict[str, Any], which: str) -> Case:
        value = {"conversion_id": "o-1", "value": 5} if which == "conversion" else {"impressions": 1, "cost": 0}
        return Case("wrong_type", dumps(put(ev, (which,), value)), "schema_violation", f"{which} on {ev['event_type']}")

    return st.one_of(
        case(),
        st.builds(misplaced, base_of(*(EVENT_TYPES - _CONV)), st.just("conversion")),
        st.builds(misplaced, base_of(*(EVENT_TYPES - _SPEND)), st.just("metrics")),
    )


NUMERIC_FIELDS = [f for f in FIELDS if f.kind in ("ts", "number", "int")]
NON_FINITE = [b"NaN", b"-NaN", b"nan", b"Infinity", b"-Infinity", b"+Infinity", b"inf", b"1e999", b"-1e999"]
NON_FINITE += [b"1E400", b"2e308", b"-2.5e+308", b"1" + b"0" * 309, b"-" + b"9" * 400]


def nan_infinity() -> st.SearchStrategy[Case]:
    """NaN/Infinity literals and numbers beyond a double, in numeric fields or anywhere: not JSON."""

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        fields = NUMERIC_FIELDS if draw(st.booleans()) else FIELDS
        ev, field = draw(event_and_field(fields))
        literal = draw(st.sampled_from(NON_FINITE))
        payload = with_literal(ev, field.path, literal)
        return Case("nan_infinity", payload, "parse_error", f"{'.'.join(field.path)} = {literal[:12]!r}")

    return case()


def huge_number_expected(field: Field, negative: bool) -> str:
    """Numbers that parse (as floats beyond 2**64, or up to 1.8e308) but cannot be what the field needs."""
    if field.kind == "ts":
        return "invalid_timestamp"
    if field.kind == "int":  # orjson gives a float for integers beyond 64 bits
        return "schema_violation"
    if field.path == ("conversion", "value"):
        return "schema_violation" if negative else EVENT
    assert field.path == ("metrics", "cost")
    return "quality_violation" if negative else EVENT


def huge_numbers() -> st.SearchStrategy[Case]:
    @st.composite
    def case(draw: st.DrawFn) -> Case:
        ev, field = draw(event_and_field(NUMERIC_FIELDS))
        negative = draw(st.booleans())
        if draw(st.booleans()):
            text = "1" + "0" * draw(st.integers(20, 300))  # > 2**64: parsed as a float
        else:
            text = repr(draw(st.floats(1e20, 1.7976931348623157e308)))
        literal = (("-" if negative else "") + text).encode()
        expected = huge_number_expected(field, negative)
        keep = None
        if expected == EVENT:
            keep = (field.path, float(literal))
        return Case("huge_numbers", with_literal(ev, field.path, literal), expected, f"{field.path} = {text}", keep)

    return case()


REQUIRED = ("event_id", "tenant_id", "event_type", "timestamp")


def missing_required() -> st.SearchStrategy[Case]:
    def drop(ev: dict[str, Any], names: set[str], null: bool) -> Case:
        out = {k: v for k, v in ev.items() if k not in names}
        if null:
            out.update(dict.fromkeys(names))
        return Case(
            "missing_required", dumps(out), "schema_violation", f"{sorted(names)} {'null' if null else 'absent'}"
        )

    return st.builds(drop, base_events, st.sets(st.sampled_from(REQUIRED), min_size=1), st.booleans())


def future_timestamp(now_ms: int) -> st.SearchStrategy[Case]:
    first = now_ms + MAX_FUTURE_MS + 1

    def case(ev: dict[str, Any], ts: Any) -> Case:
        return Case("future_timestamp", dumps(put(ev, ("timestamp",), ts)), "invalid_timestamp", f"timestamp {ts!r}")

    return st.builds(
        case,
        base_events,
        st.integers(first, first + 1000)
        | st.integers(first, 2**64 - 1)
        | st.just(now_ms * 1000)  # microseconds
        | aware_datetimes(_naive(first) + timedelta(days=1), datetime(9999, 12, 31)),
    )


def ancient_timestamp() -> st.SearchStrategy[Case]:
    def case(ev: dict[str, Any], ts: Any) -> Case:
        return Case("ancient_timestamp", dumps(put(ev, ("timestamp",), ts)), "invalid_timestamp", f"timestamp {ts!r}")

    return st.builds(
        case,
        base_events,
        st.integers(MIN_TS_MS - 1000, MIN_TS_MS - 1)
        | st.integers(-(2**63), MIN_TS_MS - 1)
        | st.integers(1_000_000_000, 2_000_000_000)  # epoch seconds
        | aware_datetimes(datetime(1, 1, 2), datetime(1999, 12, 30)),
    )


def garbled_timestamp() -> st.SearchStrategy[Case]:
    """Strings that are not ISO-8601 with a UTC offset."""

    def case(ev: dict[str, Any], ts: str) -> Case:
        return Case("garbled_timestamp", dumps(put(ev, ("timestamp",), ts)), "invalid_timestamp", f"timestamp {ts!r}")

    naive = st.datetimes(datetime(2000, 1, 2), datetime(2030, 1, 1)).map(datetime.isoformat)
    return st.builds(
        case,
        base_events,
        naive
        | naive.map(lambda s: s[:10])  # a date alone has no offset
        | st.text(max_size=30).map(lambda s: "x" + s)
        | st.text(min_size=65, max_size=80),
    )


def quality_violation() -> st.SearchStrategy[Case]:
    @st.composite
    def case(draw: st.DrawFn) -> Case:
        ev = draw(base_of("ad_spend"))
        big = 10**12
        kind = draw(st.sampled_from(["negative", "clicks>impressions", "conversions>clicks"]))
        imps = draw(st.integers(0, big))
        clicks = draw(st.integers(0, imps))
        conv: int | None = draw(st.none() | st.integers(0, clicks))
        cost: float = draw(st.floats(0, 1e9))
        if kind == "negative":
            name = draw(st.sampled_from(["impressions", "clicks", "cost", "conversions"]))
            if name == "cost":
                cost = draw(st.floats(-1e12, -1e-9))
            elif name == "impressions":
                imps = draw(st.integers(-big, -1))
            elif name == "clicks":
                clicks = draw(st.integers(-big, -1))
            else:
                conv = draw(st.integers(-big, -1))
        elif kind == "clicks>impressions":
            clicks = draw(st.integers(imps + 1, imps + big))
        else:
            conv = draw(st.integers(clicks + 1, clicks + big))
        metrics: dict[str, Any] = {"impressions": imps, "clicks": clicks, "cost": cost}
        if conv is not None:
            metrics["conversions"] = conv
        return Case(
            "quality_violation", dumps(put(ev, ("metrics",), metrics)), "quality_violation", f"{kind}: {metrics}"
        )

    return case()


def control_chars() -> st.SearchStrategy[Case]:
    """C0 controls and DEL (JSON-escaped, so the payload parses) in every field that refuses them."""

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        chars = list(draw(st.text(alphabet=clean_chars, max_size=30)))
        for c in draw(st.lists(st.sampled_from(C0_DEL), min_size=1, max_size=3)):
            chars.insert(draw(st.integers(0, len(chars))), c)
        value = "".join(chars)
        if draw(st.integers(0, 9)) == 0:  # in a purpose or trait name
            ev = draw(base_events)
            which = draw(st.sampled_from(["consent", "traits"]))
            mapping: dict[str, Any] = {value: True if which == "consent" else "v"}
            return Case(
                "control_chars", dumps(put(ev, (which,), mapping)), "schema_violation", f"{which} key {value!r}"
            )
        ev, field = draw(event_and_field(CTRL_FIELDS))
        path = field.path
        return Case("control_chars", dumps(put(ev, path, value)), "schema_violation", f"{'.'.join(path)} = {value!r}")

    return case()


def _long_text(unit: str, n: int) -> str:
    return ("x" + unit * n)[:n]


def long_strings() -> st.SearchStrategy[Case]:
    def case(pair: tuple[dict[str, Any], Field], unit: str, over: int) -> Case:
        ev, field = pair
        value = _long_text(unit, field.limit + over)
        return Case(
            "long_strings", dumps(put(ev, field.path, value)), "schema_violation", f"{field.path}: {len(value)}"
        )

    return st.builds(
        case, event_and_field(TEXT_FIELDS), st.text(clean_chars, min_size=1, max_size=6), st.integers(1, 3000)
    )


def bad_case_strategies(now_ms: int) -> dict[str, st.SearchStrategy[Case]]:
    """The categories whose every case must become a dead letter of ``Case.expected``.

    ``now_ms`` is the decoder's clock (future timestamps are relative to it).
    """
    return {
        "malformed_json": malformed_json(),
        "oversized_payload": oversized_payload(),
        "oversized_metadata": oversized_metadata(),
        "wrong_type": wrong_type(),
        "nan_infinity": nan_infinity(),
        "missing_required": missing_required(),
        "future_timestamp": future_timestamp(now_ms),
        "ancient_timestamp": ancient_timestamp(),
        "garbled_timestamp": garbled_timestamp(),
        "quality_violation": quality_violation(),
        "control_chars": control_chars(),
        "long_strings": long_strings(),
    }


# ---------------------------------------------------------------- valid-but-weird and uncertain categories


def injection_valid() -> st.SearchStrategy[Case]:
    """SQL/HTML/template injection, RTL marks, odd unicode: valid data that must pass unchanged."""

    def case(pair: tuple[dict[str, Any], Field], value: str) -> Case:
        ev, field = pair
        return Case(
            "injection_valid",
            dumps(put(ev, field.path, value)),
            EVENT,
            f"{field.path} = {value!r}",
            (field.path, value),
        )

    def in_metadata(ev: dict[str, Any], key: str, value: str) -> Case:
        md = {**(ev.get("metadata") or {}), key: value}
        return Case(
            "injection_valid", dumps(put(ev, ("metadata",), md)), EVENT, f"metadata {key!r}", (("metadata", key), value)
        )

    return st.one_of(
        st.builds(case, event_and_field(TEXT_FIELDS), injection_text),
        st.builds(in_metadata, base_events, injection_text, injection_text),
    )


def valid_edges() -> st.SearchStrategy[Case]:
    """Values exactly at every limit: all still valid."""

    def at_limit(pair: tuple[dict[str, Any], Field], unit: str) -> Case:
        ev, field = pair
        value = _long_text(unit, field.limit)
        return Case(
            "valid_edges", dumps(put(ev, field.path, value)), EVENT, f"{field.path} at limit", (field.path, value)
        )

    def payload_at_limit(ev: dict[str, Any]) -> Case:
        payload = dumps(ev)
        payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
        return Case("valid_edges", payload, EVENT, "payload of exactly 32 KiB")

    def metadata_at_limit(ev: dict[str, Any], extra: dict[str, str]) -> Case:
        md = {**extra, "blob": ""}
        md["blob"] = "m" * (MAX_METADATA_BYTES - len(orjson.dumps(md)))
        assert len(orjson.dumps(md)) == MAX_METADATA_BYTES
        keep = (("metadata", "blob"), md["blob"])
        return Case("valid_edges", dumps(put(ev, ("metadata",), md)), EVENT, "metadata of 2 KiB", keep)

    def timestamp_at(ev: dict[str, Any], ts: int) -> Case:
        return Case("valid_edges", dumps(put(ev, ("timestamp",), ts)), EVENT, f"timestamp {ts}", (("ts_ms",), ts))

    def metrics_equal(ev: dict[str, Any], n: int, cost: float) -> Case:
        m = {"impressions": n, "clicks": n, "cost": cost, "conversions": n}
        return Case("valid_edges", dumps(put(ev, ("metrics",), m)), EVENT, f"metrics {m}", (("metrics", "clicks"), n))

    return st.one_of(
        st.builds(at_limit, event_and_field(TEXT_FIELDS), st.text(clean_chars, min_size=1, max_size=6)),
        st.builds(payload_at_limit, base_events),
        st.builds(
            metadata_at_limit, base_events, st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3)
        ),
        st.builds(timestamp_at, base_events, st.sampled_from([MIN_TS_MS, NOW + MAX_FUTURE_MS, NOW])),
        st.builds(
            metrics_equal, base_of("ad_spend"), st.integers(0, 2**63), st.sampled_from([0.0, -0.0, 1e-300, 1e300])
        ),
    )


def random_bytes() -> st.SearchStrategy[Case]:
    return st.binary(max_size=300).map(lambda b: Case("random_bytes", b, ANY))


def corrupted_bytes() -> st.SearchStrategy[Case]:
    """Valid events with a few bytes overwritten: may stay valid, may not; must never raise."""

    def case(ev: dict[str, Any], edits: list[tuple[int, int]]) -> Case:
        payload = bytearray(dumps(ev))
        for pos, byte in edits:
            payload[pos % len(payload)] = byte
        return Case("corrupted_bytes", bytes(payload), ANY, f"edits {edits}")

    return st.builds(
        case, base_events, st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4)
    )


DECODE_CATEGORIES: dict[str, st.SearchStrategy[Case]] = {
    **bad_case_strategies(NOW),
    "huge_numbers": huge_numbers(),
    "injection_valid": injection_valid(),
    "valid_edges": valid_edges(),
    "random_bytes": random_bytes(),
    "corrupted_bytes": corrupted_bytes(),
}


# ---------------------------------------------------------------- checks


def check_outcome(case: Case, out: Any, position: SourcePosition = POS) -> None:
    """``out`` (never an exception) is what ``case`` promises."""
    assert isinstance(out, Event | DeadLetter), out
    if isinstance(out, DeadLetter):
        assert out.reason in DEAD_LETTER_REASONS, out
        assert out.detail, out
        assert out.raw == scrub_payload(case.payload, PiiHasher.unkeyed(), out.tenant_id)[:RAW_CAP_BYTES]  # no PII kept
        assert out.position == position
        assert case.expected in (out.reason, ANY), (
            f"{case.note}: expected {case.expected}, got {out.reason}: {out.detail}"
        )
        return
    assert case.expected in (EVENT, ANY), f"{case.note}: expected {case.expected}, got an Event"
    assert out.position == position
    if case.keep is not None:
        path, value = case.keep
        got = event_value(out, path)
        assert got == value and type(got) is type(value), f"{case.note}: {path} became {got!r}"
    if out.conversion is not None:
        assert math.isfinite(out.conversion.value) and out.conversion.value >= 0
    if out.metrics is not None:
        assert math.isfinite(out.metrics.cost)


def test_every_base_event_decodes() -> None:
    for ev in BASE_EVENTS:
        assert isinstance(decode(RawRecord(dumps(ev), POS), NOW), Event), ev


@pytest.mark.parametrize("category", sorted(DECODE_CATEGORIES))
@FUZZ
@given(data=st.data())
def test_decode_fuzz(category: str, data: st.DataObject, fuzz_stats: Counter[str]) -> None:
    case = data.draw(DECODE_CATEGORIES[category], label="case")
    fuzz_stats[f"decode.{category}"] += 1
    check_outcome(case, decode(RawRecord(case.payload, POS), NOW))


@FUZZ
@given(case=injection_valid())
def test_injection_strings_survive_avro_too(case: Case, fuzz_stats: Counter[str]) -> None:
    """The same weird-but-valid event as a schemaless Avro record decodes to the same Event."""
    fuzz_stats["decode.injection_valid_avro"] += 1
    from_json = decode(RawRecord(case.payload, POS), NOW)
    assert isinstance(from_json, Event)
    avro = encode_avro(orjson.loads(case.payload))
    assert decode(RawRecord(avro, POS, format="avro"), NOW) == from_json


def test_decoding_is_pure() -> None:
    """The same record decoded twice gives equal results (dead letters included): duplicates are the flow's job."""
    for ev in BASE_EVENTS:
        for payload in (dumps(ev), dumps(ev)[:-3]):
            rec = RawRecord(payload, POS)
            assert decode(rec, NOW) == decode(rec, NOW)


# ---------------------------------------------------------------- regressions found by this fuzz


@pytest.mark.parametrize("ctrl", ["\x00", "\n", "\x1b[2J", "\x7f"])
def test_control_characters_in_referrer_are_refused(ctrl: str) -> None:
    """The referrer was the one touch field that let control characters through."""
    ev = put(BASE_EVENTS[0], ("referrer",), f"https://example.com/{ctrl}x")
    out = decode(RawRecord(dumps(ev), POS), NOW)
    assert isinstance(out, DeadLetter) and out.reason == "schema_violation"
    assert "'referrer'" in out.detail and "control character" in out.detail
