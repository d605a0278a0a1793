"""The packed state of one person's journey (``state.journeys``): small in memory, small in snapshots.

Bytewax keeps one logic object per key for as long as the person is active,
so a journey between events is two objects (``JourneyState``):

- ``packed``: one ``bytes`` holding the numbers and the ids: a compact header
  (flags, newest event time, wall time of the last event, counts, then only
  the times not at their defaults: forgotten-until, the first and last UTMs,
  the consent decision) and the touch times (4-byte offsets back from the
  newest event when every touch is within ~49 days of it), then the
  touch-id digests, the seen conversions (times, then ids), the open
  conversions (id, time, value, event id each) and the touch event ids. An id
  in canonical (lowercase) UUID form takes 17 bytes, any other 1-2 bytes of
  length plus its UTF-8 (``pack_id``).
- ``refs``: ``()`` or one tuple of the first UTM, the last UTM, one
  ``(currency, conversion_type)`` per open conversion (a tuple, ``()`` for
  most persons) and one ``(event_type, channel, campaign_id)`` per touch.
  These values repeat across a tenant's traffic, so they are shared between
  persons through bounded intern tables (``intern_meta``, ``intern_kind``,
  ``intern_utm``). Pickling writes their
  values, so a snapshot never depends on the process that wrote it; loading
  shares them again.

``Journey`` is the same state unpacked, for the time one batch of a person's
events is applied. ``loadtest/state_memory.py`` measures the bytes per key.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeVar

from creditflow.events import Utm

STATE_LAYOUT_VERSION = 6
"""Bump when ``JourneyState`` changes shape; snapshots of a layout not in ``READABLE_LAYOUTS`` are refused.

2: a dataclass of Python lists and tuples. 3: packed bytes plus shared references.
4: the person's consent (state and event time) in the header.
5: touches stay after a conversion credits them; open conversions (restatable) after the seen ones.
6: a compact header: fields at their defaults left out, touch times as 4-byte offsets from the newest event
(156 -> 126 packed bytes per journey on average, measured on a 1.15M-person load test).
"""

READABLE_LAYOUTS = (STATE_LAYOUT_VERSION, 5)
"""Layouts a resume reads: a layout-5 row is upgraded when loaded (``upgraded_row``), nothing else changes."""

CONSENT_UNKNOWN, CONSENT_GRANTED, CONSENT_WITHDRAWN = 0, 1, 2
"""A person's consent to the tenant's attribution purpose: never stated, granted, withdrawn."""

DIGEST_BYTES = 8
"""Size of a remembered touch-id digest."""

Touch = tuple[int, str, str, str, str]
"""(ts_ms, event_type, channel, campaign_id, event_id), kept sorted (by ts_ms, ties by the rest)."""

Meta = tuple[str, ...]
"""(event_type, channel, campaign_id) of a touch: the part many persons share.

