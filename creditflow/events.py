"""The typed records that travel through a creditflow dataflow.

Every stage speaks in these types, so they are the contracts between modules:

    RawRecord  --decode/validate-->  Event | DeadLetter
    Event      --identity-->         PersonEvent (adds the person id)
    PersonEvent --journeys-->        CreditRow, ConversionRow
    Event/CreditRow --kpi windows--> KpiRow | DeadLetter (late_event)

Items cross process boundaries (Bytewax pickles them), so they are small
frozen dataclasses with ``slots``. Timestamps are integer epoch milliseconds
(UTC) everywhere inside the flow.

>>> pos = SourcePosition("file", "events.jsonl#0", "0")
>>> ev = Event(event_id="e1", tenant_id="t1", event_type="click", ts_ms=0,
...            user_id="u1", position=pos)
>>> ev.is_touch, ev.person_ids()
(True, ('u1', '', ''))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

if TYPE_CHECKING:
    from creditflow.model_weights import ModelWeights

EventType = Literal[
    "impression",
    "click",
    "page_view",
    "conversion",
    "ad_spend",
    "identify",
    "consent",
    "deletion_request",
]
EVENT_TYPES: frozenset[str] = frozenset(EventType.__args__)  # type: ignore[attr-defined]
TOUCH_TYPES: frozenset[str] = frozenset({"impression", "click", "page_view"})
"""Event types that can become touchpoints of a journey."""
PERSON_EVENT_TYPES: frozenset[str] = TOUCH_TYPES | {"conversion"}
"""Event types that make a journey (they must name at least one person id)."""
IDENTITY_EVENT_TYPES: frozenset[str] = PERSON_EVENT_TYPES | {"identify", "consent", "deletion_request"}
"""Event types the identity step reads: journeys' events, links, consent decisions and erasures."""

ClickIdName = Literal["gclid", "fbclid", "ttclid", "li_fat_id", "msclkid"]
CLICK_ID_NAMES: tuple[str, ...] = ("gclid", "fbclid", "ttclid", "li_fat_id", "msclkid")
UTM_FIELDS: tuple[str, ...] = ("source", "medium", "campaign", "content", "term")

DeadLetterReason = Literal[
    "parse_error",
    "schema_violation",
    "size_violation",
    "unknown_event_type",
    "invalid_timestamp",
    "quality_violation",
    "late_event",
    "source_error",
    "duplicate_conversion",
    "duplicate_event",
]
DEAD_LETTER_REASONS: frozenset[str] = frozenset(DeadLetterReason.__args__)  # type: ignore[attr-defined]

PayloadFormat = Literal["json", "avro"]


_T = TypeVar("_T")


