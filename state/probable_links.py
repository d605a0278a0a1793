"""Probabilistic device links: an anonymous device and a logged-in user seen on one network.

A person often browses anonymously on one device (a laptop) and logs in on
another (a phone) on the same home network within minutes. This module proposes
``ProbableLink(device, user, confidence)`` for such pairs; the identity step
decides what to do with them.

Key: (tenant, hashed network), not the tenant. One ``ProbableLinkLogic`` lives
per ``network_key``: the tenant plus a salted hash of the exact IPv4 address
or of the IPv6 /64 prefix (one household's devices share it). Work and state
therefore spread over as many keys as there are active networks, like persons,
and a tenant with millions of visitors has no single hot key. A hot network (an
office, a café, a carrier NAT) is still one key, but its state is capped and,
once it holds too many users or devices, it stops proposing links, so a busy
key costs a bounded amount of work per event.

No raw IPs. The IP is hashed (HMAC-SHA256 with the tenant's salt, truncated)
into the key before the matcher sees the event; the logic never reads
``context.ip``, and its state holds only event times, device keys, user ids, a
salted 8-byte hash of the normalized user agent and the country code. A raw IP
therefore lives exactly as long as the event in flight, and the hashed network
at most ``link_window_minutes`` of wall time after the network's last event.

Bounds (per network key):

- observations older than the tenant's ``link_window_minutes`` of event time
  (behind the newest one) are dropped on every event; an event already that old
  is ignored;
- one observation per (device, user) pair, the newest; at most
  ``MAX_OBSERVATIONS`` (32), the oldest dropped first;
- at most ``MAX_EMITTED`` (32) emitted pairs remembered, only while their
  device is still observed;
- the whole state is discarded ``link_window_minutes`` of wall time after the
  network's last event (``notify_at``/``on_notify``): an idle network holds
  nothing. A batch that stores nothing discards the logic at once.

Links are decided online, with the users and devices seen on the network so
far: a pair linked while a network looked like a household stays linked when
the network later turns out crowded (nothing more links from then on). Waiting
for the window to close would see the crowd but delay every link by the window.

Deterministic links win. A device seen with a ``user_id`` in the window has a
deterministic link and is never proposed here; and the identity step applies a
probable link only to a device that has no deterministic link (keeping the most
confident probable link per device), so a later login replaces a guess.

>>> from creditflow.events import Context, SourcePosition
>>> env = ProbableLinkEnv(TenantConfigs(), now=lambda: 0.0)
>>> lg = ProbableLinkLogic(env, None)
>>> pos, t0 = SourcePosition("f", "0", "0"), 1_767_225_600_000
>>> laptop = Event("e1", "t1", "page_view", t0, pos, anonymous_id="lap", context=Context(country="DE"))
>>> phone = Event("e2", "t1", "identify", t0 + 120_000, pos, user_id="u1", device_id="ph",
...               context=Context(country="DE"))
>>> lg.on_batch([sighting_of(laptop, None), sighting_of(phone, None)])[0]
[ProbableLink(tenant_id='t1', device_key='a:lap', user_id='u1', confidence=0.773, ts_ms=1767225720000)]
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, cast

from bytewax.operators import StatefulBatchLogic
from mypy_extensions import mypyc_attr

from creditflow.config import TenantConfig, TenantConfigs
from creditflow.events import PERSON_EVENT_TYPES, Event, SourcePosition, pickled_positionally
from creditflow.kpis import KEY_SEP
from state.wake_time import SecondsWake

__all__ = [
    "NetworkKeyer",
    "LINK_EVENT_TYPES",
    "MAX_EMITTED",
    "MAX_NETWORK_DEVICES",
    "MAX_NETWORK_USERS",
    "MAX_OBSERVATIONS",
    "NETWORK_LAYOUT_AT",
    "PROBABLE_LINKS_LAYOUT",
    "LinkSettings",
    "NetworkRow",
    "ObservationRow",
    "NetworkState",
    "Observation",
    "ProbableLink",
    "ProbableLinkEnv",
    "ProbableLinkLogic",
    "Sighting",
    "device_key_of",
    "link_confidence",
    "network_key",
    "sighting_of",
    "without_erased",
    "ua_hash",
]

PROBABLE_LINKS_LAYOUT = 1
"""Bump when ``NetworkState`` changes shape; snapshots of another layout are refused."""
STATE_LAYOUT_VERSION = PROBABLE_LINKS_LAYOUT
"""The name ``flows/recovery_check.py`` reads from every state module."""

MAX_OBSERVATIONS = 32
"""Observations kept per network (one per device and user pair); the oldest go first."""
MAX_EMITTED = 32
"""Emitted (device, user) pairs remembered per network, so a pair is proposed once."""
MAX_NETWORK_USERS = 4
"""More distinct identified users than this on a network in the window: no links at all."""
MAX_NETWORK_DEVICES = 8
"""More distinct devices than this on a network in the window: a public network (office, café, carrier NAT),
no links at all."""
_NO_OBSERVATION_MS = 1 << 62
"""The oldest observation time of a network that holds none: later than any event."""

LINK_EVENT_TYPES: frozenset[str] = PERSON_EVENT_TYPES | {"identify"}
"""Events that say a device (and maybe a user) was on a network; other types are ignored."""

NETWORK_HASH_HEX = 16
"""Hex digits of the network hash in the key (64 bits: collisions within a tenant are negligible)."""
UA_HASH_BYTES = 8
IPV6_PREFIX_BYTES = 8
"""An IPv6 network is its /64 prefix: every device of a household shares it, their addresses differ."""

# The confidence formula's constants (see ``link_confidence``).
BASE = 0.8
SAME_UA = 1.2
COUNTRY_UNKNOWN = 0.9
COUNTRY_DIFFERENT = 0.5
TIME_DECAY = 0.5


@pickled_positionally
@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class ProbableLink:
    """A proposal: the anonymous device ``device_key`` probably belongs to ``user_id``.

    ``device_key`` is the identity step's device key (``d:<device_id>`` or
    ``a:<anonymous_id>``); ``confidence`` is in [0, 1], 3 decimals; ``ts_ms`` is
    the event time of the observation that produced the link.
    """

    tenant_id: str
    device_key: str
    user_id: str
    confidence: float
    ts_ms: int
    position: SourcePosition | None = field(default=None, compare=False, repr=False)
    """Where the observation that produced the link came from (restated credit carries it to the KPI windows)."""


# --------------------------------------------------------------------------- #
# Keys and hashes
# --------------------------------------------------------------------------- #


def _network_bytes(ip: str) -> bytes | None:
    """The network an address stands for, tagged by IP version: the IPv4 address or the IPv6 /64.

    Plain dotted IPv4, by far the most common form, is parsed in C (``inet_pton``, which
    like ``ipaddress`` refuses leading zeros); anything else goes through ``ipaddress``.

    >>> _network_bytes("192.0.2.7"), _network_bytes(" 192.0.2.7 "), _network_bytes("192.0.2.07")
    (b'4\\xc0\\x00\\x02\\x07', b'4\\xc0\\x00\\x02\\x07', None)
    >>> _network_bytes("::ffff:192.0.2.7") == _network_bytes("192.0.2.7"), _network_bytes("[fe80::1%eth0]")
    (True, b'6\\xfe\\x80\\x00\\x00\\x00\\x00\\x00\\x00')
    """
    try:
        return b"4" + socket.inet_pton(socket.AF_INET, ip)
    except OSError:
        pass
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone id names the local interface, not the network
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is None:
            return b"6" + addr.packed[:IPV6_PREFIX_BYTES]
        return b"4" + mapped.packed
    return b"4" + addr.packed


def network_key(event: Event, salt: bytes) -> str | None:
    """The matcher's key: tenant, ``KEY_SEP``, salted hash of the event's network; None without a usable IP.

    The network is the exact IPv4 address or the /64 prefix of an IPv6 address
    (an IPv4-mapped IPv6 address counts as IPv4). Private and loopback
    addresses are kept. ``salt`` is the tenant's secret salt (``PiiHasher.tenant_salt``).

    >>> from creditflow.events import Context, SourcePosition
    >>> def ev(ip: str) -> Event:
    ...     return Event("e", "t1", "click", 0, SourcePosition("f", "0", "0"), context=Context(ip=ip))
    >>> key = network_key(ev("2001:db8::1"), b"salt")
    >>> key.split(KEY_SEP)[0], len(key.split(KEY_SEP)[1])
    ('t1', 16)
    >>> key == network_key(ev("2001:db8::ffff:2"), b"salt")  # same /64
    True
    >>> network_key(ev("not an ip"), b"salt") is None, network_key(ev(""), b"salt") is None
    (True, True)
    """
    ctx = event.context
    if ctx is None or not ctx.ip:
        return None
    return _network_key(event.tenant_id, ctx.ip, salt)


def _network_key(tenant_id: str, ip: str, salt: bytes) -> str | None:
    net = _network_bytes(ip)
    if net is None:
        return None
    digest = hmac.digest(salt, net, "sha256").hex()[:NETWORK_HASH_HEX]
    return f"{tenant_id}{KEY_SEP}{digest}"


NETWORK_KEY_CACHE_MAX = 16_384
"""Bound of a ``NetworkKeyer``'s cache of (tenant, IP) -> key: a device sends many events from one
address, and each key costs a parse and an HMAC. Least recently used keys go first; it lives in memory only."""


class NetworkKeyer:
    """``network_key`` with each event's tenant salt from ``salt_of(tenant_id)``, cached per (tenant, IP).

    A class rather than a closure over an ``lru_cache``d function: mypyc (``creditflow.native``) does
    not compile decorated nested functions.

    >>> from creditflow.events import Context, SourcePosition
    >>> key = NetworkKeyer(lambda tenant: tenant.encode())
    >>> e = Event("e", "t1", "click", 0, SourcePosition("f", "0", "0"), context=Context(ip="192.0.2.7"))
    >>> key(e) == network_key(e, b"t1") != network_key(e, b"t2")
    True
    """

    __slots__ = ("_of",)

    def __init__(self, salt_of: Callable[[str], bytes]) -> None:
        def uncached(tenant_id: str, ip: str) -> str | None:
            return _network_key(tenant_id, ip, salt_of(tenant_id))

        self._of: Any = lru_cache(maxsize=NETWORK_KEY_CACHE_MAX)(uncached)

    def __call__(self, event: Event) -> str | None:
        ctx = event.context
        if ctx is None or not ctx.ip:
            return None
        result: str | None = self._of(event.tenant_id, ctx.ip)
        return result

    def cache_info(self) -> Any:
        """The (tenant, IP) cache's statistics: hits, misses, currsize (at most ``NETWORK_KEY_CACHE_MAX``)."""
        return self._of.cache_info()