Typed as a variable-length tuple on purpose: mypyc (``creditflow.native``) keeps fixed-length tuples
unboxed, as C structs, and boxes a new tuple object at each use, which would defeat the intern tables
that share one tuple among many persons."""


JourneyRow = tuple[int, bytes, tuple[Any, ...]]
"""A journey's snapshot (``JourneyLogic.snapshot``): ``(layout, packed, refs)``, the UTMs of ``refs`` as plain
tuples (``journey_row``). A plain tuple pickles in C, several times faster than an object with a
``__reduce__``, and the snapshot pause pickles every person changed in the epoch.
``JourneyState.of_row`` reads one."""

JOURNEY_LAYOUT_AT = 0
"""Where a journey row holds its layout (``operators.state_guard``)."""


class OpenConversion(NamedTuple):
    """A credited conversion that a late touch or conversion may still restate: what scoring it again needs."""

    conversion_id: str
    ts_ms: int
    event_id: str
    value: float
    currency: str
    conversion_type: str


_UUID_TAG = 0x7F
_LONG_TAG = 0x80


def pack_id(text: str) -> bytes:
    """An id as self-delimiting bytes: 17 for a lowercase canonical UUID, else a 1-2 byte length and UTF-8.

    Equal ids give equal bytes (so packed ids compare without unpacking) and
    ``unpack_id`` gives the very same string back.

    >>> len(pack_id("6f1c3e0a-2b4d-4e6f-8a9b-0c1d2e3f4a5b")), pack_id("ord-1")
    (17, b'\\x05ord-1')
    """
    if len(text) == 36 and text[8] == "-" and text[13] == "-" and text[18] == "-" and text[23] == "-":
        hexa = text.replace("-", "")  # any other dash makes it too short: not a UUID
        try:
            raw = bytes.fromhex(hexa)
        except ValueError:
            raw = b""
        if len(raw) == 16 and raw.hex() == hexa:  # fromhex skips blanks and reads capitals: compare back
            return b"\x7f" + raw
    data = text.encode("utf-8", "surrogatepass")
    n = len(data)
    if n < _UUID_TAG:
        return bytes((n,)) + data
    if n >= 1 << 15:
        raise ValueError(f"an id of {n} UTF-8 bytes is too long to keep in a journey (limit 32767)")
    return bytes((_LONG_TAG | n >> 8, n & 0xFF)) + data


def unpack_id(packed: bytes) -> str:
    """The id that ``pack_id`` packed into ``packed`` (exactly one packed id)."""
    tag = packed[0]
    if tag == _UUID_TAG:
        h = packed[1:].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return packed[1 if tag < _UUID_TAG else 2 :].decode("utf-8", "surrogatepass")


def _id_end(buf: bytes, at: int) -> int:
    """Where the id packed at ``buf[at:]`` ends."""
    tag = buf[at]
    if tag == _UUID_TAG:
        return at + 17
    if tag < _UUID_TAG:
        return at + 1 + tag
    return at + 2 + ((tag & 0x7F) << 8 | buf[at + 1])


def _next_id(buf: bytes, at: int) -> tuple[str, int]:
    """The id packed at ``buf[at:]`` and where the next field starts."""
    end = _id_end(buf, at)
    return unpack_id(buf[at:end]), end


def split_ids(buf: bytes) -> list[bytes]:
    """Packed ids laid end to end, one by one (each still packed)."""
    out = []
    i, end = 0, len(buf)
    while i < end:
        j = _id_end(buf, i)
        out.append(buf[i:j])
        i = j
    return out


_INTERN_LIMIT = 1 << 16
"""Distinct metas and distinct UTMs shared per process, each; past it values are kept unshared (still correct).

At most a few tens of MB even when every value is distinct. The tables are
plain dicts of tuples of strings: ``get``/``setdefault`` are atomic under the
GIL, so Bytewax worker threads may share them.
"""
_metas: dict[Meta, Meta] = {}
_kinds: dict[tuple[str, ...], tuple[str, ...]] = {}
_utms: dict[tuple[str, str, str, str, str], Utm] = {}


_K = TypeVar("_K")
_V = TypeVar("_V")


def _shared(table: dict[_K, _V], key: _K, value: _V) -> _V:
    """The copy of ``value`` stored under ``key`` in ``table``, or ``value`` itself once the table is full."""
    got = table.get(key)
    if got is None:
        if len(table) >= _INTERN_LIMIT:
            return value
        got = table.setdefault(key, value)
    return got


def intern_meta(meta: Meta) -> Meta:
    """The shared copy of ``meta`` (equal value; the table is bounded)."""
    return _shared(_metas, meta, meta)


def intern_kind(kind: tuple[str, ...]) -> tuple[str, ...]:
    """The shared copy of a conversion's ``(currency, conversion_type)`` (equal value; the table is bounded)."""
    return _shared(_kinds, kind, kind)


def intern_utm(utm: Utm) -> Utm:
    """The shared copy of ``utm`` (equal value; the table is bounded)."""
    return _shared(_utms, (utm.source, utm.medium, utm.campaign, utm.content, utm.term), utm)


_HEADER = "<BqdBBHB"
"""flags, last_event_ms, last_seen_wall_s, number of touch-id digests, number of seen conversions,
bytes of the seen conversions, consent; then one ``q`` per field ``flags`` says is present (the
forgotten-until time, the first and the last UTM's times, the consent's event time, in this order), then
the touch times: one ``I`` each (back from ``last_event_ms``) under ``_SHORT_TS``, else one ``q`` each."""
_FORGOTTEN, _FIRST_UTM_TS, _LAST_UTM_TS, _CONSENT_TS, _SHORT_TS = 1, 2, 4, 8, 16
"""Flags: the field is stored (absent: the forgotten-until and consent times are -1, the first UTM's time 0,
the last UTM's time the first's); ``_SHORT_TS``: every touch is at most ``_SHORT_SPAN`` ms before the newest event."""
_SHORT_SPAN = (1 << 32) - 1
_OPTIONAL = (_FORGOTTEN, _FIRST_UTM_TS, _LAST_UTM_TS, _CONSENT_TS)
_WALL = struct.Struct("<d")
_OPEN = struct.Struct("<qd")
"""An open conversion's time and value, between its packed id and its packed event id."""
_WALL_AT = 9
_HEADS: dict[int, struct.Struct] = {}
"""Header structs by ``flags | n_touches << 5``: at most 32 per touch count (``max_touches`` bounds those)."""
_INTS: dict[int, struct.Struct] = {}

