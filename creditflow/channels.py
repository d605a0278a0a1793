"""Channel and campaign taxonomy: which marketing channel a touch came through.

Pure functions, called once per touch in the decode step, so everything that
can be is precompiled or cached (compiled tenant rules per rule tuple, host and
UTM classifications per distinct value).

Precedence of :func:`derive_channel`:

0. an explicit ``event.channel`` (normalised);
1. the tenant's ``channel_rules``, in order;
2. the default grouping, modelled on GA4's default channel group:
   click ids, then UTM source/medium, then the referrer host, then ``direct``.

>>> from creditflow.config import TenantConfig
>>> from creditflow.events import Event, SourcePosition, Utm
>>> ev = Event(event_id="e1", tenant_id="t1", event_type="click", ts_ms=0,
...            position=SourcePosition("t", "0", "0"),
...            utm=Utm(source="google", medium="cpc", campaign="spring"),
...            click_ids={"gclid": "abc"})
>>> derive_channel(ev, TenantConfig()), campaign_of(ev)
('paid_search', 'spring')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from creditflow.config import ChannelRule, ConfigError, TenantConfig
from creditflow.events import Event

__all__ = [
    "AFFILIATE",
    "DEFAULT_CHANNELS",
    "DIRECT",
    "DISPLAY",
    "EMAIL",
    "ORGANIC_SEARCH",
    "ORGANIC_SOCIAL",
    "PAID_SEARCH",
    "PAID_SOCIAL",
    "REFERRAL",
    "VIDEO",
    "campaign_of",
    "compile_rules",
    "derive_channel",
    "is_internal_referrer",
    "normalize_channel",
    "referrer_host",
]

PAID_SEARCH = "paid_search"
ORGANIC_SEARCH = "organic_search"
PAID_SOCIAL = "paid_social"
ORGANIC_SOCIAL = "organic_social"
EMAIL = "email"
DISPLAY = "display"
VIDEO = "video"
AFFILIATE = "affiliate"
REFERRAL = "referral"
DIRECT = "direct"

DEFAULT_CHANNELS: tuple[str, ...] = (
    PAID_SEARCH,
    ORGANIC_SEARCH,
    PAID_SOCIAL,
    ORGANIC_SOCIAL,
    EMAIL,
    DISPLAY,
    VIDEO,
    AFFILIATE,
    REFERRAL,
    DIRECT,
)
"""Every channel the default grouping can return."""

# --------------------------------------------------------------------------- #
# Public helpers
# --------------------------------------------------------------------------- #

_CHANNEL_SEP_RE = re.compile(r"[\s\-]+")


@lru_cache(maxsize=4096)
def normalize_channel(channel: str) -> str:
    """Canonical form of a channel name: stripped, lower-case, runs of spaces/hyphens as one ``_``.

    Idempotent, so a channel derived once and stored on the event stays as it is.

    >>> normalize_channel("  Paid Search "), normalize_channel("organic-social"), normalize_channel("")
    ('paid_search', 'organic_social', '')
    """
    return _CHANNEL_SEP_RE.sub("_", channel.strip().lower())


_MAX_REFERRER_SCAN = 2048
"""Only this many leading characters of a referrer are looked at (the host is near the start)."""
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_AUTHORITY_END_RE = re.compile(r"[/?#\\]")
_HOST_CHARS_RE = re.compile(r"[\w\-]+(?:\.[\w\-]+)*")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
_COMMON_URL_RE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]{0,30}:)?//([\w\-.]{1,300})(?::[0-9]{0,5})?(?=[/?#\\]|\Z)")
"""``scheme://host[:port]`` followed by the path, query, fragment or the end: the usual referrer."""


def referrer_host(referrer: str) -> str:
    """Host of a referrer URL: lower-case, without ``www.``, port or user info; '' if there is none.

    Accepts absolute URLs (any scheme, e.g. ``android-app://``), scheme-relative
    ``//host/...`` and bare ``host.tld/path``. Never raises, whatever the input.

    >>> referrer_host("https://WWW.Google.co.uk:443/search?q=x")
    'google.co.uk'
    >>> referrer_host("android-app://com.google.android.gm/")
    'com.google.android.gm'
    >>> referrer_host("news.example.com/a"), referrer_host("not a url"), referrer_host("")
    ('news.example.com', '', '')
    """
    if not referrer or not isinstance(referrer, str):
        return ""
    m = _COMMON_URL_RE.match(referrer)
    if m is not None:
        return _clean_host(m.group(1))
    return _referrer_host_slow(referrer)