UA_HASH_CACHE_MAX = 4096
"""Bound of ``ua_hash``'s cache of (user agent, salt) -> hash: user agents repeat heavily (one per
browser build), and hashing one costs an HMAC; least recently used hashes go first."""


def ua_hash(user_agent: str, salt: bytes | None = None) -> bytes:
    """A short hash of the normalized user agent (lowercase, single spaces); ``b''`` when there is none.

    Keyed with the tenant salt when given (HMAC-SHA256), so a stored hash cannot
    be looked up in a list of public user-agent strings.

    >>> ua_hash("Mozilla/5.0  (X11)") == ua_hash(" mozilla/5.0 (x11)") != ua_hash("Mozilla/5.0 (X11)", b"s")
    True
    >>> ua_hash(""), len(ua_hash("curl/8"))
    (b'', 8)
    """
    return _ua_hash(user_agent, salt)


@lru_cache(maxsize=UA_HASH_CACHE_MAX)
def _ua_hash(user_agent: str, salt: bytes | None) -> bytes:
    norm = " ".join(user_agent.lower().split())
    if not norm:
        return b""
    data = norm.encode()
    if salt is None:
        return hashlib.blake2b(data, digest_size=UA_HASH_BYTES, person=b"creditflow-ua").digest()
    return hmac.digest(salt, data, "sha256")[:UA_HASH_BYTES]