def pickled_positionally(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass a ``__reduce__`` of its constructor arguments.

    Items crossing Bytewax workers are pickled; the ``__getstate__``/``__setstate__``
    that ``dataclass(slots=True)`` generates run in Python per field, twice as slow
    (measured: an Event round trip 14.6 µs, positionally 8.1 µs).

    >>> import pickle
    >>> pickle.loads(pickle.dumps(SourcePosition("redis", "ev0", "1-0")))
    SourcePosition(source='redis', partition='ev0', offset='1-0')
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if len(fields) < 2 or not all(f.init for f in fields):
        # attrgetter of one name returns the value, not a tuple; fields outside __init__ cannot be passed
        raise TypeError(f"{cls.__name__} needs two or more __init__ fields to pickle positionally")
    get: Callable[[Any], tuple[Any, ...]] = attrgetter(*(f.name for f in fields))

    def __reduce__(self: Any) -> tuple[type[_T], tuple[Any, ...]]:
        return cls, get(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]
    return cls


def pickled_flat(**nested: type) -> Callable[[type[_T]], type[_T]]:
    """``pickled_positionally``, with the records in the ``nested`` fields pickled as tuples of their fields.

    Every class in a pickle costs an import and a lookup on each side, and
    Bytewax pickles each item that crosses processes on its own: an ``Event``
    with its position, UTM, context and conversion is five classes, flattened
    one (a round trip 0.6x as long, ``loadtest/pickle_cost.py``). The named
    fields hold a record of the given (flat) class, ``None``, or the field's
    default, which comes back as the same object.

    >>> import pickle
    >>> ev = Event("e1", "t1", "click", 0, SourcePosition("redis", "ev0", "1-0"), context=Context(ip="10.0.0.1"))
    >>> data = pickle.dumps(ev)
    >>> pickle.loads(data) == ev, b"Context" in data, pickle.loads(data).utm is EMPTY_UTM
    (True, False, True)
    """

    def decorate(cls: type[_T]) -> type[_T]:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        unknown = set(nested) - {f.name for f in fields}
        if unknown or not all(f.init for f in fields):
            raise TypeError(f"{cls.__name__}: cannot pickle flat (unknown fields {sorted(unknown)} or non-init fields)")
        names: dict[str, Any] = {"_cls": cls}
        encode, decode = [], []
        for i, f in enumerate(fields):
            kind = nested.get(f.name)
            if kind is None:
                encode.append(f"self.{f.name}")
                decode.append(f"a{i}")
                continue
            names[f"_kind{i}"] = kind
            names[f"_empty{i}"] = None if f.default is dataclasses.MISSING else f.default
            parts = "".join(f"n.{g.name}, " for g in dataclasses.fields(kind))
            encode.append(f"None if (n := self.{f.name}) is None or n is _empty{i} else ({parts})")
            decode.append(f"_empty{i} if a{i} is None else _kind{i}(*a{i})")
        params = ", ".join(f"a{i}" for i in range(len(fields)))
        source = (
            f"def _from_flat({params}):\n    return _cls({', '.join(decode)})\n"
            f"def __reduce__(self):\n    return _from_flat, ({', '.join(encode)},)\n"
        )
        exec(source, names)  # noqa: S102 - generated from the dataclass's own fields, as dataclasses does
        rebuild, reduce = names["_from_flat"], names["__reduce__"]
        rebuild.__qualname__ = f"{cls.__qualname__}._from_flat"  # pickled by reference to the class attribute
        rebuild.__module__ = reduce.__module__ = cls.__module__
        reduce.__qualname__ = f"{cls.__qualname__}.__reduce__"
        cls._from_flat = staticmethod(rebuild)  # type: ignore[attr-defined]
        cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]
        return cls

    return decorate


_NO_ARG: Any = object()


def fast_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores through the slots' descriptors.

    The ``__init__`` that ``dataclass(frozen=True)`` generates stores each field with
    ``object.__setattr__(self, name, value)``; calling each slot's own ``__set__`` is
    half the cost (measured: an 18-field ``Event`` 4.1 -> 2.0 µs; the flow builds
    several records per event). Same signature, defaults and default factories;
    instances stay frozen. Classes with ``__post_init__`` or ``InitVar``s are refused.

    >>> ev = Event("e1", "t1", "click", 0, SourcePosition("redis", "ev0", "1-0"), user_id="u1")
    >>> ev.user_id, ev.click_ids, ev == dataclasses.replace(ev)
    ('u1', {}, True)
    >>> ev.user_id = "u2"
    Traceback (most recent call last):
    dataclasses.FrozenInstanceError: cannot assign to field 'user_id'
    """
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if not (params.frozen and "__slots__" in cls.__dict__) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} must be a frozen, slotted dataclass without __post_init__")
    if any(not f.init or f.kw_only for f in fields):
        raise TypeError(f"{cls.__name__}: every field must be a positional __init__ field")
    names: dict[str, Any] = {"_NO_ARG": _NO_ARG}
    args, body = [], []
    for i, f in enumerate(fields):
        setter = f"_set{i}"
        names[setter] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            names[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_NO_ARG")
            value = f"_factory{i}() if {f.name} is _NO_ARG else {f.name}"
        else:
            args.append(f.name)
        body.append(f"    {setter}(self, {value})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, names)  # noqa: S102 - generated from the dataclass's own fields, as dataclasses does
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where a record came from: enough to find it again and to resume.

    ``offset`` is the source's own position as text: a byte offset for files,
    a stream id for Redis, a Kafka offset.
    """

    source: str
    partition: str
    offset: str


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class RawRecord:
    """One undecoded payload as a source read it."""

    payload: bytes
    position: SourcePosition
    format: PayloadFormat = "json"
    schema_version: int | None = None
    """For schemaless Avro payloads: the writer schema version. None = latest."""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class Utm:
    """UTM parameters; an empty string means the parameter was absent."""

    source: str = ""
    medium: str = ""
    campaign: str = ""
    content: str = ""
    term: str = ""

    def is_empty(self) -> bool:
        return not (self.source or self.medium or self.campaign or self.content or self.term)

    def as_tuple(self) -> tuple[str, str, str, str, str]:
        return (self.source, self.medium, self.campaign, self.content, self.term)