def _referrer_host_slow(referrer: str) -> str:
    """The general parser behind ``referrer_host`` (which first tries a one-regex fast path)."""
    s = referrer[:_MAX_REFERRER_SCAN].strip()
    m = _SCHEME_RE.match(s)
    if m is not None and s.startswith("//", m.end()):
        rest = s[m.end() + 2 :]
        bare = False
    elif s.startswith("//"):
        rest = s[2:]
        bare = False
    elif m is not None and not s[m.end() : m.end() + 1].isdigit():
        return ""  # "mailto:x", "about:blank", "javascript:..." (a "host:port" has digits after the colon)
    else:
        rest = s
        bare = True
    end = _AUTHORITY_END_RE.search(rest)
    authority = rest if end is None else rest[: end.start()]
    if "@" in authority:
        if bare:
            return ""
        authority = authority.rpartition("@")[2]
    if authority.startswith("["):  # IPv6 literal
        inside, closed, after = authority[1:].partition("]")
        if not closed or not _IPV6_RE.fullmatch(inside) or (after and not _is_port(after)):
            return ""
        return inside.lower()
    host, colon, port = authority.partition(":")
    if colon and not _is_port(colon + port):
        return ""
    return _clean_host(host, require_dot=bare)


def _is_port(text: str) -> bool:
    """``text`` is ':' followed by zero to five ASCII digits."""
    digits = text[1:]
    return text[:1] == ":" and len(digits) <= 5 and (not digits or (digits.isascii() and digits.isdigit()))


def _clean_host(host: str, require_dot: bool = False) -> str:
    host = host.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if not host or len(host) > 253 or not _HOST_CHARS_RE.fullmatch(host):
        return ""
    if require_dot and "." not in host:
        return ""
    return host


def is_internal_referrer(referrer: str, cfg: TenantConfig) -> bool:
    """True when the referrer's host is one of ``cfg.own_domains`` or a subdomain of one.

    >>> from creditflow.config import TenantConfig
    >>> cfg = TenantConfig(own_domains=("acme.com",))
    >>> is_internal_referrer("https://shop.acme.com/cart", cfg), is_internal_referrer("https://notacme.com/", cfg)
    (True, False)
    """
    if not referrer or not cfg.own_domains:
        return False
    host = referrer_host(referrer)
    return bool(host) and _host_in(host, _own_domains(cfg.own_domains))


def campaign_of(event: Event) -> str:
    """The campaign of an event: its ``campaign_id``, else ``utm.campaign``, else ''.

    >>> from creditflow.events import Event, SourcePosition, Utm
    >>> pos = SourcePosition("t", "0", "0")
    >>> campaign_of(Event("e", "t", "click", 0, pos, utm=Utm(campaign="summer")))
    'summer'
    >>> campaign_of(Event("e", "t", "click", 0, pos, campaign_id="c-42", utm=Utm(campaign="summer")))
    'c-42'
    """
    return event.campaign_id or event.utm.campaign or ""


# --------------------------------------------------------------------------- #
# Tenant rules
# --------------------------------------------------------------------------- #


class _CompiledRule(NamedTuple):
    channel: str
    source: re.Pattern[str] | None
    medium: re.Pattern[str] | None
    campaign: re.Pattern[str] | None
    referrer_host: re.Pattern[str] | None
    click_id: str | None


def _compile_pattern(pattern: str | None, what: str, index: int) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except (re.error, TypeError) as exc:
        raise ConfigError(
            f"channel_rules[{index}].{what} {pattern!r} is not a valid regular expression ({exc}); fix the pattern"
        ) from exc