def device_key_of(event: Event) -> str:
    """The identity step's device key: ``d:<device_id>``, else ``a:<anonymous_id>``, else ``''``.

    >>> from creditflow.events import SourcePosition
    >>> device_key_of(Event("e", "t", "click", 0, SourcePosition("f", "0", "0"), anonymous_id="a1"))
    'a:a1'
    """
    if event.device_id:
        return "d:" + event.device_id
    if event.anonymous_id:
        return "a:" + event.anonymous_id
    return ""


# --------------------------------------------------------------------------- #
# The confidence formula
# --------------------------------------------------------------------------- #


def link_confidence(
    *, same_ua: bool, same_country: bool | None, gap_ms: int, window_ms: int, users: int, devices: int = 2
) -> float:
    """Confidence (0-1, 3 decimals) that an anonymous device belongs to a user seen on the same network.

    ``same_ua``: the two observations' normalized user agents are equal.
    ``same_country``: True if both countries are known and equal, None if
    either is unknown, False if they differ. ``gap_ms``: event time between the
    two observations. ``users``: distinct identified users seen on the network
    in the window (at least 1, the candidate); ``devices``: distinct devices.

    confidence = BASE x UA x COUNTRY x TIME x AMBIGUITY, capped at 1, where

    - BASE = 0.8: one identified user and one anonymous device on one network
      at the same moment are, most of the time, one household's one person;
    - UA = 1.2 if the user agents are equal (the same browser build: likely
      the same person's device), else 1.0: a different user agent is the normal
      cross-device case (laptop and phone), not evidence against;
    - COUNTRY = 1.0 equal, 0.9 unknown, 0.5 different (one network in two
      countries means VPNs or bad geo data: weak evidence against);
    - TIME = 1 - 0.5 x gap / window within the window, 0 beyond it: the closer
      in time, the likelier the same person is at the keyboard;
    - AMBIGUITY = 1 / users: with two users each is at best a coin toss, so a
      shared network needs lower tenant thresholds to link at all (2 users:
      at most 0.48); 0 with more than ``MAX_NETWORK_USERS`` users or more
      than ``MAX_NETWORK_DEVICES`` devices (a public network: no links).

    With the default threshold 0.7 a link therefore needs one user, no country
    conflict, and a gap under ~9 minutes of a 30-minute window (~16 with the
    same user agent).

    >>> w = 30 * 60_000
    >>> link_confidence(same_ua=False, same_country=True, gap_ms=3 * 60_000, window_ms=w, users=1)
    0.76
    >>> link_confidence(same_ua=True, same_country=True, gap_ms=0, window_ms=w, users=1)
    0.96
    >>> link_confidence(same_ua=True, same_country=True, gap_ms=0, window_ms=w, users=2)
    0.48
    >>> link_confidence(same_ua=False, same_country=False, gap_ms=0, window_ms=w, users=1)
    0.4
    >>> link_confidence(same_ua=True, same_country=True, gap_ms=0, window_ms=w, users=5)
    0.0
    """
    if users < 1:
        raise ValueError(f"users must be >= 1 (the candidate user counts), got {users}")
    if window_ms <= 0:
        raise ValueError(f"window_ms must be > 0, got {window_ms}")
    gap = abs(gap_ms)
    if gap > window_ms or users > MAX_NETWORK_USERS or devices > MAX_NETWORK_DEVICES:
        return 0.0
    ua = SAME_UA if same_ua else 1.0
    country = 1.0 if same_country else (COUNTRY_UNKNOWN if same_country is None else COUNTRY_DIFFERENT)
    time = 1.0 - TIME_DECAY * gap / window_ms
    return round(min(1.0, BASE * ua * country * time / users), 3)