_HEADER_5 = struct.Struct("<qqdqqBBHBq")
"""Layout 5's header (``upgraded_row``): last_event_ms, forgotten_until_ms, last_seen_wall_s, first_utm_ts,
last_utm_ts, digests, seen conversions, their bytes, consent, consent's event time; one ``q`` per touch."""


def _head(flags: int, n_touches: int) -> struct.Struct:
    """The header with the optional fields ``flags`` names, plus ``n_touches`` touch times."""
    s = _HEADS.get(flags | n_touches << 5)
    if s is None:
        optional = "q" * sum(1 for flag in _OPTIONAL if flags & flag)
        per_touch = "I" if flags & _SHORT_TS else "q"
        s = _HEADS[flags | n_touches << 5] = struct.Struct(f"{_HEADER}{optional}{n_touches}{per_touch}")
    return s


def _pack_head(
    last_event_ms: int,
    forgotten_until_ms: int,
    wall_s: float,
    first_ts: int,
    last_ts: int,
    n_digests: int,
    n_convs: int,
    conv_bytes: int,
    consent: int,
    consent_ts_ms: int,
    ts: list[int] | tuple[int, ...],
) -> bytes:
    """The packed header of a journey (``_HEADER``): the fields at their defaults are left out."""
    flags, optional = 0, []
    if forgotten_until_ms != -1:
        flags |= _FORGOTTEN
        optional.append(forgotten_until_ms)
    if first_ts:
        flags |= _FIRST_UTM_TS
        optional.append(first_ts)
    if last_ts != first_ts:
        flags |= _LAST_UTM_TS
        optional.append(last_ts)
    if consent_ts_ms != -1:
        flags |= _CONSENT_TS
        optional.append(consent_ts_ms)
    n = len(ts)
    times: Iterable[int] = ts
    if n and ts[-1] <= last_event_ms and last_event_ms - ts[0] <= _SHORT_SPAN:  # ts is sorted
        flags |= _SHORT_TS
        times = map(last_event_ms.__sub__, ts)
    head = _HEADS.get(flags | n << 5) or _head(flags, n)
    return head.pack(flags, last_event_ms, wall_s, n_digests, n_convs, conv_bytes, consent, *optional, *times)


def _ints(n: int) -> struct.Struct:
    s = _INTS.get(n)
    if s is None:
        s = _INTS[n] = struct.Struct(f"<{n}q")
    return s