@lru_cache(maxsize=256)
def compile_rules(rules: tuple[ChannelRule, ...]) -> tuple[_CompiledRule, ...]:
    """Compile a tenant's channel rules (cached per rule tuple); call at start-up to validate a config.

    >>> from creditflow.config import ChannelRule
    >>> compile_rules((ChannelRule("Partner Co", utm_source="^partnerco$"),))[0].channel
    'partner_co'
    >>> compile_rules((ChannelRule("x", utm_medium="(("),))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    creditflow.config.ConfigError: channel_rules[0].utm_medium '((' is not a valid regular expression (...)...
    """
    compiled = []
    for i, rule in enumerate(rules):
        channel = normalize_channel(rule.channel) if isinstance(rule.channel, str) else ""
        if not channel:
            raise ConfigError(f"channel_rules[{i}] has an empty channel; name the channel the rule assigns")
        click_id = rule.click_id.strip().lower() if rule.click_id is not None else None
        compiled.append(
            _CompiledRule(
                channel=channel,
                source=_compile_pattern(rule.utm_source, "utm_source", i),
                medium=_compile_pattern(rule.utm_medium, "utm_medium", i),
                campaign=_compile_pattern(rule.utm_campaign, "utm_campaign", i),
                referrer_host=_compile_pattern(rule.referrer_host, "referrer_host", i),
                click_id=click_id,
            )
        )
    return tuple(compiled)


_RULES_BY_ID: dict[int, tuple[tuple[ChannelRule, ...], tuple[_CompiledRule, ...]]] = {}
"""Identity fast path in front of ``compile_rules``: hashing a tuple of dataclasses costs
more than the rest of a typical call. Entries hold the tuple itself, so an id is never reused
while its entry lives."""


def _rules_of(rules: tuple[ChannelRule, ...]) -> tuple[_CompiledRule, ...]:
    entry = _RULES_BY_ID.get(id(rules))
    if entry is not None and entry[0] is rules:
        return entry[1]
    compiled = compile_rules(rules)
    if len(_RULES_BY_ID) >= 1024:
        _RULES_BY_ID.clear()
    _RULES_BY_ID[id(rules)] = (rules, compiled)
    return compiled


def _apply_rules(rules: tuple[_CompiledRule, ...], event: Event) -> tuple[str, str | None]:
    """(channel of the first matching rule or '', the referrer host if it was parsed)."""
    utm = event.utm
    host: str | None = None
    for rule in rules:
        if rule.click_id is not None and not event.click_ids.get(rule.click_id):
            continue
        if rule.source is not None and rule.source.search(utm.source) is None:
            continue
        if rule.medium is not None and rule.medium.search(utm.medium) is None:
            continue
        if rule.campaign is not None and rule.campaign.search(utm.campaign) is None:
            continue
        if rule.referrer_host is not None:
            if host is None:
                host = referrer_host(event.referrer)
            if rule.referrer_host.search(host) is None:
                continue
        return rule.channel, host
    return "", host


# --------------------------------------------------------------------------- #
# Default grouping: hosts and sources
# --------------------------------------------------------------------------- #

# Host kinds (what a referrer host or a host-like utm_source is).
_SEARCH = "search"
_SOCIAL = "social"
_VIDEO = "video"
_EMAIL = "email"
_DISPLAY = "display"
_OTHER = "other"

_KIND_CHANNEL: dict[str, str] = {
    _SEARCH: ORGANIC_SEARCH,
    _SOCIAL: ORGANIC_SOCIAL,
    _VIDEO: VIDEO,
    _EMAIL: EMAIL,
    _DISPLAY: DISPLAY,
    _OTHER: REFERRAL,
}

_HOST_KINDS: dict[str, str] = {}
for _kind, _hosts in (
    (
        _EMAIL,
        "mail.google.com inbox.google.com outlook.live.com outlook.office.com outlook.office365.com outlook.com "
        "mail.yahoo.com mail.aol.com mail.proton.me mail.protonmail.com mail.zoho.com e.mail.ru "
        "mail.yandex.ru mail.yandex.com icloud.com fastmail.com gmx.net gmx.com gmx.de web.de mail.com "
        "com.google.android.gm com.microsoft.office.outlook com.yahoo.mobile.client.android.mail",
    ),
    (
        _SEARCH,
        "duckduckgo.com baidu.com m.baidu.com ecosia.org ask.com search.aol.com naver.com seznam.cz qwant.com "
        "startpage.com search.brave.com sogou.com so.com daum.net yandex.ru ya.ru search.yahoo.com "
        "com.google.android.googlequicksearchbox com.google.android.apps.searchlite",
    ),
    (
        _SOCIAL,
        "facebook.com fb.com fb.me messenger.com instagram.com threads.net threads.com t.co twitter.com x.com "
        "linkedin.com lnkd.in pin.it reddit.com redd.it tiktok.com snapchat.com quora.com tumblr.com vk.com "
        "weibo.com bsky.app mastodon.social discord.com whatsapp.com telegram.org t.me xing.com "
        "news.ycombinator.com com.facebook.katana com.facebook.lite com.facebook.orca com.instagram.android "
        "com.linkedin.android com.twitter.android com.reddit.frontpage com.pinterest "
        "com.zhiliaoapp.musically com.ss.android.ugc.trill",
    ),
    (
        _VIDEO,
        "youtube.com youtu.be youtube-nocookie.com vimeo.com twitch.tv dailymotion.com wistia.com "
        "com.google.android.youtube",
    ),
    (_DISPLAY, "doubleclick.net googlesyndication.com"),
    (
        # Google properties that are not search.
        _OTHER,
        "docs.google.com drive.google.com sites.google.com calendar.google.com accounts.google.com "
        "groups.google.com meet.google.com play.google.com chat.google.com classroom.google.com "
        "ads.google.com analytics.google.com support.google.com",
    ),
):
    for _host in _hosts.split():
        _HOST_KINDS[_host] = _kind

