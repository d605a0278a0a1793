"""Seeded synthetic multi-tenant marketing traffic, as event dicts, JSONL or a Bytewax source.

``generate_events(seed, n_persons)`` simulates people's journeys: each person
belongs to one tenant (the first tenant gets most people), has 1-8 touches over
the period (ad impressions and clicks, e-mail and affiliate clicks, organic and
direct visits) and about a quarter of them convert, some twice. Every tenant
also gets an hourly ``ad_spend`` report per paid campaign. The same seed always
gives the same events, sorted by ``timestamp``.

Touch realism:

- Paid clicks carry UTMs (``cpc/google``, ``paid_social/facebook``, ``display``,
  ``affiliate``...) and a click id (``gclid``, ``msclkid``, ``fbclid``,
  ``ttclid``); some search clicks carry only the click id (auto-tagging).
- Impressions (display, social) often lead to a direct or organic-search visit a
  little later (view-through), which lifts that person's chance to convert.
- Channels differ in how much a touch raises the chance to convert (brand search,
  e-mail and affiliate most; display impressions and organic social least), so
  first-touch, last-touch and data-driven models disagree.
- Everyone has an ``anonymous_id``; some a ``device_id``; people with an account
  get a ``user_id`` after an ``identify`` event, and some of them browse on a
  second device (a second ``anonymous_id``) once logged in.

Event shape (fields absent when empty)::

    {"event_id": "6f1c...", "tenant_id": "acme", "event_type": "click",
     "timestamp": 1767300000000, "anonymous_id": "anon-...", "user_id": "user-...",
     "device_id": "dev-...", "campaign_id": "acme-search-brand",
     "utm": {"source": "google", "medium": "cpc", "campaign": "acme-search-brand", "term": "acme"},
     "click_ids": {"gclid": "..."}, "referrer": "https://www.google.com/",
     "context": {"ip": "...", "user_agent": "...", "device_type": "mobile", "country": "DE"},
     "metadata": {"page": "/pricing"}}
    conversion: + "conversion": {"conversion_id": "ord-...", "value": 84.5, "currency": "EUR", "type": "purchase"}
    ad_spend:   "channel", "campaign_id", "utm", "metrics": {"impressions", "clicks", "cost"},
                "metadata": {"currency": "EUR"}  (no person ids)

>>> evs = list(generate_events(seed=1, n_persons=20, days=1))
>>> evs == list(generate_events(seed=1, n_persons=20, days=1))
True
>>> all(a["timestamp"] <= b["timestamp"] for a, b in zip(evs, evs[1:]))
True
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from creditflow.events import RawRecord, SourcePosition
from sources import SourceError

__all__ = [
    "DEFAULT_START_MS",
    "DEFAULT_TENANTS",
    "GeneratorSource",
    "generate_events",
    "serialize_events",
    "write_jsonl",
]

DEFAULT_TENANTS: tuple[str, ...] = ("acme", "globex", "initech")
DEFAULT_START_MS = 1_767_225_600_000
"""2026-01-01T00:00:00Z."""
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SOURCE_NAME = "generator"


@dataclass(frozen=True, slots=True)
class _Campaign:
    """A marketing campaign template; ``{t}`` in ids is the tenant."""

    key: str
    channel: str
    utm_source: str
    utm_medium: str
    click_id: str  # "" = none
    click_id_only: float  # share of clicks with the click id but no UTMs (auto-tagging)
    referrer: str
    touch_weight: float  # share of all touches
    impression_share: float  # share of this campaign's touches that are impressions
    q_click: float  # rise in the chance to convert per click
    q_impression: float  # ... per impression
    ctr: float
    cpc: float  # cost per click (search, affiliate); 0 = priced per impression
    cpm: float
    reach: float  # reported impressions per tracked touch
    spend: bool = True
    terms: tuple[str, ...] = ()


# fmt: off
_CAMPAIGNS: tuple[_Campaign, ...] = (
    _Campaign("search-brand", "paid_search", "google", "cpc", "gclid", 0.35, "https://www.google.com/",
              0.09, 0.0, 0.17, 0.0, 0.09, 0.85, 0, 4, terms=("{t}", "{t} login", "{t} pricing")),
    _Campaign("search-generic", "paid_search", "google", "cpc", "gclid", 0.35, "https://www.google.com/",
              0.08, 0.0, 0.07, 0.0, 0.035, 1.70, 0, 9, terms=("best analytics tool", "crm software", "invoice app")),
    _Campaign("bing-generic", "paid_search", "bing", "cpc", "msclkid", 0.5, "https://www.bing.com/",
              0.03, 0.0, 0.08, 0.0, 0.03, 1.10, 0, 7, terms=("analytics software", "crm for smb")),
    _Campaign("fb-prospecting", "paid_social", "facebook", "paid_social", "fbclid", 0.0, "https://l.facebook.com/",
              0.09, 0.55, 0.04, 0.010, 0.011, 0, 7.5, 25),
    _Campaign("fb-retargeting", "paid_social", "facebook", "paid_social", "fbclid", 0.0, "https://l.facebook.com/",
              0.05, 0.45, 0.10, 0.020, 0.018, 0, 11.0, 12),
    _Campaign("tt-awareness", "paid_social", "tiktok", "paid_social", "ttclid", 0.3, "",
              0.05, 0.65, 0.03, 0.006, 0.007, 0, 5.0, 30),
    _Campaign("display-prospecting", "display", "dv360", "display", "", 0.0, "",
              0.08, 0.85, 0.03, 0.008, 0.003, 0, 2.5, 60),
    _Campaign("display-retargeting", "display", "criteo", "cpm", "", 0.0, "",
              0.04, 0.75, 0.06, 0.015, 0.006, 0, 4.0, 30),
    _Campaign("aff-partners", "affiliate", "awin", "affiliate", "", 0.0, "https://www.vouchercodes.example/",
              0.05, 0.0, 0.11, 0.0, 0.02, 0.45, 0, 5),
    _Campaign("newsletter", "email", "newsletter", "email", "", 0.0, "",
              0.09, 0.0, 0.12, 0.0, 0.0, 0, 0, 0, spend=False),
)
# fmt: on


@dataclass(frozen=True, slots=True)
class _Organic:
    channel: str
    referrers: tuple[str, ...]
    touch_weight: float
    q: float


_ORGANIC: tuple[_Organic, ...] = (
    _Organic(
        "organic_search", ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/"), 0.12, 0.07
    ),
    _Organic("organic_social", ("https://t.co/", "https://www.facebook.com/", "https://www.linkedin.com/"), 0.05, 0.02),
    _Organic(
        "referral",
        ("https://news.ycombinator.com/", "https://www.producthunt.com/", "https://blog.example.org/"),
        0.03,
        0.04,
    ),
    _Organic("direct", ("",), 0.10, 0.08),
)
_DIRECT = _ORGANIC[3]
_ORGANIC_SEARCH = _ORGANIC[0]
_SOURCES: tuple[_Campaign | _Organic, ...] = _CAMPAIGNS + _ORGANIC
_SOURCE_WEIGHTS: tuple[float, ...] = tuple(s.touch_weight for s in _SOURCES)

_TOUCH_COUNT_WEIGHTS = (0.30, 0.22, 0.15, 0.11, 0.08, 0.06, 0.045, 0.035)  # 1..8 touches
_CONVERSION_SCALE = 1.3  # calibrates the share of converting persons to about 25 %
_VIEW_THROUGH_FOLLOW = 0.45  # chance that an impression is followed by a direct/organic-search visit
_VIEW_THROUGH_LIFT = 0.04
_REPEAT_CONVERSION = 0.15  # share of converters who convert a second time
_PAGES = ("/", "/pricing", "/product", "/features", "/blog/attribution-101", "/signup", "/docs")
_USER_AGENTS = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Mobile Safari/537.36",
    ),
    "tablet": ("Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",),
}
_COUNTRIES = (("DE", "AT", "CH", "FR", "NL"), ("US", "CA", "GB"), ("US", "DE", "GB", "FR", "ES", "IN"))


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything about a run except the seed-driven randomness."""

    seed: int
    n_persons: int
    tenants: tuple[str, ...]
    start_ms: int
    end_ms: int

    @property
    def hours(self) -> int:
        return math.ceil((self.end_ms - self.start_ms) / HOUR_MS)

    def tenant_weights(self) -> list[float]:
        raw = [1 / (i + 1) ** 1.5 for i in range(len(self.tenants))]
        total = sum(raw)
        return [w / total for w in raw]

    def currency(self, tenant_index: int) -> str:
        return "EUR" if tenant_index % 2 == 0 else "USD"