class Journey:
    """One person's journey, unpacked while a batch of their events is applied.

    ``ts`` and ``metas`` are the touches' times and shared parts, in order; the
    touches' event ids stay packed (``ids``) until a conversion needs them.
    Seen conversions are ``(packed conversion id, conversion ts_ms)``, oldest
    first; ``opens`` the seen conversions that may still be restated, oldest first.
    """

    __slots__ = (
        "last_event_ms",
        "forgotten_until_ms",
        "last_seen_wall_s",
        "first_utm",
        "last_utm",
        "ts",
        "metas",
        "_ids",
        "_id_list",
        "recent_touch_ids",
        "seen_conversions",
        "opens",
        "consent",
        "consent_ts_ms",
    )

    def __init__(self) -> None:
        self.last_event_ms = -1
        """Event time of the person's newest event."""
        self.forgotten_until_ms = -1
        """Event time of the newest touch or conversion this journey dropped (age, caps): nothing at or
        before it is known any more, so no touch at or before it is eligible, and a conversion whose
        lookback window reaches back to it can no longer be restated."""
        self.last_seen_wall_s = 0.0
        """Wall time (epoch seconds) of the last event processed, for the idle TTL."""
        self.first_utm: tuple[int, Utm] | None = None
        self.last_utm: tuple[int, Utm] | None = None
        self.ts: list[int] = []
        self.metas: list[Meta] = []
        self._ids = b""
        self._id_list: list[bytes] | None = None
        self.recent_touch_ids = b""
        """Packed 8-byte blake2b digests of the person's last ``RECENT_TOUCH_IDS`` touch event ids."""
        self.seen_conversions: list[tuple[bytes, int]] = []
        self.opens: list[OpenConversion] = []
        self.consent = CONSENT_UNKNOWN
        """``CONSENT_UNKNOWN``, ``CONSENT_GRANTED`` or ``CONSENT_WITHDRAWN`` (the tenant's attribution purpose)."""
        self.consent_ts_ms = -1
        """Event time of the consent decision; a later decision (from any of the person's devices) wins."""

    # -- packing -----------------------------------------------------------
    @classmethod
    def unpack(cls, packed: bytes, refs: tuple[Any, ...]) -> Journey:
        """The journey of ``JourneyState(packed, refs)``."""
        if not packed:
            return cls()
        j = cls()  # not cls.__new__: mypyc cannot compile it; __init__ costs ~0.3 us of plain stores
        n = len(refs) - 3 if refs else 0
        flags = packed[0]
        head = _HEADS.get(flags | n << 5) or _head(flags, n)
        values = head.unpack_from(packed)
        _, j.last_event_ms, j.last_seen_wall_s, n_digests, n_convs, conv_bytes, j.consent = values[:7]
        at = 7
        if flags & _FORGOTTEN:
            j.forgotten_until_ms, at = values[at], at + 1
        else:
            j.forgotten_until_ms = -1
        first_ts = last_ts = 0
        if flags & _FIRST_UTM_TS:
            first_ts = last_ts = values[at]
            at += 1
        if flags & _LAST_UTM_TS:
            last_ts, at = values[at], at + 1
        if flags & _CONSENT_TS:
            j.consent_ts_ms, at = values[at], at + 1
        else:
            j.consent_ts_ms = -1
        if flags & _SHORT_TS:
            newest = j.last_event_ms
            j.ts = [newest - back for back in values[at:]]
        else:
            j.ts = list(values[at:])
        if refs:
            first_utm, last_utm = refs[0], refs[1]
            j.first_utm = None if first_utm is None else (first_ts, first_utm)
            j.last_utm = None if last_utm is None else (last_ts, last_utm)
            kinds = refs[2]
            j.metas = list(refs[3:])
        else:
            j.first_utm = j.last_utm = None
            kinds = ()
            j.metas = []
        at = head.size + n_digests * DIGEST_BYTES
        j.recent_touch_ids = packed[head.size : at]
        if n_convs:
            end = at + conv_bytes
            times = _ints(n_convs).unpack_from(packed, at)
            j.seen_conversions = list(zip(split_ids(packed[at + 8 * n_convs : end]), times, strict=True))
            at = end
        else:
            j.seen_conversions = []
        j.opens = []
        for currency, conversion_type in kinds:
            cid, at = _next_id(packed, at)
            ts_ms, value = _OPEN.unpack_from(packed, at)
            event_id, at = _next_id(packed, at + _OPEN.size)
            j.opens.append(OpenConversion(cid, ts_ms, event_id, value, currency, conversion_type))
        j._ids = packed[at:]
        j._id_list = None
        return j

    def pack(self) -> tuple[bytes, tuple[Any, ...]]:
        """(packed, refs) of ``JourneyState``."""
        first, last = self.first_utm, self.last_utm
        digests = self.recent_touch_ids
        convs = self.seen_conversions
        if convs:
            conv_ids = b"".join([c[0] for c in convs])
            conv_part = _ints(len(convs)).pack(*[c[1] for c in convs]) + conv_ids
        else:
            conv_part = b""
        head = _pack_head(
            self.last_event_ms,
            self.forgotten_until_ms,
            self.last_seen_wall_s,
            first[0] if first else 0,
            last[0] if last else 0,
            len(digests) // DIGEST_BYTES,
            len(convs),
            len(conv_part),
            self.consent,
            self.consent_ts_ms,
            self.ts,
        )
        metas, opens = self.metas, self.opens
        if opens:
            kinds: tuple[tuple[str, ...], ...] = tuple(intern_kind((o.currency, o.conversion_type)) for o in opens)
            open_part = b"".join(
                pack_id(o.conversion_id) + _OPEN.pack(o.ts_ms, o.value) + pack_id(o.event_id) for o in opens
            )
        else:
            kinds, open_part = (), b""
        if metas or first or last or opens:
            refs: tuple[Any, ...] = (first[1] if first else None, last[1] if last else None, kinds, *metas)
        else:
            refs = ()
        ids = self._ids if self._id_list is None else self.ids_bytes()
        return b"".join((head, digests, conv_part, open_part, ids)), refs

    # -- touches ------------------------------------------------------------
    def ids(self) -> list[bytes]:
        """The touches' packed event ids, in touch order (split on first use)."""
        if self._id_list is None:
            self._id_list = split_ids(self._ids)
        return self._id_list

    def ids_bytes(self) -> bytes:
        if self._id_list is not None:
            self._ids = b"".join(self._id_list)
            self._id_list = None
        return self._ids

    def touch(self, i: int) -> Touch:
        meta = self.metas[i]
        return (self.ts[i], meta[0], meta[1], meta[2], unpack_id(self.ids()[i]))

    def touches(self, upto: int | None = None) -> list[Touch]:
        """The first ``upto`` touches (all by default) as ``Touch`` tuples."""
        ids = self.ids()
        return [
            (ts, meta[0], meta[1], meta[2], unpack_id(pid))
            for ts, meta, pid in zip(self.ts[:upto], self.metas[:upto], ids[:upto], strict=True)
        ]

    def insert(self, ts_ms: int, meta: Meta, event_id: str) -> None:
        """Insert a touch at its place: after older touches, ties ordered as ``Touch`` tuples."""
        ts = self.ts
        if not ts or ts_ms > ts[-1]:  # the usual case: the newest touch
            ts.append(ts_ms)
            self.metas.append(meta)
            if self._id_list is None:
                self._ids += pack_id(event_id)
            else:
                self._id_list.append(pack_id(event_id))
            return
        k = bisect.bisect_right(ts, ts_ms)
        if k and ts[k - 1] == ts_ms:
            new = (ts_ms, meta[0], meta[1], meta[2], event_id)
            while k and ts[k - 1] == ts_ms and self.touch(k - 1) > new:
                k -= 1
        ts.insert(k, ts_ms)
        self.metas.insert(k, meta)
        self.ids().insert(k, pack_id(event_id))

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest touches."""
        if count <= 0:
            return
        if count >= len(self.ts):
            self.ts, self.metas, self._ids, self._id_list = [], [], b"", None
            return
        del self.ts[:count]
        del self.metas[:count]
        del self.ids()[:count]


class JourneyState:
    """The snapshot of one person's journey: packed, immutable, small (see the module doc).

    ``packed`` and ``refs`` are what ``JourneyLogic`` keeps between events. The
    read-only properties unpack it, for tests and tools.
    """

    __slots__ = ("packed", "refs", "layout")

    def __init__(self, packed: bytes = b"", refs: tuple[Any, ...] = (), layout: int = STATE_LAYOUT_VERSION) -> None:
        self.packed = packed
        self.refs = refs
        self.layout = layout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_state_of_row, (self.row(),))  # e.g. inside an ``Adopt`` crossing processes

    @classmethod
    def of_row(cls, row: JourneyRow) -> JourneyState:
        """The state a snapshot row (``JourneyLogic.snapshot``) holds, its values shared again (tests, tools)."""
        layout, packed, refs = upgraded_row(row)
        return cls(packed, interned_refs(refs, layout), layout)

    def row(self) -> JourneyRow:
        """This state as a snapshot row (``journey_row``)."""
        return journey_row(self.packed, self.refs, self.layout)

    def __setstate__(self, state: Any) -> None:
        """Only for snapshots pickled before layout 3 (a dataclass): keep their layout so the guard refuses them."""
        _, slots = state if isinstance(state, tuple) else (None, state)
        self.packed, self.refs = b"", ()
        layout = slots.get("layout") if isinstance(slots, dict) else None
        self.layout = layout if isinstance(layout, int) else -1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JourneyState) and (self.layout, self.packed, self.refs) == (
            other.layout,
            other.packed,
            other.refs,
        )

    def __hash__(self) -> int:
        return hash((self.layout, self.packed, self.refs))

    def __repr__(self) -> str:
        return f"JourneyState(layout={self.layout}, {len(self.packed)} bytes, {len(self.touches)} touches)"

    def unpacked(self) -> Journey:
        return Journey.unpack(self.packed, self.refs)

    @property
    def touches(self) -> list[Touch]:
        return self.unpacked().touches()

    @property
    def forgotten_until_ms(self) -> int:
        return self.unpacked().forgotten_until_ms

    @property
    def open_conversions(self) -> list[OpenConversion]:
        return self.unpacked().opens

    @property
    def last_event_ms(self) -> int:
        return self.unpacked().last_event_ms

    @property
    def last_seen_wall_s(self) -> float:
        return self.unpacked().last_seen_wall_s

    @property
    def first_utm(self) -> tuple[int, Utm] | None:
        return self.unpacked().first_utm

    @property
    def last_utm(self) -> tuple[int, Utm] | None:
        return self.unpacked().last_utm

    @property
    def seen_conversions(self) -> list[tuple[str, int]]:
        """(conversion_id, conversion_ts_ms) of recent conversions, newest last."""
        return [(unpack_id(c), ts) for c, ts in self.unpacked().seen_conversions]

    @property
    def recent_touch_ids(self) -> bytes:
        return self.unpacked().recent_touch_ids


def journey_row(packed: bytes, refs: tuple[Any, ...], layout: int = STATE_LAYOUT_VERSION) -> JourneyRow:
    """The snapshot row of a journey: values only (UTMs as plain tuples), so it never depends on this
    process's tables, and it pickles in C (no ``__reduce__`` per person)."""
    if refs and layout == STATE_LAYOUT_VERSION:
        first, last = refs[0], refs[1]
        plain_first = first.as_tuple() if first is not None else None
        plain_last = plain_first if last is first else (last.as_tuple() if last is not None else None)
        refs = (plain_first, plain_last, *refs[2:])
    return (layout, packed, refs)