_BRAND_RE = re.compile(
    r"(?:^|\.)(?:(?P<search>google|bing|yahoo|yandex|baidu|ecosia)|(?P<social>pinterest|facebook|linkedin))"
    r"\.(?:(?:co|com|net|org|ac|gov|edu|ne|or|go|gob)\.)?[a-z]{2,3}$"
)
"""Brands under any country TLD: google.de, google.co.uk, news.google.com.au, pinterest.fr ..."""
_WEBMAIL_RE = re.compile(r"^(?:mail|webmail|email|outlook)\.[^.]+\.")


@lru_cache(maxsize=8192)
def _host_kind(host: str) -> str:
    """Kind of a clean host (see ``_clean_host``): search, social, video, email, display or other."""
    suffix = host
    while True:
        kind = _HOST_KINDS.get(suffix)
        if kind is not None:
            return kind
        dot = suffix.find(".")
        if dot < 0:
            break
        suffix = suffix[dot + 1 :]
    if _WEBMAIL_RE.match(host):
        return _EMAIL
    m = _BRAND_RE.search(host)
    if m is not None:
        return _SEARCH if m.lastgroup == "search" else _SOCIAL
    return _OTHER


_SOURCE_NAMES: dict[str, str] = {}
for _kind, _names in (
    (_EMAIL, "email e-mail newsletter newsletters mailchimp klaviyo sendgrid brevo sendinblue mailerlite"),
    (
        _SEARCH,
        "google bing yahoo duckduckgo ddg baidu yandex ecosia ask naver seznam qwant startpage brave sogou daum "
        "adwords googleads bingads microsoftads",
    ),
    (
        _SOCIAL,
        "facebook fb meta instagram ig messenger threads twitter x linkedin pinterest reddit tiktok snapchat "
        "quora tumblr vk weibo bluesky bsky mastodon discord whatsapp telegram xing",
    ),
    (_VIDEO, "youtube yt vimeo twitch dailymotion wistia"),
):
    for _name in _names.split():
        _SOURCE_NAMES[_name] = _kind
_EXACT_ONLY_SOURCES = frozenset({"x", "ask", "brave", "threads", "meta"})
"""Names too short or too common to recognise as the first word of a longer source."""
_FIRST_WORD_RE = re.compile(r"[a-z0-9]+")


def _source_kind(source: str) -> str:
    """Kind of a normalised utm_source, or '' when unknown."""
    kind = _SOURCE_NAMES.get(source)
    if kind is not None:
        return kind
    if "." in source:
        host = referrer_host(source)
        kind = _host_kind(host) if host else _OTHER
        return "" if kind == _OTHER else kind
    m = _FIRST_WORD_RE.match(source)
    if m is not None and m.end() < len(source):
        word = m.group()
        if word not in _EXACT_ONLY_SOURCES:
            return _SOURCE_NAMES.get(word, "")
    return ""


# --------------------------------------------------------------------------- #
# Default grouping: UTM mediums
# --------------------------------------------------------------------------- #