def _plan(seed: int, n_persons: int, tenants: Sequence[str], start_ms: int, days: float) -> _Plan:
    if isinstance(tenants, str) or not tenants or len(set(tenants)) != len(tenants):
        raise SourceError(f"tenants must be a non-empty list of distinct names (got {tenants!r})")
    if n_persons < 0:
        raise SourceError(f"n_persons must be >= 0 (got {n_persons})")
    if not days > 0:
        raise SourceError(f"days must be > 0 (got {days})")
    return _Plan(seed, n_persons, tuple(tenants), start_ms, start_ms + int(days * DAY_MS))


def _hash(*parts: object) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()


def _event_id(*parts: object) -> str:
    return str(uuid.UUID(bytes=_hash(*parts), version=4))


def _hex(n: int, *parts: object) -> str:
    return _hash(*parts).hex()[:n]


def _person_key(seed: int, person: int) -> str:
    return f"{seed}:p{person}"


def _person_partition(seed: int, person: int, partitions: int) -> int:
    return zlib.crc32(_person_key(seed, person).encode()) % partitions


def _spend_partition(tenant: str, campaign: str, partitions: int) -> int:
    return zlib.crc32(f"{tenant}/{campaign}".encode()) % partitions


def _gap(rng: random.Random, t: int, mean_ms: float, min_ms: int, end_ms: int) -> int:
    """The time of the next step after ``t``: exponential gap, always before ``end_ms``."""
    step = max(min_ms, int(rng.expovariate(1 / mean_ms)))
    if t + step >= end_ms:
        step = int((end_ms - 1 - t) * rng.random())
    return t + step