def upgraded_row(row: JourneyRow) -> JourneyRow:
    """``row`` in this code's layout: a layout-5 row gets the compact header, the rest of its bytes as they are.

    Rows of other layouts come back unchanged (the state guard refuses them).

    >>> j = Journey()
    >>> j.last_event_ms, j.ts, j.metas, j._ids = 5_000, [1_000], [("click", "email", "")], pack_id("c1")
    >>> packed, refs = j.pack()
    >>> old = _HEADER_5.pack(5_000, -1, 0.0, 0, 0, 0, 0, 0, 0, -1) + (1_000).to_bytes(8, "little") + pack_id("c1")
    >>> upgraded_row((5, old, refs)) == (STATE_LAYOUT_VERSION, packed, refs)
    True
    """
    layout, packed, refs = row
    if layout != 5 or not packed:
        return (STATE_LAYOUT_VERSION, packed, refs) if layout == 5 else row
    n = len(refs) - 3 if refs else 0
    old = struct.Struct(f"{_HEADER_5.format}{n}q")
    last_event_ms, forgotten, wall_s, first_ts, last_ts, digests, convs, conv_bytes, consent, consent_ts, *ts = (
        old.unpack_from(packed)
    )
    head = _pack_head(
        last_event_ms, forgotten, wall_s, first_ts, last_ts, digests, convs, conv_bytes, consent, consent_ts, ts
    )
    return (STATE_LAYOUT_VERSION, head + packed[old.size :], refs)