_UTM_SEP_RE = re.compile(r"[\s_]+")
_NO_MEDIUMS = frozenset({"(none)", "none", "(not-set)", "not-set", "(not set)", "(direct)", "direct"})
_NO_SOURCES = frozenset({"(direct)", "direct", "(none)", "none", "(not-set)", "not-set"})
_EMAIL_MEDIUMS = frozenset({"email", "e-mail", "newsletter", "newsletters"})
_AFFILIATE_MEDIUMS = frozenset({"affiliate", "affiliates"})
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "cpm", "expandable", "interstitial"})
_PAID_MEDIUM_RE = re.compile(r".*cp.*|ppc|retargeting|remarketing|paid.*")
_SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social-media", "sm", "organic-social", "social-networks"})
_REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})

# Medium kinds.
_M_NONE = ""
_M_EMAIL = "email"
_M_AFFILIATE = "affiliate"
_M_DISPLAY = "display"
_M_PAID = "paid"
_M_ORGANIC = "organic"
_M_SOCIAL = "social"
_M_VIDEO = "video"
_M_REFERRAL = "referral"
_M_OTHER = "other"


def _norm_utm(value: str) -> str:
    return _UTM_SEP_RE.sub("-", value.strip().lower())


def _medium_kind(medium: str) -> str:
    """Kind of a normalised utm_medium."""
    if not medium:
        return _M_NONE
    if medium in _EMAIL_MEDIUMS:
        return _M_EMAIL
    if medium in _AFFILIATE_MEDIUMS:
        return _M_AFFILIATE
    if medium in _DISPLAY_MEDIUMS:
        return _M_DISPLAY
    if _PAID_MEDIUM_RE.fullmatch(medium):
        return _M_PAID
    if medium == "organic":
        return _M_ORGANIC
    if medium in _SOCIAL_MEDIUMS:
        return _M_SOCIAL
    if "video" in medium:
        return _M_VIDEO
    if medium in _REFERRAL_MEDIUMS:
        return _M_REFERRAL
    return _M_OTHER


class _UtmFacts(NamedTuple):
    medium: str
    """Normalised medium."""
    medium_kind: str
    source_kind: str
    channel: str
    """Channel the UTMs alone give; '' when they are absent or unrecognised."""
    tagged: bool
    """A real source or medium is present (not empty, not "(none)" / "(direct)")."""


@lru_cache(maxsize=16384)
def _utm_facts(source: str, medium: str) -> _UtmFacts:
    m = _norm_utm(medium) if medium else ""
    s = _norm_utm(source) if source else ""
    if m in _NO_MEDIUMS:
        m = ""
    if s in _NO_SOURCES:
        s = ""
    mk = _medium_kind(m)
    sk = _source_kind(s) if s else ""
    return _UtmFacts(m, mk, sk, _utm_channel(m, mk, sk), bool(m or s))


def _utm_channel(medium: str, mk: str, sk: str) -> str:
    if mk == _M_EMAIL or sk == _EMAIL:
        return EMAIL
    if mk == _M_AFFILIATE:
        return AFFILIATE
    if mk == _M_DISPLAY:
        return DISPLAY
    if mk == _M_PAID:
        if sk == _SEARCH:
            return PAID_SEARCH
        if sk == _SOCIAL:
            return PAID_SOCIAL
        if sk == _VIDEO:
            return VIDEO
        if sk == _DISPLAY:
            return DISPLAY
        # Unknown source: trust words in the medium ("paid-social", "video-cpc"), else search (as GA's cpc rule).
        if "social" in medium:
            return PAID_SOCIAL
        if "video" in medium:
            return VIDEO
        if "display" in medium or medium in ("retargeting", "remarketing"):
            return DISPLAY
        return PAID_SEARCH
    if mk == _M_ORGANIC:
        # GA4 checks social and video sources before "organic": facebook/organic is organic social.
        return ORGANIC_SOCIAL if sk == _SOCIAL else VIDEO if sk == _VIDEO else ORGANIC_SEARCH
    if mk == _M_SOCIAL:
        return ORGANIC_SOCIAL
    if mk == _M_VIDEO:
        return VIDEO
    if mk == _M_REFERRAL:
        return REFERRAL
    if sk:
        return _KIND_CHANNEL[sk]
    return ""


# --------------------------------------------------------------------------- #
# Default grouping: click ids
# --------------------------------------------------------------------------- #

