"""Decode and validate raw payloads into ``Event`` or ``DeadLetter``.

``decode`` never raises: every payload becomes either a validated ``Event`` or
a ``DeadLetter`` whose ``reason`` is one of ``DEAD_LETTER_REASONS`` and whose
``detail`` says which field was wrong and how to fix it.

>>> from creditflow.events import RawRecord, SourcePosition
>>> pos = SourcePosition("file", "events.jsonl", "0")
>>> now = 1_767_225_600_000  # 2026-01-01T00:00:00Z
>>> ev = decode(RawRecord(b'{"event_id": "e1", "tenant_id": "t1", "event_type": "click",'
...                       b' "timestamp": "2026-01-01T02:00:00+02:00", "user_id": "u1",'
...                       b' "click_ids": {"gclid": "abc", "fbclid": ""}}', pos), now)
>>> ev.ts_ms == now, ev.user_id, dict(ev.click_ids), ev.schema_version
(True, 'u1', {'gclid': 'abc'}, 2)
>>> dl = decode(RawRecord(b'{"event_id": "e2", "tenant_id": "t1", "event_type": "click",'
...                       b' "timestamp": "2026-01-01T00:00:00", "user_id": "u1"}', pos), now)
>>> dl.reason, dl.event_id
('invalid_timestamp', 'e2')
>>> print(dl.detail)
field 'timestamp' has no UTC offset: '2026-01-01T00:00:00'; append 'Z' or '+00:00'

Avro payloads are schemaless records of ``schemas/event.v<N>.avsc`` (the
writer version is ``RawRecord.schema_version``, default latest):

>>> payload = encode_avro({"event_id": "e3", "tenant_id": "t1", "event_type": "page_view",
...                        "timestamp": now, "anonymous_id": "a1"}, version=1)
>>> decode(RawRecord(payload, pos, format="avro", schema_version=1), now).anonymous_id
'a1'
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import fastavro
import orjson

from creditflow.events import (
    CLICK_ID_NAMES,
    EMPTY_UTM,
    EVENT_TYPES,
    PERSON_EVENT_TYPES,
    RAW_CAP_BYTES,
    SOURCE_ERROR_KEY,
    Context,
    Conversion,
    DeadLetter,
    Event,
    RawRecord,
    SpendMetrics,
    Utm,
)
from creditflow.pii import PiiHasher, pii_kind, scrub_payload, scrub_text
from schemas.registry import LATEST_VERSION, SCHEMA_VERSIONS, allowed_fields, load_schema, record_fields

__all__ = [
    "MAX_ID_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_STRING_CHARS",
    "MAX_FUTURE_MS",
    "MIN_TS_MS",
    "decode",
    "decode_mapping",
    "encode_avro",
]

MAX_PAYLOAD_BYTES = 32 * 1024
"""Payloads larger than this are dead-lettered (size_violation) before parsing."""
MAX_METADATA_BYTES = 2048
"""``metadata`` serialized with orjson may be at most this many bytes."""
MAX_ID_CHARS = 256
"""Limit for identifiers: event_id, tenant_id, person ids, campaign_id, conversion_id, map keys."""
MAX_STRING_CHARS = 2048
"""Limit for every other string."""
MIN_TS_MS = 946_684_800_000
"""2000-01-01T00:00:00Z; earlier timestamps are invalid."""
MAX_FUTURE_MS = 24 * 3600 * 1000
"""Timestamps more than this far after ``now_ms`` are invalid."""
_SECONDS_CUTOFF = 100_000_000_000  # an epoch-ms integer below 1e11 (1973) is almost surely seconds

_PERSON_ID_TYPES = PERSON_EVENT_TYPES | {"identify", "consent", "deletion_request"}
_EVENT_TYPES_TEXT = ", ".join(sorted(EVENT_TYPES))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")

_ALLOWED: dict[int, frozenset[str]] = {v: allowed_fields(v) for v in SCHEMA_VERSIONS}
_ALLOWED_LATEST = _ALLOWED[LATEST_VERSION]
_FIELD_SINCE: dict[str, int] = {}
for _v in sorted(SCHEMA_VERSIONS, reverse=True):
    for _name in _ALLOWED[_v]:
        _FIELD_SINCE[_name] = _v
_UTM_KEYS = record_fields(LATEST_VERSION, "utm")
_CONTEXT_KEYS = record_fields(LATEST_VERSION, "context")
_CONVERSION_KEYS = record_fields(LATEST_VERSION, "conversion")
_METRICS_KEYS = record_fields(LATEST_VERSION, "metrics")
_WRITER_SCHEMAS: dict[int, Any] = {v: load_schema(v) for v in SCHEMA_VERSIONS}
_READER_SCHEMA = _WRITER_SCHEMAS[LATEST_VERSION]


class _Reject(Exception):
    """Raised inside validation; turned into a DeadLetter by ``decode_mapping``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- helpers