def interned_refs(refs: tuple[Any, ...], layout: int) -> tuple[Any, ...]:
    """The ``refs`` of a row (``journey_row``) as a journey holds them: UTMs as ``Utm`` again, every value shared
    through the bounded intern tables (those of another layout as they are: the state guard refuses them)."""
    if not refs or layout != STATE_LAYOUT_VERSION:
        return refs
    first, last = refs[0], refs[1]
    first_utm = intern_utm(Utm(*first)) if first is not None else None
    last_utm = first_utm if last is first else (intern_utm(Utm(*last)) if last is not None else None)
    kinds = tuple(intern_kind(tuple(k)) for k in refs[2])  # type: ignore[arg-type]
    return (first_utm, last_utm, kinds, *(intern_meta(tuple(m)) for m in refs[3:]))  # type: ignore[arg-type]


def _load_state(layout: int, packed: bytes, refs: tuple[Any, ...]) -> JourneyRow:
    """What a ``JourneyState`` pickled by an earlier creditflow (through this name) loads as: its row."""
    return (layout, packed, refs)


def _state_of_row(row: JourneyRow) -> JourneyState:
    return JourneyState.of_row(row)


def wall_s_of(packed: bytes) -> float:
    """``last_seen_wall_s`` of a packed state, without unpacking the rest (0.0 for the empty state)."""
    return _WALL.unpack_from(packed, _WALL_AT)[0] if packed else 0.0