EMPTY_UTM = Utm()


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class Context:
    """Request context of a touch; every field optional (empty string)."""

    ip: str = ""
    user_agent: str = ""
    device_type: str = ""
    country: str = ""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class Conversion:
    conversion_id: str
    value: float = 0.0
    currency: str = ""
    type: str = ""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class SpendMetrics:
    """Ad-platform delivery figures for one campaign and interval."""

    impressions: int = 0
    clicks: int = 0
    cost: float = 0.0
    conversions: int | None = None


@fast_init
@pickled_flat(position=SourcePosition, utm=Utm, context=Context, conversion=Conversion, metrics=SpendMetrics)
@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. Built only by the decoder (``schemas.decode``)."""

    event_id: str
    tenant_id: str
    event_type: str
    ts_ms: int
    position: SourcePosition
    anonymous_id: str = ""
    user_id: str = ""
    device_id: str = ""
    channel: str = ""
    """Explicit channel, or the derived one after the channel step; '' if unknown."""
    campaign_id: str = ""
    utm: Utm = EMPTY_UTM
    click_ids: Mapping[str, str] = field(default_factory=dict)
    referrer: str = ""
    context: Context | None = None
    conversion: Conversion | None = None
    metrics: SpendMetrics | None = None
    metadata: Mapping[str, Any] | None = None
    schema_version: int = 1

    @property
    def is_touch(self) -> bool:
        return self.event_type in TOUCH_TYPES

    def person_ids(self) -> tuple[str, str, str]:
        """(user_id, device_id, anonymous_id), the identity step's order of preference."""
        return (self.user_id, self.device_id, self.anonymous_id)


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class PersonEvent:
    """An event with the person it belongs to, as decided by the identity step."""

    person_id: str
    event: Event


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the flow could not use, with a typed reason and how to fix it."""

    reason: str
    """One of ``DEAD_LETTER_REASONS``."""
    detail: str
    """What was wrong and how to fix it, for a human."""
    raw: bytes
    """The payload, capped (see ``RAW_CAP_BYTES``)."""
    position: SourcePosition
    tenant_id: str = ""
    event_id: str = ""
    event_type: str = ""

    table = "dead_letters"


SOURCE_ERROR_KEY = "_source_error"
"""Key of the JSON payload a source emits for what it could not read; dead-lettered as ``source_error``."""

RAW_CAP_BYTES = 4096
"""Dead letters keep at most this many bytes of the raw payload."""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class CreditRow:
    """Fractional credit of one touch (or the unattributed bucket) for one model."""

    tenant_id: str
    conversion_id: str
    person_id: str
    model: str
    model_version: int
    channel: str
    campaign_id: str
    touch_event_id: str
    """'' for the unattributed row of a conversion with no eligible touch."""
    touch_ts_ms: int
    conversion_ts_ms: int
    credit: float
    revenue_credit: float
    revision: int = 0
    """Which scoring of the conversion this row belongs to (see ``ConversionRow.revision``)."""

    table = "attribution_credits"


UNATTRIBUTED_CHANNEL = "(unattributed)"


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class ConversionRow:
    """One credited conversion with its journey summary."""

    tenant_id: str
    conversion_id: str
    person_id: str
    event_id: str
    conversion_ts_ms: int
    value: float
    currency: str
    conversion_type: str
    touch_count: int
    attributed: bool
    first_touch_channel: str
    last_touch_channel: str
    first_utm: Utm
    last_utm: Utm
    revision: int = 0
    """The scoring's revision: how many events (touches and other conversions of the person) lay in the
    conversion's lookback window when it was scored. A touch or conversion arriving late, or a device's
    journey adopted at a link, restates the conversion with a higher revision; the rows with the highest
    revision are its credit (ClickHouse views ``attribution_credits_latest``, ``conversions_latest``).
    The same events give the same revision in any arrival order, so a replay after a crash ends on the
    same highest revision with the same rows."""

    table = "conversions"


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class KpiRow:
    """One closed event-time window for tenant x channel x campaign, as of ``events`` events.

    A window is emitted when it closes; an event that arrives later (within the
    restatement horizon, see ``state.kpi_windows``) emits the window again with
    the new totals and a higher ``events``. The row with the most events is the
    window's current value (ClickHouse view ``kpi_windows_latest``).
    """

    tenant_id: str
    window_start_ms: int
    window_end_ms: int
    channel: str
    campaign_id: str
    impressions: int
    clicks: int
    conversions: float
    cost: float
    revenue: float
    ctr: float | None
    cvr: float | None
    cpa: float | None
    roas: float | None
    events: int
    """How many events (KPI deltas) the totals hold: the window's revision."""

    table = "kpi_windows"