def _same_country(a: str, b: str) -> bool | None:
    return None if not a or not b else a == b


# --------------------------------------------------------------------------- #
# State and environment
# --------------------------------------------------------------------------- #


class Observation(NamedTuple):
    """One device (with the user it named, or ``''``) seen on the network at ``ts_ms`` (event time)."""

    ts_ms: int
    device_key: str
    user_id: str
    ua: bytes
    """``ua_hash`` of the user agent (``b''`` unknown)."""
    country: str
    """Upper-case country code, ``''`` unknown."""


ObservationRow = tuple[int, str, str, bytes, str]
"""An ``Observation`` as a plain tuple (in a snapshot row)."""


class Sighting(NamedTuple):
    """What the matcher reads of one event (``sighting_of``), sent to the network's process instead of the event.

    Most events cross to another process to reach their network's key; an
    ``Event`` pickles to ~470 bytes, a sighting to about a quarter of that.
    """

    tenant_id: str
    ts_ms: int
    device_key: str
    """``device_key_of`` the event."""
    user_id: str
    ua: bytes
    """``ua_hash`` of the user agent with the tenant's salt (``b''`` unknown)."""
    country: str
    """Upper-case country code, ``''`` unknown."""
    position: SourcePosition


def sighting_of(ev: Event, salt: bytes | None) -> Sighting | None:
    """The matcher's view of ``ev`` (its user agent hashed with ``salt``, the tenant's), or ``None`` when the
    matcher has no use for it: not of a ``LINK_EVENT_TYPES`` type, or naming no device.

    >>> from creditflow.events import Context, SourcePosition
    >>> pos = SourcePosition("f", "0", "0")
    >>> ev = Event("e", "t", "click", 5, pos, anonymous_id="a1", context=Context(country=" de"))
    >>> sighting_of(ev, None)[:6]
    ('t', 5, 'a:a1', '', b'', 'DE')
    >>> sighting_of(Event("e", "t", "click", 5, SourcePosition("f", "0", "0"), user_id="u1"), None) is None
    True
    """
    if ev.event_type not in LINK_EVENT_TYPES:
        return None
    device = device_key_of(ev)
    if not device:
        return None  # a user without a device: nothing to link, nothing to compare
    ctx = ev.context
    ua, country = (ua_hash(ctx.user_agent, salt), ctx.country.strip().upper()) if ctx else (b"", "")
    return Sighting(ev.tenant_id, ev.ts_ms, device, ev.user_id, ua, country, ev.position)