def _person_events(plan: _Plan, person: int) -> list[dict[str, Any]]:
    """The whole journey of one person; randomness depends only on (seed, person)."""
    seed = plan.seed
    rng = random.Random(_person_key(seed, person))
    t_idx = rng.choices(range(len(plan.tenants)), plan.tenant_weights())[0]
    tenant = plan.tenants[t_idx]
    device_type = rng.choices(("mobile", "desktop", "tablet"), (0.55, 0.38, 0.07))[0]
    context = {
        "ip": f"{rng.choice((81, 84, 93, 185, 203))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(_USER_AGENTS[device_type]),
        "device_type": device_type,
        "country": rng.choice(_COUNTRIES[t_idx % len(_COUNTRIES)]),
    }
    anon = f"anon-{_hex(20, seed, person, 'anon')}"
    device_id = f"dev-{_hex(16, seed, person, 'dev')}" if rng.random() < 0.35 else ""
    has_account = rng.random() < 0.35
    user_id = f"user-{_hex(12, seed, person, 'user')}" if has_account else ""
    second_anon = f"anon-{_hex(20, seed, person, 'anon2')}" if has_account and rng.random() < 0.25 else ""
    n_touches = rng.choices(range(1, 9), _TOUCH_COUNT_WEIGHTS)[0]
    login_at = rng.randrange(n_touches) if has_account else n_touches  # touch index of the identify event

    events: list[dict[str, Any]] = []
    seq = 0

    def base(event_type: str, ts: int, logged_in: bool) -> dict[str, Any]:
        nonlocal seq
        ev: dict[str, Any] = {
            "event_id": _event_id(seed, person, seq),
            "tenant_id": tenant,
            "event_type": event_type,
            "timestamp": ts,
            "anonymous_id": second_anon if (second_anon and logged_in and rng.random() < 0.4) else anon,
        }
        seq += 1
        if logged_in and user_id:
            ev["user_id"] = user_id
        if device_id and rng.random() < 0.7:
            ev["device_id"] = device_id
        ev["context"] = dict(context)
        return ev

    t = plan.start_ms + int((plan.end_ms - plan.start_ms) * 0.9 * rng.random())
    p_no_conversion = 1.0
    last_impression_ts: int | None = None
    for i in range(n_touches):
        if i:
            t = _gap(rng, t, 10 * HOUR_MS, 30_000, plan.end_ms)
        logged_in = i >= login_at
        if has_account and i == login_at:
            events.append(base("identify", t, True))
            t += rng.randrange(1_000, 60_000)
            t = min(t, plan.end_ms - 1)
        if last_impression_ts is not None and rng.random() < _VIEW_THROUGH_FOLLOW:
            source: _Campaign | _Organic = _DIRECT if rng.random() < 0.6 else _ORGANIC_SEARCH
        else:
            source = rng.choices(_SOURCES, _SOURCE_WEIGHTS)[0]
        ev, q = _touch(rng, plan, t_idx, source, base(_touch_type(rng, source), t, logged_in))
        if last_impression_ts is not None and isinstance(source, _Organic) and t - last_impression_ts < DAY_MS:
            q += _VIEW_THROUGH_LIFT
        last_impression_ts = t if ev["event_type"] == "impression" else None
        events.append(ev)
        p_no_conversion *= 1 - min(0.95, q * _CONVERSION_SCALE)
    if rng.random() > p_no_conversion:
        repeat = rng.random() < _REPEAT_CONVERSION
        first_conv_after = rng.randrange(1, n_touches + 1) if repeat else n_touches
        touches = [e for e in events if e["event_type"] != "identify"]
        conv_times = [touches[first_conv_after - 1]["timestamp"]]
        if repeat:
            conv_times.append(touches[-1]["timestamp"])
        last = -1
        for k, after in enumerate(conv_times):
            ts = _gap(rng, max(after, last), 2 * HOUR_MS, 20_000, plan.end_ms)
            if ts <= last:
                break
            last = ts
            ev = base("conversion", ts, True)  # checkout needs the account: user_id if there is one
            ev["conversion"] = _conversion(rng, plan, t_idx, person, k)
            events.append(ev)
    return events


