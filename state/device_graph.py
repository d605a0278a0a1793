"""The device graph: which person a device's events belong to, kept per device.

Bytewax 0.21 dataflows have no cycles, so identity is resolved in two keyed
stages, each keyed by one identifier (never by tenant: the work and the state
spread over devices and persons, and no tenant is a hot key):

1. this step, keyed by (tenant, device): ``d:<device_id>``, else
   ``a:<anonymous_id>``; an event naming only a user passes through under
   ``u:<user_id>`` and leaves no state. A device is either
   - **unlinked**: it is its own person (``a:...``/``d:...``); its journey lives
     here, embedded (a ``JourneyLogic``), and its conversions are credited here;
   - **linked** to a user: its events are forwarded to the user's journey
     (``u:<user_id>``, the next stage, ``state.journeys``).
2. the journeys step, keyed by (tenant, person).

The graph is on unless a tenant turns it off (``TenantConfig.identity_graph``). Off, an event
naming a user is keyed by the user here and passed through, and a device is
never linked: the person is the user id, else the device.

Linking. An event naming both a user and a device is a *deterministic* link:
the device belongs to that user from then on (a later login of another user on
the same device moves it; one user on many devices is one person). A
``ProbableLink`` from the network matcher (``state.probable_links``) links an
unlinked or probabilistically linked device when its confidence is at least
the tenant's ``link_threshold`` and higher than the current link's; it never
replaces a deterministic link. At the moment of linking, the device's journey
(touches, conversions, consent) is handed to the person as an ``Adopt`` item,
just before the event that linked it: touches from before the login are
credited to the person's later conversions, and the person's open conversions
whose window they fall in are restated (``state.journeys``).

Consent. A device is tied to a user only while its own latest decision on the
tenant's ``consent_purpose`` allows tracking under the tenant's
``consent_mode`` (``creditflow.consent.allows``): under ``opt_in`` a login
from a device that has not granted links nothing (the event still reaches the
user's journey, which applies the person's consent, and the device's own
journey, its decision included, is handed to the person as at a link), and a
withdrawal on a linked device reaches the user's journey and then unlinks the
device, in either mode; a probable link never ties a device without consent. So the graph
keeps no link of a person who has not consented. Consent decisions on one
device do not link or unlink another.

Bounds: a device holds at most one link (the user id), its own last consent
decision (two numbers), and, while unlinked,
one journey with the journeys' own bounds (lookback, ``max_touches``, idle
TTL). A link is forgotten after ``identity_ttl_days`` without an event from
the device (wall time, ``notify_at``); an unlinked device's journey ends with
its idle TTL, as any journey.

>>> from creditflow.config import TenantConfigs
>>> from creditflow.events import Event, SourcePosition
>>> from creditflow.weights import NoWeights
>>> from state.journeys import JourneyEnv
>>> from creditflow.config import TenantConfig
>>> env = JourneyEnv(TenantConfigs(TenantConfig(identity_graph=True)), NoWeights(), now=lambda: 0.0)
>>> pos = SourcePosition("f", "0", "0")
>>> device = DeviceLogic(env, None)
>>> out, _ = device.on_batch([Event("c1", "t", "click", 1_000, pos, anonymous_id="A", channel="email")])
>>> out, _ = device.on_batch([Event("i1", "t", "identify", 2_000, pos, anonymous_id="A", user_id="U")])
>>> [(type(o).__name__, o.person_id) for o in out]
[('Adopt', 'u:U'), ('PersonEvent', 'u:U')]
>>> device.linked_user
'U'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from bytewax.operators import StatefulBatchLogic
from mypy_extensions import mypyc_attr

from creditflow.consent import CONSENT_UNKNOWN, allows, decision_of, state_of
from creditflow.events import Event, PersonEvent, SourcePosition, pickled_positionally
from creditflow.kpis import KEY_SEP
from state.journey_state import Journey, JourneyRow
from state.journeys import Adopt, JourneyEnv, JourneyLogic, JourneyOutput, TenantContext, erase, suppressed
from state.probable_links import ProbableLink
from state.wake_time import SecondsWake

__all__ = [
    "DEVICE_LAYOUT_AT",
    "DEVICE_LAYOUT_VERSION",
    "STATE_LAYOUT_VERSION",
    "DeviceLogic",
    "DeviceState",
    "DeviceOutput",
    "DeviceRow",
    "ForgetDevice",
    "device_person_of",
    "passes_through",
]

DEVICE_LAYOUT_VERSION = 1
"""Bump when ``DeviceState`` changes shape; snapshots of another layout are refused."""
STATE_LAYOUT_VERSION = DEVICE_LAYOUT_VERSION
"""The name ``flows/recovery_check.py`` reads from every state module."""

LINKS_POSITION = SourcePosition("identity", "links", "")
"""The position of a probable link built without one (only hand-made links in tests and tools)."""

DETERMINISTIC = 1.0
"""The confidence of a link an event stated (user id and device id together)."""

DeviceOutput = JourneyOutput | PersonEvent | Adopt
"""``PersonEvent`` and ``Adopt`` go on to the journeys step; the rest is the unlinked device's own journey output."""