class NetworkState(NamedTuple):
    """The fields of one network's snapshot: no raw IP, no raw user agent.

    ``ProbableLinkLogic.snapshot`` returns them as a plain tuple in this order
    (a ``NetworkRow``, observations as plain tuples too: it pickles in C); a
    resume reads either, and snapshots of earlier creditflows (an object pickled
    through this name) load as a ``NetworkState``. ``NetworkState(*row)`` names a
    row's fields (tests, tools).
    """

    tenant_id: str
    newest_ts_ms: int
    last_wall_s: float
    observations: tuple[ObservationRow, ...]
    """Oldest kept first."""
    emitted: tuple[tuple[str, str], ...]
    """(device_key, user_id) pairs already proposed."""
    layout: int = PROBABLE_LINKS_LAYOUT


NetworkRow = tuple[str, int, float, tuple[ObservationRow, ...], tuple[tuple[str, str], ...], int]
"""A ``NetworkState`` as a plain tuple (what ``ProbableLinkLogic.snapshot`` returns)."""

NETWORK_LAYOUT_AT = NetworkState._fields.index("layout")
"""Where a network row holds its layout (``operators.state_guard``)."""


def without_erased(row: NetworkRow, erased: Callable[[str, str], bool]) -> NetworkRow | None:
    """A network's snapshot row without the observations and proposed pairs naming an erased key
    (``erased(tenant, key)``); ``None`` when nothing is left. Used offline on the recovery store
    (``flows.recovery_forget``).

    >>> obs = (1, "a:lap", "ann", b"12345678", "DE"), (2, "a:tab", "bob", b"12345678", "DE")
    >>> kept = NetworkState(*without_erased(("t", 2, 0.0, obs, (("a:lap", "ann"),), 1), lambda t, k: k == "u:ann"))
    >>> [Observation(*o).user_id for o in kept.observations], kept.emitted
    (['bob'], ())
    """
    state = NetworkState(*row)
    tenant = state.tenant_id

    def named(device_key: str, user_id: str) -> bool:
        return erased(tenant, device_key) or (bool(user_id) and erased(tenant, "u:" + user_id))

    observations = cast(
        "tuple[ObservationRow, ...]", tuple(tuple(o) for o in state.observations if not named(o[1], o[2]))
    )
    if not observations:
        return None
    emitted = tuple(p for p in state.emitted if not named(*p))
    return (tenant, state.newest_ts_ms, state.last_wall_s, observations, emitted, state.layout)