def _touch_type(rng: random.Random, source: _Campaign | _Organic) -> str:
    if isinstance(source, _Organic):
        return "page_view"
    return "impression" if rng.random() < source.impression_share else "click"


def _touch(
    rng: random.Random, plan: _Plan, t_idx: int, source: _Campaign | _Organic, ev: dict[str, Any]
) -> tuple[dict[str, Any], float]:
    """Fill in a touch event's marketing fields; returns it and its conversion lift."""
    tenant = plan.tenants[t_idx]
    if isinstance(source, _Organic):
        referrer = rng.choice(source.referrers)
        if referrer:
            ev["referrer"] = referrer
        ev["metadata"] = {"page": rng.choice(_PAGES)}
        return ev, source.q
    campaign_id = f"{tenant}-{source.key}"
    utm = {"source": source.utm_source, "medium": source.utm_medium, "campaign": campaign_id}
    if ev["event_type"] == "impression":
        ev["campaign_id"] = campaign_id
        ev["utm"] = utm
        ev["metadata"] = {"placement": rng.choice(("feed", "sidebar", "story", "banner-300x250"))}
        return ev, source.q_impression
    if source.click_id and rng.random() < source.click_id_only:
        ev["click_ids"] = {source.click_id: _hex(24, plan.seed, ev["event_id"], "clid")}
    else:
        ev["campaign_id"] = campaign_id
        if source.terms:
            utm["term"] = rng.choice(source.terms).format(t=tenant)
        if source.channel in ("paid_social", "display"):
            utm["content"] = rng.choice(("video-15s", "carousel", "static-a", "static-b"))
        ev["utm"] = utm
        if source.click_id:
            ev["click_ids"] = {source.click_id: _hex(24, plan.seed, ev["event_id"], "clid")}
    if source.referrer:
        ev["referrer"] = source.referrer
    ev["metadata"] = {"page": rng.choice(_PAGES)}
    return ev, source.q_click


def _conversion(rng: random.Random, plan: _Plan, t_idx: int, person: int, k: int) -> dict[str, Any]:
    if rng.random() < 0.12:
        kind, value = "lead", rng.uniform(10, 40)
    else:
        kind, value = "purchase", min(500.0, max(10.0, rng.lognormvariate(math.log(75), 0.75)))
    return {
        "conversion_id": f"ord-{person:07d}-{k}",
        "value": round(value, 2),
        "currency": plan.currency(t_idx),
        "type": kind,
    }


def _diurnal(hour_of_day: int) -> float:
    """Traffic by hour of day (UTC): low at night, peak in the evening."""
    return 0.35 + 0.65 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour_of_day - 3) / 24))