@pickled_positionally
@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class ForgetDevice:
    """Erase ``device_key`` of ``tenant_id`` if it belongs to ``user_id`` ('' : whatever it belongs to)."""

    tenant_id: str
    device_key: str
    user_id: str
    requested_ts_ms: int
    """Event time of the deletion request."""


def passes_through(event: Event, graph: bool) -> bool:
    """Whether the user is this event's person as it stands: it names a user, and no device or no graph.

    Such an event is keyed by its user here and handed on unchanged; any other
    is keyed by its device (``device_person_of``).

    >>> from creditflow.events import SourcePosition
    >>> pos = SourcePosition("f", "0", "0")
    >>> login = Event("e", "t", "identify", 0, pos, anonymous_id="a1", user_id="u1")
    >>> passes_through(login, graph=True), passes_through(login, graph=False)
    (False, True)
    """
    return bool(event.user_id) and not (graph and (event.device_id or event.anonymous_id))


def device_person_of(event: Event) -> str:
    """The identifier this step keys an event by: its device, else its user (``u:``, passed through).

    The prefix keeps a device id from colliding with a user id of the same text.

    >>> from creditflow.events import SourcePosition
    >>> pos = SourcePosition("f", "0", "0")
    >>> device_person_of(Event("e", "t", "click", 0, pos, anonymous_id="a1", device_id="d1", user_id="u1"))
    'd:d1'
    >>> device_person_of(Event("e", "t", "conversion", 0, pos, user_id="u1"))
    'u:u1'
    """
    return device_person(event.device_id, event.anonymous_id, event.user_id)


def device_person(device_id: str, anonymous_id: str, user_id: str) -> str:
    """``device_person_of`` from the identifiers themselves (e.g. a producer's, ``operators.routing``).

    >>> device_person("", "a1", "u1")
    'a:a1'
    """
    if device_id:
        return "d:" + device_id
    if anonymous_id:
        return "a:" + anonymous_id
    return "u:" + user_id


def device_state_key(tenant_id: str, person: str) -> str:
    """The device graph's state key of a tenant's ``device_person``: the two joined by ``KEY_SEP``."""
    return f"{tenant_id}{KEY_SEP}{person}"


class DeviceState(NamedTuple):
    """The fields of a device's snapshot: its link and, while unlinked, its journey.

    ``DeviceLogic.snapshot`` returns them as a plain tuple in this order (a
    ``DeviceRow``: it pickles in C, several times faster than an object); a
    resume reads either. Snapshots of earlier creditflows (an object pickled
    through this name with the first six fields) load as a ``DeviceState``.
    ``DeviceState(*row)`` names a row's fields (tests, tools).
    """

    tenant_id: str
    user_id: str
    confidence: float
    seen_wall_s: float
    journey: JourneyRow | None
    layout: int = DEVICE_LAYOUT_VERSION
    consent: int = CONSENT_UNKNOWN
    """The device's own latest decision on the tenant's purpose (snapshots before it existed: unknown)."""
    consent_ts_ms: int = -1


DeviceRow = tuple[str, str, float, float, JourneyRow | None, int, int, int]
"""A ``DeviceState`` as a plain tuple (what ``DeviceLogic.snapshot`` returns)."""

DEVICE_LAYOUT_AT = DeviceState._fields.index("layout")
"""Where a device row holds its layout (``operators.state_guard``)."""