@mypyc_attr(native_class=False)  # pickled: snapshots, items between processes
@dataclass(frozen=True, slots=True)
class LinkSettings:
    """One tenant's matcher settings, precomputed from its ``TenantConfig``."""

    threshold: float
    window_ms: int
    window_s: float

    @classmethod
    def of(cls, cfg: TenantConfig) -> LinkSettings:
        window_s = cfg.link_window_minutes * 60.0
        return cls(cfg.link_threshold, int(window_s * 1000), window_s)


class ProbableLinkEnv:
    """What every network's matcher shares: tenant settings and the wall clock.

    ``now`` returns the wall clock as epoch seconds: ``time.time`` in a flow (Bytewax compares
    ``notify_at`` with the real clock, so a fake clock in a dataflow expires every network at once);
    unit tests of the logic pass a fake. (User agents arrive hashed with the tenant's salt: ``sighting_of``.)
    """

    __slots__ = ("configs", "now", "default", "tenants")

    def __init__(self, configs: TenantConfigs, now: Callable[[], float]) -> None:
        self.configs = configs
        self.now = now
        self.default = LinkSettings.of(configs.defaults)
        self.tenants = {t: LinkSettings.of(cfg) for t, cfg in configs.tenants.items()}

    def settings(self, tenant_id: str) -> LinkSettings:
        return self.tenants.get(tenant_id, self.default)


# --------------------------------------------------------------------------- #
# The logic
# --------------------------------------------------------------------------- #