def _spend_events(plan: _Plan, t_idx: int, campaign: _Campaign) -> list[dict[str, Any]]:
    """Hourly ad-platform reports of one tenant's campaign; randomness depends on (seed, tenant, campaign)."""
    tenant = plan.tenants[t_idx]
    campaign_id = f"{tenant}-{campaign.key}"
    rng = random.Random(f"{plan.seed}:spend:{tenant}:{campaign.key}")
    touches_per_hour = plan.n_persons * plan.tenant_weights()[t_idx] * 2.8 * campaign.touch_weight / plan.hours
    utm = {"source": campaign.utm_source, "medium": campaign.utm_medium, "campaign": campaign_id}
    events = []
    for h in range(plan.hours):
        ts = plan.start_ms + h * HOUR_MS
        mean = max(1.0, touches_per_hour * campaign.reach * _diurnal(h % 24) * 2)
        impressions = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        clicks = min(impressions, max(0, round(impressions * campaign.ctr * rng.uniform(0.7, 1.3))))
        cost = clicks * campaign.cpc * rng.uniform(0.85, 1.15) if campaign.cpc else impressions * campaign.cpm / 1000
        events.append(
            {
                "event_id": _event_id(plan.seed, "spend", tenant, campaign.key, h),
                "tenant_id": tenant,
                "event_type": "ad_spend",
                "timestamp": ts,
                "channel": campaign.channel,
                "campaign_id": campaign_id,
                "utm": utm,
                "metrics": {"impressions": impressions, "clicks": clicks, "cost": round(cost, 2)},
                "metadata": {"currency": plan.currency(t_idx), "interval_ms": HOUR_MS},
            }
        )
    return events


def _sort_key(ev: Mapping[str, Any]) -> tuple[int, str]:
    return (ev["timestamp"], ev["event_id"])


def _generate(plan: _Plan, partition: int = 0, partitions: int = 1) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for person in range(plan.n_persons):
        if partitions == 1 or _person_partition(plan.seed, person, partitions) == partition:
            events.extend(_person_events(plan, person))
    for t_idx, tenant in enumerate(plan.tenants):
        for campaign in _CAMPAIGNS:
            if campaign.spend and (partitions == 1 or _spend_partition(tenant, campaign.key, partitions) == partition):
                events.extend(_spend_events(plan, t_idx, campaign))
    events.sort(key=_sort_key)
    return events


def generate_events(
    seed: int,
    n_persons: int,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    start_ms: int = DEFAULT_START_MS,
    days: float = 7.0,
) -> Iterator[dict[str, Any]]:
    """Synthetic events of ``n_persons`` people plus hourly ad spend, sorted by ``timestamp``.

    Deterministic: the same arguments give the same events (ids included). All
    events are built before the first is yielded (they must be sorted): about
    1.5 KB of memory per event, ~3.5 events per person plus 9 x 24 x days
    ad-spend reports per tenant.
    """
    yield from _generate(_plan(seed, n_persons, tenants, start_ms, days))


def generate_partitioned_events(
    seed: int,
    n_persons: int,
    partitions: int,
    tenants: Sequence[str] = DEFAULT_TENANTS,
    start_ms: int = DEFAULT_START_MS,
    days: float = 7.0,
) -> list[list[dict[str, Any]]]:
    """The events of ``generate_events`` split into ``partitions`` lists, each person's in one list.

    This is how a producer keyed by person spreads traffic over Kafka partitions
    or Redis streams; each list is sorted by ``timestamp``.

    >>> parts = generate_partitioned_events(seed=1, n_persons=20, partitions=2)
    >>> sum(map(len, parts)) == len(list(generate_events(seed=1, n_persons=20)))
    True
    """
    plan = _plan(seed, n_persons, tenants, start_ms, days)
    return [_generate(plan, i, partitions) for i in range(partitions)]