SUPPRESSION_REASONS = ("no_consent", "forgotten")
"""Why an event was suppressed: ``no_consent``, the person has not granted (``opt_in``) or has withdrawn
the tenant's attribution purpose; ``forgotten``, the event names a person a ``deletion_request`` erased
(``creditflow.forgotten``)."""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class SuppressedEvent:
    """An event neither kept nor credited because of its person's privacy choices: only counted.

    It names no person: ``event_key`` is a digest of the event id (the row key, so a
    replay counts once), and nothing else of the event is kept.
    """

    tenant_id: str
    reason: str
    """One of ``SUPPRESSION_REASONS``."""
    event_type: str
    event_key: str
    ts_ms: int

    table = "suppressed_events"


SinkRow = Union[CreditRow, ConversionRow, KpiRow, DeadLetter, SuppressedEvent, "ModelWeights"]
"""Everything the ClickHouse sink accepts (``ModelWeights``: ``creditflow.model_weights``)."""


JOURNEY_OUTCOMES = ("converted", "expired", "unconverted")
"""How a journey closes: a conversion credited its touches; the person went idle past the
tenant's idle TTL (wall time, or an event that much later in event time); or, for training
only, the person has been idle ``training_close_days`` (the journey stays in state)."""


@fast_init
@pickled_positionally
@dataclass(frozen=True, slots=True)
class ClosedJourney:
    """One closed journey, converting or not: the training data of the data-driven models.

    ``journey_id`` is unique and the same in a replay after a crash: the person
    plus the conversion id (converted) or the event time of the journey's last
    event (expired). Touches are in event-time order.
    """

    tenant_id: str
    person_id: str
    journey_id: str
    outcome: str
    """One of ``JOURNEY_OUTCOMES``."""
    closed_at_ms: int
    """Event time: the conversion's, or the journey's last event's (expired)."""
    conversion_id: str
    """'' unless converted."""
    value: float
    """The conversion's value (0.0 unless converted)."""
    touch_channels: tuple[str, ...]
    touch_ts_ms: tuple[int, ...]
    """Event time of each touch, same order and length as ``touch_channels``."""
    revision: int = 0
    """For a converted journey, its conversion's revision (``ConversionRow.revision``): a restated
    conversion is archived again under the same ``journey_id`` with a higher revision, and readers keep the
    highest. 0 for expired and unconverted journeys."""