class DeviceLogic(SecondsWake):
    """Bytewax stateful batch logic for one (tenant, device) key; see the module doc.

    Registered as a virtual subclass of ``StatefulBatchLogic`` (as ``JourneyLogic``)
    so that it stays a slotted object.
    """

    __slots__ = ("_ctx", "_user", "_confidence", "_seen_wall_s", "_journey", "_consent", "_consent_ts_ms")

    def __init__(self, env: JourneyEnv, resume: DeviceRow | None) -> None:
        self._ctx: TenantContext = env.default
        self._user = ""
        self._confidence = 0.0
        self._seen_wall_s = 0.0
        self._journey: JourneyLogic | None = None
        self._consent, self._consent_ts_ms = CONSENT_UNKNOWN, -1
        if resume is not None:
            tenant_id, self._user, self._confidence, self._seen_wall_s, journey, _layout, consent, consent_ts = resume
            self._ctx = env.tenants.get(tenant_id, env.default)
            self._consent, self._consent_ts_ms = consent, consent_ts
            if journey is not None:
                self._journey = JourneyLogic(env, journey)

    @property
    def linked_user(self) -> str:
        """The user this device belongs to, '' while unlinked."""
        return self._user

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[Event | ProbableLink | ForgetDevice]) -> tuple[Iterable[DeviceOutput], bool]:
        out: list[DeviceOutput] = []
        pending: list[PersonEvent | Adopt] = []  # the unlinked device's own events, applied in runs
        env = self._ctx.env
        forgotten = env.forgotten
        for value in values:
            tenant_id = value.tenant_id
            self._ctx = env.tenants.get(tenant_id, env.default)
            if isinstance(value, ForgetDevice):
                if not value.user_id or value.user_id == self._user:  # not a device someone else logged in on since
                    self._flush(pending, out)
                    self._erase(tenant_id, value.device_key, value.requested_ts_ms, out)
                continue
            if isinstance(value, ProbableLink):
                if not forgotten.has(tenant_id, value.device_key) and not forgotten.has(
                    tenant_id, "u:" + value.user_id
                ):
                    self._flush(pending, out)
                    self._link_probably(value, out)
                continue
            ev = value
            if passes_through(ev, self._ctx.cfg.identity_graph):  # keyed by its user: no state here
                out.append(PersonEvent("u:" + ev.user_id, ev))
                continue
            if ev.event_type == "deletion_request":  # this device, and the user it names or belongs to
                user = ev.user_id or self._user
                self._flush(pending, out)
                self._erase(tenant_id, device_person_of(ev), ev.ts_ms, out)
                if user:
                    out.append(PersonEvent("u:" + user, ev))
                continue
            if self._user and forgotten.has(tenant_id, "u:" + self._user):  # a device of an erased person
                self._flush(pending, out)
                self._erase(tenant_id, device_person_of(ev), ev.ts_ms, out)
            if forgotten.names_forgotten(ev):
                out.append(suppressed(ev, "forgotten"))
                continue
            self._seen_wall_s = env.now()
            may_link = self._may_link(ev)
            if ev.user_id:
                self._flush(pending, out)
                if may_link:
                    self._link(ev.tenant_id, ev.user_id, DETERMINISTIC, ev.position, out)
                else:  # the user is this event's person, but the device is not tied to them
                    self._hand_over(ev.tenant_id, ev.user_id, ev.position, out)  # its decision reaches the person
                    self._unlink()
                    out.append(PersonEvent("u:" + ev.user_id, ev))
                    continue
            if self._user:
                self._flush(pending, out)
                out.append(PersonEvent("u:" + self._user, ev))
                if not may_link:  # a withdrawal reaches the person first, then the device lets go
                    self._unlink()
            else:
                pending.append(PersonEvent(device_person_of(ev), ev))
        self._flush(pending, out)
        return out, self._holds_nothing()

    def on_notify(self) -> tuple[Iterable[DeviceOutput], bool]:
        out: list[DeviceOutput] = []
        now = self._ctx.env.now()
        journey = self._journey
        if journey is not None:
            if now >= journey.notify_at_s():
                emitted, forget = journey.on_notify()
                out.extend(emitted)
                if forget:
                    self._journey = None
        if self._user and now >= self._link_expiry():
            self._user, self._confidence = "", 0.0
        return out, self._holds_nothing()

    def on_eof(self) -> tuple[Iterable[DeviceOutput], bool]:
        return (), self._holds_nothing()

    def notify_at_s(self) -> float | None:
        """``notify_at`` in epoch seconds."""
        due = self._link_expiry() if self._user else None
        if self._journey is not None:
            journey_due = self._journey.notify_at_s()
            if due is None or journey_due < due:
                return journey_due
        return due

    def snapshot(self) -> DeviceRow:
        journey = self._journey.snapshot() if self._journey is not None else None
        return (
            self._ctx.tenant_id,
            self._user,
            self._confidence,
            self._seen_wall_s,
            journey,
            DEVICE_LAYOUT_VERSION,
            self._consent,
            self._consent_ts_ms,
        )

    # -- consent -------------------------------------------------------
    def _may_link(self, ev: Event) -> bool:
        """Note the device's own consent decision in ``ev``; whether the device may be tied to a user now."""
        cfg = self._ctx.cfg
        decision = decision_of(ev, cfg.consent_purpose)
        if decision is not None and ev.ts_ms >= self._consent_ts_ms:
            self._consent, self._consent_ts_ms = state_of(decision), ev.ts_ms
        return allows(self._consent, cfg.consent_mode)

    # -- linking -------------------------------------------------------
    def _link(
        self, tenant_id: str, user_id: str, confidence: float, position: SourcePosition | None, out: list[Any]
    ) -> None:
        """Belong to ``user_id`` from now on; hand an unlinked device's journey over to the user."""
        self._user, self._confidence = user_id, confidence
        self._hand_over(tenant_id, user_id, position, out)

    def _hand_over(self, tenant_id: str, user_id: str, position: SourcePosition | None, out: list[Any]) -> None:
        """Give the device's own journey (touches, conversions, consent decision) to ``user_id`` as an ``Adopt``."""
        journey = self._journey
        if journey is not None:
            self._journey = None
            state = journey.state
            if state.packed:
                out.append(Adopt(tenant_id, "u:" + user_id, state, position or LINKS_POSITION))

    def _link_probably(self, link: ProbableLink, out: list[Any]) -> None:
        cfg = self._ctx.cfg
        if link.confidence < cfg.link_threshold or link.confidence <= self._confidence:
            return  # too weak, or not better than the link the device has (a deterministic one is 1.0)
        if not allows(self._consent, cfg.consent_mode):
            return  # a device without consent is tied to nobody
        self._seen_wall_s = self._ctx.env.now()
        self._link(link.tenant_id, link.user_id, link.confidence, link.position, out)

    def _flush(self, pending: list[PersonEvent | Adopt], out: list[Any]) -> None:
        """Apply the unlinked device's own events to its journey, in order."""
        if not pending:
            return
        journey = self._journey
        if journey is None:
            journey = self._journey = JourneyLogic(self._ctx.env, None)
        emitted, discard = journey.on_batch(pending)
        out.extend(emitted)
        if discard:
            self._journey = None
        pending.clear()

    def _unlink(self) -> None:
        """Belong to nobody; a device with a decision keeps it in its own journey (which ends with its idle TTL)."""
        self._user, self._confidence = "", 0.0
        if self._journey is None and self._consent != CONSENT_UNKNOWN:
            self._journey = self._journey_knowing_consent()

    def _journey_knowing_consent(self) -> JourneyLogic:
        """A new journey for the device holding only its consent decision (its earlier events were all applied)."""
        j = Journey()
        j.consent, j.consent_ts_ms = self._consent, self._consent_ts_ms
        j.last_seen_wall_s = self._ctx.env.now()
        return JourneyLogic.holding(self._ctx.env, *j.pack())

    def _erase(self, tenant_id: str, device_key: str, requested_ts_ms: int, out: list[Any]) -> None:
        """Forget the device: its link and journey, and from now on its events (``creditflow.forgotten``)."""
        self._user, self._confidence, self._journey = "", 0.0, None
        out.append(erase(self._ctx.env.forgotten, tenant_id, device_key, requested_ts_ms))

    def _link_expiry(self) -> float:
        return self._seen_wall_s + self._ctx.cfg.identity_ttl_days * 86_400.0

    def _holds_nothing(self) -> bool:
        return not self._user and self._journey is None


StatefulBatchLogic.register(DeviceLogic)