_BAD_KINDS = ("truncated_json", "missing_tenant", "bad_timestamp")


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts``."""
    return int.from_bytes(_hash(*parts)[:8], "big") / 2**64


def serialize_events(events: Iterable[Mapping[str, Any]], bad_fraction: float = 0.0) -> Iterator[bytes]:
    """Events as JSON bytes; with ``bad_fraction`` > 0, deliberately bad records too.

    After about ``bad_fraction`` of the events (chosen by event id, so
    deterministic) comes a broken copy with event id ``<id>-bad``: truncated
    JSON, no ``tenant_id``, or an invalid ``timestamp``. The good events are
    all still there.

    >>> ev = {"event_id": "e1", "tenant_id": "acme", "event_type": "click", "timestamp": 5}
    >>> [len(list(serialize_events([ev], f))) for f in (0.0, 1.0)]
    [1, 2]
    """
    if not 0.0 <= bad_fraction <= 1.0:
        raise SourceError(f"bad_fraction must be within [0, 1] (got {bad_fraction})")
    for ev in events:
        yield orjson.dumps(ev)
        if bad_fraction and _unit(ev.get("event_id"), "bad") < bad_fraction:
            kind = _BAD_KINDS[int(_unit(ev.get("event_id"), "kind") * len(_BAD_KINDS))]
            bad = {**ev, "event_id": f"{ev.get('event_id')}-bad"}
            if kind == "truncated_json":
                full = orjson.dumps(bad)
                yield full[: len(full) // 2]
                continue
            if kind == "missing_tenant":
                bad.pop("tenant_id", None)
            else:
                bad["timestamp"] = "2026-13-45T99:99:99"
            yield orjson.dumps(bad)


def write_jsonl(path: str | Path, events: Iterable[Mapping[str, Any] | bytes]) -> int:
    """Write events (dicts, or JSON bytes from ``serialize_events``) one per line; returns the count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("wb") as fh:
        for ev in events:
            fh.write(ev if isinstance(ev, bytes) else orjson.dumps(ev))
            fh.write(b"\n")
            n += 1
    return n


class GeneratorSource(FixedPartitionedSource[RawRecord, int]):
    """``generate_events`` as a Bytewax source with ``partitions`` partitions ``gen#0``...

    Partition ``i`` emits, in timestamp order, the events of the persons whose
    stable hash modulo ``partitions`` is ``i`` (a person's events stay together)
    and of the ad-spend series (tenant x campaign) hashed to it; together the
    partitions emit exactly ``generate_events``' events. Resume state = index of
    the next record in the partition. A partition builds all its records when it
    is built (about 0.5 KB each).

    :arg bad_fraction: Share of events followed by a deliberately bad record
        (see ``serialize_events``), to show the dead-letter path.
    """

    def __init__(
        self,
        seed: int,
        n_persons: int,
        partitions: int = 1,
        tenants: Sequence[str] = DEFAULT_TENANTS,
        start_ms: int = DEFAULT_START_MS,
        days: float = 7.0,
        bad_fraction: float = 0.0,
        batch_size: int = 1000,
    ):
        if partitions < 1:
            raise SourceError(f"partitions must be >= 1 (got {partitions})")
        if batch_size < 1:
            raise SourceError(f"batch_size must be >= 1 (got {batch_size})")
        if not 0.0 <= bad_fraction <= 1.0:
            raise SourceError(f"bad_fraction must be within [0, 1] (got {bad_fraction})")
        self._plan = _plan(seed, n_persons, tenants, start_ms, days)
        self._partitions = partitions
        self._bad_fraction = bad_fraction
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [f"gen#{i}" for i in range(self._partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _GeneratorPartition:
        if for_part not in self.list_parts():
            raise SourceError(
                f"step {step_id!r}: no generator partition {for_part!r} (have {self.list_parts()}); "
                "the number of partitions changed since the snapshot was taken"
            )
        index = int(for_part.split("#", 1)[1])
        events = _generate(self._plan, index, self._partitions)
        # Copy: orjson's results over-allocate, and a partition keeps them all.
        records = [bytes(memoryview(b)) for b in serialize_events(events, self._bad_fraction)]
        return _GeneratorPartition(for_part, records, resume_state or 0, self._batch_size)


class _GeneratorPartition(StatefulSourcePartition[RawRecord, int]):
    def __init__(self, name: str, records: list[bytes], index: int, batch_size: int):
        self._name = name
        self._records = records
        self._index = index
        self._batch_size = batch_size

    def next_batch(self) -> list[RawRecord]:
        start = self._index
        chunk = self._records[start : start + self._batch_size]
        if not chunk:
            raise StopIteration
        self._index = start + len(chunk)
        name = self._name
        return [RawRecord(p, SourcePosition(SOURCE_NAME, name, str(start + i)), "json") for i, p in enumerate(chunk)]

    def snapshot(self) -> int:
        return self._index


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sources.generator", description="Write synthetic events as JSONL.")
    parser.add_argument("path", help="output .jsonl file")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--tenants", default=",".join(DEFAULT_TENANTS), help="comma-separated, most traffic first")
    parser.add_argument("--bad-fraction", type=float, default=0.0)
    args = parser.parse_args(argv)
    events = generate_events(args.seed, args.persons, tuple(args.tenants.split(",")), days=args.days)
    n = write_jsonl(args.path, serialize_events(events, args.bad_fraction))
    print(f"wrote {n} records to {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