def _kind(v: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "object"
    if isinstance(v, list | tuple):
        return "array"
    return type(v).__name__


def _show(v: Any) -> str:
    """A short, safe rendering of a value (never reprs a container)."""
    if isinstance(v, str):
        return repr(v[:64]) + ("..." if len(v) > 64 else "")
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return f"an integer of {v.bit_length()} bits"
    if v is None or isinstance(v, bool | int | float):
        text = repr(v)
        return text if len(text) <= 40 else text[:40] + "..."
    try:
        return f"{_kind(v)} of {len(v)} items"
    except Exception:
        return _kind(v)


def _violation(detail: str) -> NoReturn:
    raise _Reject("schema_violation", detail)


def _type_error(name: str, expected: str, v: Any) -> NoReturn:
    _violation(f"field {name!r} must be {expected}, got {_kind(v)} {_show(v)}; send {expected}")


def _missing(name: str, what: str) -> NoReturn:
    _violation(f"required field {name!r} is missing or null; send {what}")


def _check_ctrl(v: str, name: str) -> None:
    if not (v.isascii() and v.isprintable()):
        m = _CTRL_RE.search(v)
        if m is not None:
            _violation(
                f"field {name!r} contains the control character {m.group()!r} at position {m.start()}; "
                "remove control characters (U+0000-U+001F, U+007F) from the value"
            )


def _too_long(name: str, v: str, limit: int) -> NoReturn:
    _violation(f"field {name!r} is {len(v)} characters long, more than the {limit} allowed; shorten it")


def _req_id(v: Any, name: str) -> str:
    if type(v) is str and v and len(v) <= MAX_ID_CHARS and v.isascii() and v.isprintable() and not v.isspace():
        return v  # the common case, decided in one expression
    if type(v) is not str:
        if v is None:
            _missing(name, "a non-empty string")
        _type_error(name, "a non-empty string", v)
    if not v or v.isspace():
        _violation(f"field {name!r} is empty; send a non-empty string")
    if len(v) > MAX_ID_CHARS:
        _too_long(name, v, MAX_ID_CHARS)
    _check_ctrl(v, name)
    return v


def _opt_str(v: Any, name: str, limit: int, ctrl: bool) -> str:
    if v is None:
        return ""
    if type(v) is str and len(v) <= limit and (not ctrl or (v.isascii() and v.isprintable())):
        return v  # the common case, decided in one expression
    if type(v) is not str:
        _type_error(name, "a string", v)
    if len(v) > limit:
        _too_long(name, v, limit)
    if ctrl:
        _check_ctrl(v, name)
    return v


def _mapping(v: Any, name: str, keys: frozenset[str] | None) -> Mapping[Any, Any]:
    if type(v) is not dict and not isinstance(v, Mapping):
        _type_error(name, "an object", v)
    if keys is not None and not v.keys() <= keys:
        bad = next(k for k in v if k not in keys)
        hint = ""
        if type(bad) is str and bad.startswith(name + "_") and bad[len(name) + 1 :] in keys:
            hint = f" (did you mean '{name}.{bad[len(name) + 1 :]}'?)"
        _violation(f"unknown field '{name}.{bad}'{hint}; allowed fields of {name!r}: {', '.join(sorted(keys))}")
    return v


def _number(v: Any, name: str) -> float:
    t = type(v)
    if t is float:
        f = v
    elif t is int or (isinstance(v, int | float) and not isinstance(v, bool)):
        try:
            f = float(v)
        except OverflowError:
            _violation(f"field {name!r} is too large ({_show(v)}); send a finite number")
    else:
        _type_error(name, "a number", v)
    if not math.isfinite(f):
        _violation(f"field {name!r} is {f!r}; send a finite number")
    return f


def _int(v: Any, name: str) -> int:
    if type(v) is int:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    if v is None:
        _missing(name, "an integer >= 0")
    _type_error(name, "an integer", v)


# ---------------------------------------------------------------- fields


def _timestamp(v: Any, now_ms: int) -> int:
    t = type(v)
    if t is int:
        ms = v
        if ms < _SECONDS_CUTOFF:
            raise _Reject(
                "invalid_timestamp",
                f"field 'timestamp' is {ms}, which looks like epoch seconds (or is before 1973); "
                "send epoch milliseconds (seconds * 1000) or an ISO-8601 string with a UTC offset",
            )
    elif t is str:
        ms = _iso_ms(v)
    elif v is None:
        _missing("timestamp", "integer epoch milliseconds or an ISO-8601 string with a UTC offset")
    elif isinstance(v, int) and not isinstance(v, bool):
        return _timestamp(int(v), now_ms)
    else:
        # Booleans and floats are timestamps in the wrong representation; they are
        # reported as invalid_timestamp (not schema_violation) so that producers
        # sending e.g. 1.7e12 or seconds-with-fraction show up under one reason.
        raise _Reject(
            "invalid_timestamp",
            f"field 'timestamp' is a {_kind(v)} ({_show(v)}); booleans and floats are not accepted: "
            "send integer epoch milliseconds or an ISO-8601 string with a UTC offset, e.g. '2026-01-01T00:00:00Z'",
        )
    if ms < MIN_TS_MS:
        raise _Reject(
            "invalid_timestamp",
            f"field 'timestamp' ({_show(v)}) is before 2000-01-01T00:00:00Z; send the real event time in UTC",
        )
    if ms > now_ms + MAX_FUTURE_MS:
        raise _Reject(
            "invalid_timestamp",
            f"field 'timestamp' ({_show(v)}) is more than 24 h in the future (now is {now_ms} ms); "
            "check the producer's clock and that the value is milliseconds, not microseconds",
        )
    return ms


def _iso_ms(s: str) -> int:
    if len(s) > 64 or not s.isascii():
        raise _Reject(
            "invalid_timestamp",
            f"field 'timestamp' is not an ISO-8601 timestamp: {_show(s)}; "
            "send e.g. '2026-01-01T00:00:00Z' or integer epoch milliseconds",
        )
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise _Reject(
            "invalid_timestamp",
            f"field 'timestamp' is not an ISO-8601 timestamp: {s!r}; "
            "send e.g. '2026-01-01T00:00:00Z' or integer epoch milliseconds",
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise _Reject("invalid_timestamp", f"field 'timestamp' has no UTC offset: {s!r}; append 'Z' or '+00:00'")
    try:
        return (dt - _EPOCH) // _ONE_MS
    except OverflowError:
        raise _Reject(
            "invalid_timestamp", f"field 'timestamp' is out of range: {s!r}; send the real event time in UTC"
        ) from None


def _utm(v: Any) -> Utm:
    u = _mapping(v, "utm", _UTM_KEYS)
    g = u.get
    utm = Utm(
        _opt_str(g("source"), "utm.source", MAX_STRING_CHARS, True),
        _opt_str(g("medium"), "utm.medium", MAX_STRING_CHARS, True),
        _opt_str(g("campaign"), "utm.campaign", MAX_STRING_CHARS, True),
        _opt_str(g("content"), "utm.content", MAX_STRING_CHARS, True),
        _opt_str(g("term"), "utm.term", MAX_STRING_CHARS, True),
    )
    return EMPTY_UTM if utm.is_empty() else utm


def _click_ids(v: Any) -> dict[str, str]:
    # Unknown click-id names are ignored (ad platforms add new ones, e.g. wbraid);
    # only the known ones are typed in the Avro schema and kept on the Event.
    c = _mapping(v, "click_ids", None)
    out: dict[str, str] = {}
    for name in CLICK_ID_NAMES:
        x = c.get(name)
        if x is not None and x != "":
            out[name] = _opt_str(x, "click_ids." + name, MAX_STRING_CHARS, True)
    return out


def _context(v: Any) -> Context:
    c = _mapping(v, "context", _CONTEXT_KEYS)
    g = c.get
    return Context(
        _opt_str(g("ip"), "context.ip", MAX_STRING_CHARS, False),
        _opt_str(g("user_agent"), "context.user_agent", MAX_STRING_CHARS, False),
        _opt_str(g("device_type"), "context.device_type", MAX_STRING_CHARS, False),
        _opt_str(g("country"), "context.country", MAX_STRING_CHARS, False),
    )


def _conversion(v: Any) -> Conversion:
    c = _mapping(v, "conversion", _CONVERSION_KEYS)
    g = c.get
    conversion_id = _req_id(g("conversion_id"), "conversion.conversion_id")
    raw_value = g("value")
    value = 0.0 if raw_value is None else _number(raw_value, "conversion.value")
    if value < 0:
        _violation(f"field 'conversion.value' is {value!r}; send a value >= 0 (refunds are not conversions)")
    currency = g("currency")
    if currency is None or currency == "":
        currency = ""
    elif type(currency) is not str or len(currency) != 3 or not (currency.isascii() and currency.isalpha()):
        _violation(
            f"field 'conversion.currency' must be a 3-letter ISO-4217 code, got {_show(currency)}; send e.g. 'USD'"
        )
    else:
        currency = currency.upper()
    return Conversion(conversion_id, value, currency, _opt_str(g("type"), "conversion.type", MAX_STRING_CHARS, True))


def _metrics(v: Any) -> SpendMetrics:
    """Type checks only; the data-quality rules run last (see ``_check_quality``)."""
    m = _mapping(v, "metrics", _METRICS_KEYS)
    g = m.get
    cost = g("cost")
    if cost is None:
        _missing("metrics.cost", "a finite number >= 0")
    conversions = g("conversions")
    return SpendMetrics(
        _int(g("impressions"), "metrics.impressions"),
        _int(g("clicks"), "metrics.clicks"),
        _number(cost, "metrics.cost"),
        None if conversions is None else _int(conversions, "metrics.conversions"),
    )


def _check_quality(m: SpendMetrics) -> None:
    for name, x in (
        ("impressions", m.impressions),
        ("clicks", m.clicks),
        ("cost", m.cost),
        ("conversions", m.conversions),
    ):
        if x is not None and x < 0:
            raise _Reject("quality_violation", f"field 'metrics.{name}' is negative ({x!r}); send a value >= 0")
    if m.clicks > m.impressions:
        raise _Reject(
            "quality_violation",
            f"field 'metrics.clicks' ({m.clicks}) exceeds 'metrics.impressions' ({m.impressions}); "
            "fix the ad-platform export so that clicks <= impressions",
        )
    if m.conversions is not None and m.conversions > m.clicks:
        raise _Reject(
            "quality_violation",
            f"field 'metrics.conversions' ({m.conversions}) exceeds 'metrics.clicks' ({m.clicks}); "
            "fix the export so that conversions <= clicks, or omit conversions",
        )


def _metadata(v: Any) -> dict[str, Any]:
    if type(v) is str:
        # Avro carries metadata as a JSON string (the schema cannot express free-form JSON).
        # Accepted in JSON payloads too: Avro container files are re-encoded to JSON by the
        # file source, so their metadata arrives here as such a string.
        size = len(v.encode("utf-8", "surrogatepass"))
        if size <= MAX_METADATA_BYTES:
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError as exc:
                _violation(
                    f"field 'metadata' is a string but not a serialized JSON object ({exc}); "
                    "send a JSON object (or, in Avro, the object serialized as a JSON string)"
                )
            if type(v) is not dict:
                _type_error("metadata", "a JSON object", v)
            return v
    else:
        if type(v) is not dict:
            if not isinstance(v, Mapping):
                _type_error("metadata", "a JSON object", v)
            v = dict(v)
        try:
            size = len(orjson.dumps(v))
        except orjson.JSONEncodeError as exc:
            _violation(f"field 'metadata' cannot be serialized as JSON ({exc}); use string keys and JSON values")
    if size > MAX_METADATA_BYTES:
        raise _Reject(
            "size_violation",
            f"field 'metadata' is {size} bytes serialized, more than the {MAX_METADATA_BYTES} allowed; "
            "keep only small attributes in metadata",
        )
    return v


def _keyed_map(v: Any, field: str, key_noun: str, example: str) -> dict[str, Any]:
    """A JSON object whose keys are short, clean names; values are checked by the caller."""
    m = _mapping(v, field, None)
    for k in m:
        if type(k) is not str or not k or len(k) > MAX_ID_CHARS:
            _violation(
                f"field {field!r} has the key {_show(k)}; {key_noun} must be non-empty strings of "
                f"at most {MAX_ID_CHARS} characters, e.g. {example!r}"
            )
        _check_ctrl(k, f"{field}.{k}")
    return dict(m)


def _consent(v: Any) -> dict[str, bool]:
    out = _keyed_map(v, "consent", "purposes", "analytics")
    for k, x in out.items():
        if type(x) is not bool:
            _type_error("consent." + k, "a boolean (true = granted)", x)
    return out


def _traits(v: Any) -> dict[str, str]:
    out = _keyed_map(v, "traits", "trait names", "email")
    for k, x in out.items():
        if type(x) is not str:
            if pii_kind(k) is not None:  # the value is personal data: not repeated in the detail
                _violation(f"field 'traits.{k}' must be a string, got {_kind(x)}; send a string")
            _type_error("traits." + k, "a string", x)
        if len(x) > MAX_STRING_CHARS:
            _too_long("traits." + k, x, MAX_STRING_CHARS)
    return out


def _check_fields(obj: Mapping[Any, Any], version: int) -> None:
    allowed = _ALLOWED[version]
    if obj.keys() <= allowed:
        return
    for k in obj:
        if k in allowed:
            continue
        since = _FIELD_SINCE.get(k) if type(k) is str else None
        if since is not None:
            if obj[k] is None:  # an Avro reader schema fills newer fields with null
                continue
            _violation(
                f"field {k!r} needs schema_version >= {since}, but the event is version {version}; "
                f"set 'schema_version' to {LATEST_VERSION} or omit it (latest)"
            )
        _violation(
            f"unknown field {_show(k)}; allowed fields (schema v{version}): {', '.join(sorted(allowed))}; "
            "put custom attributes into 'metadata'"
        )


# ---------------------------------------------------------------- validation


def _validate(obj: Mapping[Any, Any], record: RawRecord, now_ms: int, pii: PiiHasher) -> Event:
    g = obj.get
    sv = g("schema_version")
    if sv is None:
        rv = record.schema_version if record.format == "avro" else None
        version = LATEST_VERSION if rv is None else rv
        if version not in _ALLOWED:
            _violation(f"unknown writer schema version {version!r}; use one of {sorted(SCHEMA_VERSIONS)}")
    elif type(sv) is not int or sv not in _ALLOWED:
        _violation(
            f"field 'schema_version' is {_show(sv)}, not a known version; "
            f"use one of {sorted(SCHEMA_VERSIONS)} or omit it (latest = {LATEST_VERSION})"
        )
    else:
        version = sv
    _check_fields(obj, version)

    event_id = _req_id(g("event_id"), "event_id")
    tenant_id = _req_id(g("tenant_id"), "tenant_id")
    event_type = g("event_type")
    if type(event_type) is not str:
        if event_type is None:
            _missing("event_type", f"one of: {_EVENT_TYPES_TEXT}")
        _type_error("event_type", "a string", event_type)
    if event_type not in EVENT_TYPES:
        raise _Reject(
            "unknown_event_type",
            f"field 'event_type' is {_show(event_type)}, not a known event type; use one of: {_EVENT_TYPES_TEXT}",
        )
    ts_ms = _timestamp(g("timestamp"), now_ms)

    anonymous_id = _opt_str(g("anonymous_id"), "anonymous_id", MAX_ID_CHARS, True)
    user_id = _opt_str(g("user_id"), "user_id", MAX_ID_CHARS, True)
    device_id = _opt_str(g("device_id"), "device_id", MAX_ID_CHARS, True)
    if not (anonymous_id or user_id or device_id) and event_type in _PERSON_ID_TYPES:
        _violation(
            f"a {event_type} event needs at least one person id; "
            "send a non-empty 'anonymous_id', 'user_id' or 'device_id'"
        )
    channel = _opt_str(g("channel"), "channel", MAX_STRING_CHARS, True)
    campaign_id = _opt_str(g("campaign_id"), "campaign_id", MAX_ID_CHARS, True)

    v = g("utm")
    utm = EMPTY_UTM if v is None else _utm(v)
    v = g("click_ids")
    click_ids = {} if v is None else _click_ids(v)
    # Control characters are refused in the referrer like in UTMs: a URL never holds them raw.
    referrer = _opt_str(g("referrer"), "referrer", MAX_STRING_CHARS, True)
    v = g("context")
    context = None if v is None else _context(v)

    v = g("conversion")
    conversion = None
    if event_type == "conversion":
        if v is None:
            _missing("conversion", "an object {conversion_id, value, currency, type} on conversion events")
        conversion = _conversion(v)
    elif v is not None:
        _violation(
            f"field 'conversion' is only allowed on conversion events, this is a {event_type} event; "
            "remove it or send a separate conversion event"
        )

    v = g("metrics")
    metrics = None
    if event_type == "ad_spend":
        if not channel:
            _missing("channel", "the channel of the spend (e.g. 'paid_search') on ad_spend events")
        if not campaign_id:
            _missing("campaign_id", "the campaign the spend belongs to on ad_spend events")
        if v is None:
            _missing("metrics", "an object {impressions, clicks, cost, conversions} on ad_spend events")
        metrics = _metrics(v)
    elif v is not None:
        _violation(
            f"field 'metrics' is only allowed on ad_spend events, this is a {event_type} event; "
            "remove it or send an ad_spend event"
        )

    v = g("metadata")
    metadata = None if v is None else pii.hash_nested(tenant_id, _metadata(v))

    consent_v = g("consent")
    traits_v = g("traits")
    if consent_v is None and event_type == "consent":
        _missing("consent", 'a map purpose -> boolean on consent events, e.g. {"analytics": true}')
    if consent_v is not None or traits_v is not None:
        extra: dict[str, Any] = {}
        if consent_v is not None:
            consent = _consent(consent_v)
            if not consent and event_type == "consent":
                _violation("field 'consent' is empty; send at least one purpose, e.g. {\"analytics\": true}")
            extra["consent"] = consent
        if traits_v is not None:
            extra["traits"] = pii.hash_traits(tenant_id, _traits(traits_v))
        if metadata is None:
            metadata = extra
        else:
            for k in extra:
                if k in metadata:
                    _violation(
                        f"field 'metadata' has the key {k!r}, which clashes with the top-level field {k!r}; "
                        "rename the metadata key"
                    )
            metadata = {**metadata, **extra}

    if metrics is not None:
        _check_quality(metrics)  # last: a quality_violation is otherwise a well-formed event

    return Event(
        event_id,
        tenant_id,
        event_type,
        ts_ms,
        record.position,
        anonymous_id,
        user_id,
        device_id,
        channel,
        campaign_id,
        utm,
        click_ids,
        referrer,
        context,
        conversion,
        metrics,
        metadata,
        version,
    )


# ---------------------------------------------------------------- public API


def _cap(payload: Any) -> bytes:
    try:
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "replace")
        return bytes(payload[:RAW_CAP_BYTES])
    except Exception:
        return b""


def _ident(obj: Any) -> tuple[str, str, str]:
    if not isinstance(obj, Mapping):
        return ("", "", "")
    out = []
    for key in ("tenant_id", "event_id", "event_type"):
        try:
            v = obj.get(key)
        except Exception:
            v = None
        out.append(v[:MAX_ID_CHARS] if type(v) is str else "")
    return (out[0], out[1], out[2])


_UNKEYED = PiiHasher.unkeyed()


def _dead(record: RawRecord, reason: str, detail: str, obj: Any = None, *, pii: PiiHasher) -> DeadLetter:
    """The dead letter of ``record``: its raw bytes scrubbed of PII (``creditflow.pii.scrub_payload``)
    before they are capped, and emails and IPs in ``detail`` replaced by markers."""
    tenant_id, event_id, event_type = _ident(obj)
    payload = record.payload
    raw = scrub_payload(payload, pii, tenant_id) if isinstance(payload, bytes | bytearray | memoryview | str) else b""
    return DeadLetter(reason, scrub_text(detail), _cap(raw), record.position, tenant_id, event_id, event_type)


def decode_mapping(
    obj: Mapping[str, Any], record: RawRecord, now_ms: int, pii: PiiHasher = _UNKEYED
) -> Event | DeadLetter:
    """Validate an already-parsed event (a JSON object or an Avro record).

    ``record`` supplies the position, the raw bytes for dead letters and, when
    ``record.format == "avro"``, the writer schema version (used when the record has
    no ``schema_version``). ``metadata`` may be an object or, as Avro carries it, a
    string holding a serialized JSON object. ``pii`` hashes the emails and phones
    of ``traits`` and ``metadata`` and scrubs dead letters (``creditflow.pii``).
    Never raises.
    """
    try:
        if type(obj) is not dict and not isinstance(obj, Mapping):
            return _dead(
                record,
                "schema_violation",
                f"event must be an object, got {_kind(obj)}; send one JSON object (Avro record) per event",
                pii=pii,
            )
        return _validate(obj, record, now_ms, pii)
    except _Reject as rej:
        return _dead(record, rej.reason, rej.detail, obj, pii=pii)
    except Exception as exc:  # a bug, but never crash the flow on a payload
        return _dead(
            record,
            "schema_violation",
            f"event could not be validated ({type(exc).__name__}: {str(exc)[:200]}); "
            f"check the field types against schemas/event.v{LATEST_VERSION}.avsc",
            obj,
            pii=pii,
        )


def _read_avro(record: RawRecord, pii: PiiHasher) -> Any:
    version = record.schema_version
    if version is None:
        version = LATEST_VERSION
    writer = _WRITER_SCHEMAS.get(version) if type(version) is int else None
    if writer is None:
        return _dead(
            record,
            "schema_violation",
            f"unknown writer schema version {version!r} on the Avro record; "
            f"use one of {sorted(SCHEMA_VERSIONS)} (RawRecord.schema_version)",
            pii=pii,
        )
    payload = record.payload
    buf = io.BytesIO(payload)
    try:
        obj = fastavro.schemaless_reader(buf, writer, None if version == LATEST_VERSION else _READER_SCHEMA)
    except Exception as exc:
        return _dead(
            record,
            "parse_error",
            f"payload is not a valid Avro record of schema v{version} ({type(exc).__name__}: {str(exc)[:200]}); "
            "check that the producer writes schemaless records with schemas/event.v"
            f"{version}.avsc and that RawRecord.schema_version names that version",
            pii=pii,
        )
    if buf.tell() != len(payload):
        return _dead(
            record,
            "parse_error",
            f"Avro payload has {len(payload) - buf.tell()} trailing bytes after the record of schema v{version}; "
            "send exactly one schemaless record per payload, written with the same schema version",
            obj,
            pii=pii,
        )
    if type(obj) is not dict:
        return _dead(record, "parse_error", f"Avro payload decoded to {_kind(obj)}, not a record", pii=pii)
    return obj


def decode(record: RawRecord, now_ms: int, pii: PiiHasher = _UNKEYED) -> Event | DeadLetter:
    """Decode ``record`` (JSON or schemaless Avro) and validate it. Never raises.

    ``now_ms`` (epoch ms) bounds timestamps: more than 24 h after it is invalid.
    ``pii`` hashes the emails and phones of traits and metadata, and scrubs the
    raw bytes of dead letters (``creditflow.pii``); the default is the public,
    unkeyed hasher.
    """
    try:
        payload = record.payload
        size = len(payload)
        if size > MAX_PAYLOAD_BYTES:
            return _dead(
                record,
                "size_violation",
                f"payload is {size} bytes, more than the {MAX_PAYLOAD_BYTES} allowed; "
                "send one event per record and keep metadata small",
                pii=pii,
            )
        fmt = record.format
        if fmt == "json":
            try:
                obj = orjson.loads(payload)
            except (orjson.JSONDecodeError, TypeError) as exc:
                return _dead(
                    record,
                    "parse_error",
                    f"payload is not valid JSON ({str(exc)[:200]}); send one UTF-8 JSON object per record "
                    "(no NaN/Infinity, no trailing data)",
                    pii=pii,
                )
            if type(obj) is not dict:
                return _dead(
                    record,
                    "parse_error",
                    f"payload is a JSON {_kind(obj)}, not an object; send one JSON object per event",
                    pii=pii,
                )
        elif fmt == "avro":
            obj = _read_avro(record, pii)
            if type(obj) is DeadLetter:
                return obj
        else:
            return _dead(record, "parse_error", f"unknown payload format {_show(fmt)}; use 'json' or 'avro'", pii=pii)
    except Exception as exc:
        return _dead(record, "parse_error", f"payload could not be read ({type(exc).__name__}); send bytes", pii=pii)
    if SOURCE_ERROR_KEY in obj:
        return _dead(
            record,
            "source_error",
            f"the source could not deliver this record: {str(obj[SOURCE_ERROR_KEY])[:500]}",
            pii=pii,
        )
    return decode_mapping(obj, record, now_ms, pii)


def encode_avro(obj: Mapping[str, Any], version: int | None = None) -> bytes:
    """Serialize a JSON-shaped event as a schemaless Avro record of ``version``
    (default latest) — the inverse of ``decode`` for ``format="avro"``.

    A ``metadata`` object is JSON-encoded (Avro carries it as a string). Fields
    the schema version does not have, or missing required ones, raise
    ``ValueError``; values are not validated beyond their Avro types.
    """
    schema = load_schema(LATEST_VERSION if version is None else version)
    datum = dict(obj)
    md = datum.get("metadata")
    if md is not None and not isinstance(md, str):
        datum["metadata"] = orjson.dumps(md).decode()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum, strict_allow_default=True)
    return buf.getvalue()