class ProbableLinkLogic(SecondsWake):
    """Bytewax stateful batch logic for one (tenant, hashed network) key; values are ``Sighting``s.

    Each event of a ``LINK_EVENT_TYPES`` type that names a device is sighted
    (``sighting_of``, in the event's own process) and becomes an observation.
    An anonymous observation is matched against the identified ones in state;
    an identified one re-matches every anonymous device in state. Either way,
    each anonymous device is given its best single user (``link_confidence``;
    ties go to the smaller user id), and a link is emitted once per (device,
    user) pair when it reaches the tenant's ``link_threshold``. So both arrival orders link, and results depend on the
    order of events, not on batch boundaries.

    Registered as a virtual subclass of ``StatefulBatchLogic`` (like
    ``state.journeys.JourneyLogic``) to stay slotted.
    """

    __slots__ = ("_env", "_settings", "_tenant", "_newest", "_wall", "_obs", "_emitted", "_oldest")

    def __init__(self, env: ProbableLinkEnv, resume: NetworkRow | None) -> None:
        self._env = env
        self._obs: list[Observation]
        self._emitted: list[tuple[str, str]]
        if resume is None:
            self._tenant, self._newest, self._wall = "", -1, -1.0
            self._obs, self._emitted = [], []
        else:
            self._tenant, self._newest, self._wall, observations, emitted, _layout = resume
            self._obs, self._emitted = [Observation(*o) for o in observations], list(emitted)
        # At or before the oldest observation's time (a lower bound, not kept exact): most events skip _prune's scan.
        self._oldest = min((o.ts_ms for o in self._obs), default=_NO_OBSERVATION_MS)
        self._settings = env.settings(self._tenant)

    # -- bytewax hooks -------------------------------------------------
    def on_batch(self, values: list[Sighting]) -> tuple[Iterable[ProbableLink], bool]:
        out: list[ProbableLink] = []
        for sighting in values:
            self._apply(sighting, out)
        return out, not self._obs  # nothing observed: hold nothing

    def on_notify(self) -> tuple[Iterable[ProbableLink], bool]:
        return (), True  # the network has been idle for the window: forget it

    def on_eof(self) -> tuple[Iterable[ProbableLink], bool]:
        return (), False

    def notify_at_s(self) -> float | None:
        """``notify_at`` in epoch seconds."""
        return None if self._wall < 0 else self._wall + self._settings.window_s

    def snapshot(self) -> NetworkRow:
        observations = cast("tuple[ObservationRow, ...]", tuple(map(tuple, self._obs)))  # plain tuples pickle in C
        return (self._tenant, self._newest, self._wall, observations, tuple(self._emitted), PROBABLE_LINKS_LAYOUT)

    # -- matching --------------------------------------------------------
    def _apply(self, ev: Sighting, out: list[ProbableLink]) -> None:
        if ev.tenant_id != self._tenant:
            self._tenant, self._settings = ev.tenant_id, self._env.settings(ev.tenant_id)
        window = self._settings.window_ms
        ts = ev.ts_ms
        if ts > self._newest:
            self._newest = ts
            self._prune(ts - window)
        elif ts < self._newest - window:
            return  # older than anything kept could pair with
        self._wall = self._env.now()
        device = ev.device_key
        obs = Observation(ts, device, ev.user_id, ev.ua, ev.country)
        self._upsert(obs)

        observed = self._obs
        if len(observed) == 1 or not any(o.user_id for o in observed):
            return  # nobody to link to (one observation cannot pair with itself)
        users = {o.user_id for o in observed if o.user_id}
        devices = len({o.device_key for o in observed})
        if len(users) > MAX_NETWORK_USERS or devices > MAX_NETWORK_DEVICES:
            return  # a shared/public network: no links
        identified = {o.device_key for o in observed if o.user_id}
        if ev.user_id:
            for anon in [o for o in self._obs if not o.user_id and o.device_key not in identified]:
                self._propose(anon, ev, len(users), devices, out)
        elif device not in identified:
            self._propose(obs, ev, len(users), devices, out)

    def _propose(self, anon: Observation, ev: Sighting, users: int, devices: int, out: list[ProbableLink]) -> None:
        """Emit the link of ``anon``'s device to its best user, if confident enough and not emitted before."""
        settings = self._settings
        best_c, best_user = -1.0, ""
        for o in self._obs:
            if not o.user_id:
                continue
            c = link_confidence(
                same_ua=bool(anon.ua) and anon.ua == o.ua,
                same_country=_same_country(anon.country, o.country),
                gap_ms=anon.ts_ms - o.ts_ms,
                window_ms=settings.window_ms,
                users=users,
                devices=devices,
            )
            if c > best_c or (c == best_c and o.user_id < best_user):
                best_c, best_user = c, o.user_id
        pair = (anon.device_key, best_user)
        if best_c >= settings.threshold and pair not in self._emitted:
            self._emitted.append(pair)
            del self._emitted[:-MAX_EMITTED]
            out.append(ProbableLink(self._tenant, anon.device_key, best_user, best_c, ev.ts_ms, ev.position))

    # -- bounds ------------------------------------------------------------
    def _upsert(self, obs: Observation) -> None:
        """Keep the newest observation per (device, user); at most ``MAX_OBSERVATIONS``, oldest dropped."""
        kept = self._obs
        for i, o in enumerate(kept):
            if o.device_key == obs.device_key and o.user_id == obs.user_id:
                if obs.ts_ms >= o.ts_ms:
                    kept[i] = obs
                return
        kept.append(obs)
        if obs.ts_ms < self._oldest:
            self._oldest = obs.ts_ms
        if len(kept) > MAX_OBSERVATIONS:
            del kept[min(range(len(kept)), key=lambda i: kept[i].ts_ms)]

    def _prune(self, cutoff_ms: int) -> None:
        """Drop observations older than ``cutoff_ms`` and the emitted pairs of devices no longer observed."""
        if self._oldest >= cutoff_ms:
            return  # nothing is that old
        kept = [o for o in self._obs if o.ts_ms >= cutoff_ms]
        self._oldest = min((o.ts_ms for o in kept), default=_NO_OBSERVATION_MS)
        if len(kept) < len(self._obs):
            self._obs = kept
            seen = {o.device_key for o in kept}
            self._emitted = [p for p in self._emitted if p[0] in seen]


StatefulBatchLogic.register(ProbableLinkLogic)