_GOOGLE_CLICK_IDS = ("gclid", "msclkid", "gbraid", "wbraid")
"""Search-ad click ids (Google Ads, Microsoft Advertising); Google's also tag display and YouTube clicks."""
_SOCIAL_CLICK_IDS = ("ttclid", "li_fat_id", "twclid", "sccid", "epik")
"""Click ids only paid social ads carry (TikTok, LinkedIn, X, Snapchat, Pinterest)."""


def _click_channel(click_ids: Mapping[str, str], source: str, medium: str) -> str:
    get = click_ids.get
    for name in _GOOGLE_CLICK_IDS:
        if get(name):
            facts = _utm_facts(source, medium)
            if facts.medium_kind == _M_DISPLAY or (facts.medium_kind == _M_PAID and "display" in facts.medium):
                return DISPLAY
            if "video" in facts.medium or facts.source_kind == _VIDEO:
                return VIDEO
            return PAID_SEARCH
    for name in _SOCIAL_CLICK_IDS:
        if get(name):
            return PAID_SOCIAL
    if get("fbclid"):
        # Facebook adds fbclid to organic outbound links too: paid only when the UTMs say so.
        mk = _utm_facts(source, medium).medium_kind
        return PAID_SOCIAL if mk in (_M_PAID, _M_DISPLAY) else ORGANIC_SOCIAL
    return ""


# --------------------------------------------------------------------------- #
# derive_channel
# --------------------------------------------------------------------------- #


@lru_cache(maxsize=1024)
def _own_domains(own_domains: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for domain in own_domains:
        if not isinstance(domain, str):
            continue
        domain = domain.strip().lstrip(".")
        host = referrer_host(domain) if "/" in domain else _clean_host(domain.partition(":")[0])
        if host:
            out.add(host)
    return frozenset(out)


def _host_in(host: str, domains: frozenset[str]) -> bool:
    """``host`` equals one of ``domains`` or is a subdomain of one."""
    while True:
        if host in domains:
            return True
        dot = host.find(".")
        if dot < 0:
            return False
        host = host[dot + 1 :]


def derive_channel(event: Event, cfg: TenantConfig) -> str:
    """The marketing channel of a touch; never '' and never raises on event content.

    Explicit ``event.channel`` (normalised) first, then ``cfg.channel_rules`` in order,
    then the default grouping: click ids, UTM source/medium, referrer host, ``direct``.
    A referrer on one of ``cfg.own_domains`` counts as no referrer. UTMs that are
    present but unrecognised give ``referral`` unless the referrer says more.

    >>> from creditflow.config import ChannelRule, TenantConfig
    >>> from creditflow.events import Event, SourcePosition, Utm
    >>> pos = SourcePosition("t", "0", "0")
    >>> cfg = TenantConfig(channel_rules=(ChannelRule("partner", utm_source="^partnerco$"),))
    >>> derive_channel(Event("e", "t", "click", 0, pos, channel=" Paid-Social"), cfg)
    'paid_social'
    >>> derive_channel(Event("e", "t", "click", 0, pos, utm=Utm(source="PartnerCo", medium="cpc")), cfg)
    'partner'
    >>> derive_channel(Event("e", "t", "click", 0, pos, click_ids={"fbclid": "x"}), cfg)
    'organic_social'
    >>> derive_channel(Event("e", "t", "page_view", 0, pos, referrer="https://www.bing.com/"), cfg)
    'organic_search'
    >>> derive_channel(Event("e", "t", "page_view", 0, pos), cfg)
    'direct'
    """
    if event.channel:
        explicit = normalize_channel(event.channel)
        if explicit:
            return explicit
    host: str | None = None
    if cfg.channel_rules:
        channel, host = _apply_rules(_rules_of(cfg.channel_rules), event)
        if channel:
            return channel
    utm = event.utm
    source = utm.source
    medium = utm.medium
    if event.click_ids:
        channel = _click_channel(event.click_ids, source, medium)
        if channel:
            return channel
    tagged = False
    if source or medium:
        facts = _utm_facts(source, medium)
        if facts.channel:
            return facts.channel
        tagged = facts.tagged
    referrer = event.referrer
    if referrer:
        if host is None:
            host = referrer_host(referrer)
        if host and not (cfg.own_domains and _host_in(host, _own_domains(cfg.own_domains))):
            return _KIND_CHANNEL[_host_kind(host)]
    return REFERRAL if tagged else DIRECT
