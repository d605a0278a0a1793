"""Tests of the channel and campaign taxonomy (creditflow.channels)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditflow.channels import (
    AFFILIATE,
    DEFAULT_CHANNELS,
    DIRECT,
    DISPLAY,
    EMAIL,
    ORGANIC_SEARCH,
    ORGANIC_SOCIAL,
    PAID_SEARCH,
    PAID_SOCIAL,
    REFERRAL,
    VIDEO,
    campaign_of,
    compile_rules,
    derive_channel,
    is_internal_referrer,
    normalize_channel,
    referrer_host,
)
from creditflow.channels import _referrer_host_slow as referrer_host_slow
from creditflow.config import ChannelRule, ConfigError, TenantConfig
from creditflow.events import CLICK_ID_NAMES, Event, SourcePosition, Utm

POS = SourcePosition("t", "0", "0")
PLAIN = TenantConfig(own_domains=("acme.com",))
RULES = TenantConfig(
    own_domains=("acme.com",),
    channel_rules=(
        ChannelRule("Partner Co", utm_source="^partnerco$"),
        ChannelRule("podcast", utm_medium="^audio$", utm_campaign="pod"),
        ChannelRule("tv", referrer_host=r"(^|\.)tvnetwork\.com$"),
        ChannelRule("tiktok_ads", click_id="ttclid"),
    ),
)


def make_event(
    *,
    channel: str = "",
    source: str = "",
    medium: str = "",
    campaign: str = "",
    click_ids: dict[str, str] | None = None,
    referrer: str = "",
    campaign_id: str = "",
    event_type: str = "click",
) -> Event:
    return Event(
        event_id="e1",
        tenant_id="t1",
        event_type=event_type,
        ts_ms=0,
        position=POS,
        channel=channel,
        campaign_id=campaign_id,
        utm=Utm(source=source, medium=medium, campaign=campaign),
        click_ids=click_ids or {},
        referrer=referrer,
    )


# (id, event fields, config, expected channel)
CASES: list[tuple[str, dict[str, Any], TenantConfig, str]] = [
    # 0. explicit channel beats everything, normalised
    (
        "explicit-beats-all",
        {"channel": "Paid Social", "click_ids": {"gclid": "g"}, "source": "partnerco"},
        RULES,
        PAID_SOCIAL,
    ),
    ("explicit-normalised", {"channel": "  Organic-Search "}, PLAIN, ORGANIC_SEARCH),
    ("explicit-custom", {"channel": "Podcast  Ads"}, PLAIN, "podcast_ads"),
    ("explicit-internal-kept", {"channel": "(internal)"}, PLAIN, "(internal)"),
    ("explicit-blank-ignored", {"channel": "   ", "source": "google", "medium": "cpc"}, PLAIN, PAID_SEARCH),
    # 1. tenant rules beat the default grouping
    ("rule-source-beats-utm", {"source": "PartnerCo", "medium": "cpc"}, RULES, "partner_co"),
    ("rule-source-beats-gclid", {"source": "partnerco", "click_ids": {"gclid": "g"}}, RULES, "partner_co"),
    ("rule-all-patterns", {"medium": "audio", "campaign": "spring-POD-1"}, RULES, "podcast"),
    ("rule-pattern-missing", {"medium": "audio", "campaign": "spring"}, RULES, REFERRAL),
    ("rule-referrer-host", {"referrer": "https://www.shows.TVNetwork.com/ep1"}, RULES, "tv"),
    ("rule-click-id", {"click_ids": {"ttclid": "t"}}, RULES, "tiktok_ads"),
    ("rule-click-id-empty", {"click_ids": {"ttclid": ""}}, RULES, DIRECT),
    ("no-rule-match-falls-through", {"source": "google", "medium": "cpc"}, RULES, PAID_SEARCH),
    # 2. click ids
    ("gclid", {"click_ids": {"gclid": "g"}}, PLAIN, PAID_SEARCH),
    ("msclkid", {"click_ids": {"msclkid": "m"}, "source": "bing", "medium": "cpc"}, PLAIN, PAID_SEARCH),
    ("gclid-display", {"click_ids": {"gclid": "g"}, "source": "google", "medium": "display"}, PLAIN, DISPLAY),
    ("gclid-cpm", {"click_ids": {"gclid": "g"}, "medium": "CPM"}, PLAIN, DISPLAY),
    ("gclid-video", {"click_ids": {"gclid": "g"}, "medium": "video"}, PLAIN, VIDEO),
    ("gclid-youtube", {"click_ids": {"gclid": "g"}, "source": "youtube", "medium": "cpc"}, PLAIN, VIDEO),
    ("gclid-beats-email-utm", {"click_ids": {"gclid": "g"}, "medium": "email"}, PLAIN, PAID_SEARCH),
    ("ttclid", {"click_ids": {"ttclid": "t"}}, PLAIN, PAID_SOCIAL),
    ("li_fat_id", {"click_ids": {"li_fat_id": "l"}, "referrer": "https://www.google.com/"}, PLAIN, PAID_SOCIAL),
    ("fbclid-alone", {"click_ids": {"fbclid": "f"}}, PLAIN, ORGANIC_SOCIAL),
    ("fbclid-cpc", {"click_ids": {"fbclid": "f"}, "source": "facebook", "medium": "cpc"}, PLAIN, PAID_SOCIAL),
    ("fbclid-paid-social", {"click_ids": {"fbclid": "f"}, "medium": "paid_social"}, PLAIN, PAID_SOCIAL),
    ("fbclid-social-medium", {"click_ids": {"fbclid": "f"}, "medium": "social"}, PLAIN, ORGANIC_SOCIAL),
    ("empty-click-id-ignored", {"click_ids": {"gclid": ""}}, PLAIN, DIRECT),
    # 3. UTMs
    ("utm-email-medium", {"source": "acme", "medium": "e_mail"}, PLAIN, EMAIL),
    ("utm-email-source", {"source": "Newsletter"}, PLAIN, EMAIL),
    ("utm-affiliate", {"source": "awin", "medium": "Affiliates"}, PLAIN, AFFILIATE),
    ("utm-display", {"source": "criteo", "medium": "banner"}, PLAIN, DISPLAY),
    ("utm-google-cpc", {"source": "google", "medium": "cpc"}, PLAIN, PAID_SEARCH),
    ("utm-bing-ppc", {"source": "Bing", "medium": "PPC"}, PLAIN, PAID_SEARCH),
    ("utm-google-ads-source", {"source": "google_ads", "medium": "paidsearch"}, PLAIN, PAID_SEARCH),
    ("utm-facebook-paid", {"source": "facebook", "medium": "paid"}, PLAIN, PAID_SOCIAL),
    ("utm-tiktok-cpc-is-social", {"source": "tiktok", "medium": "cpc"}, PLAIN, PAID_SOCIAL),
    ("utm-linkedin-host-source", {"source": "linkedin.com", "medium": "cpc"}, PLAIN, PAID_SOCIAL),
    ("utm-youtube-cpv", {"source": "youtube", "medium": "cpv"}, PLAIN, VIDEO),
    ("utm-vimeo-paid", {"source": "vimeo", "medium": "paid_video"}, PLAIN, VIDEO),
    ("utm-unknown-source-cpc", {"source": "someengine", "medium": "cpc"}, PLAIN, PAID_SEARCH),
    ("utm-unknown-source-paid-social", {"source": "someapp", "medium": "paid-social"}, PLAIN, PAID_SOCIAL),
    ("utm-retargeting", {"source": "adroll", "medium": "retargeting"}, PLAIN, DISPLAY),
    ("utm-organic", {"source": "google", "medium": "organic"}, PLAIN, ORGANIC_SEARCH),
    ("utm-organic-unknown-source", {"source": "someengine", "medium": "organic"}, PLAIN, ORGANIC_SEARCH),
    ("utm-social-medium", {"source": "mastodon.example", "medium": "social-network"}, PLAIN, ORGANIC_SOCIAL),
    ("utm-sm", {"medium": "sm"}, PLAIN, ORGANIC_SOCIAL),
    ("utm-video-medium", {"source": "acme", "medium": "video"}, PLAIN, VIDEO),
    ("utm-referral", {"source": "blog", "medium": "referral"}, PLAIN, REFERRAL),
    ("utm-search-source-no-medium", {"source": "duckduckgo"}, PLAIN, ORGANIC_SEARCH),
    ("utm-social-source-no-medium", {"source": "Instagram"}, PLAIN, ORGANIC_SOCIAL),
    ("utm-social-host-source", {"source": "m.facebook.com"}, PLAIN, ORGANIC_SOCIAL),
    ("utm-youtube-no-medium", {"source": "youtube"}, PLAIN, VIDEO),
    (
        "utm-beats-referrer",
        {"source": "facebook", "medium": "cpc", "referrer": "https://www.google.com/"},
        PLAIN,
        PAID_SOCIAL,
    ),
    ("utm-direct-none", {"source": "(direct)", "medium": "(none)"}, PLAIN, DIRECT),
    ("utm-unknown-is-referral", {"source": "partnerco", "medium": "partner"}, PLAIN, REFERRAL),
    (
        "utm-unknown-referrer-decides",
        {"source": "partnerco", "referrer": "https://www.bing.com/"},
        PLAIN,
        ORGANIC_SEARCH,
    ),
    ("utm-campaign-only-is-direct", {"campaign": "spring"}, PLAIN, DIRECT),
    # 4. referrer host
    ("ref-google", {"referrer": "https://www.google.com/"}, PLAIN, ORGANIC_SEARCH),
    ("ref-google-subdomain-cctld", {"referrer": "https://news.google.co.uk/articles/x"}, PLAIN, ORGANIC_SEARCH),
    ("ref-google-port-case", {"referrer": "HTTPS://WWW.GOOGLE.DE:443/search?q=x"}, PLAIN, ORGANIC_SEARCH),
    ("ref-bing", {"referrer": "https://www.bing.com/search?q=x"}, PLAIN, ORGANIC_SEARCH),
    ("ref-duckduckgo", {"referrer": "https://duckduckgo.com/"}, PLAIN, ORGANIC_SEARCH),
    ("ref-yahoo-jp", {"referrer": "https://search.yahoo.co.jp/search"}, PLAIN, ORGANIC_SEARCH),
    ("ref-yandex", {"referrer": "https://yandex.ru/search/?text=x"}, PLAIN, ORGANIC_SEARCH),
    ("ref-ecosia", {"referrer": "https://www.ecosia.org/search?q=x"}, PLAIN, ORGANIC_SEARCH),
    ("ref-lfacebook", {"referrer": "https://l.facebook.com/l.php?u=x"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-mfacebook", {"referrer": "https://m.facebook.com/"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-tco", {"referrer": "https://t.co/AbC123"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-x", {"referrer": "https://x.com/someone/status/1"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-lnkd", {"referrer": "https://lnkd.in/abc"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-pinterest-cctld", {"referrer": "https://www.pinterest.fr/pin/1"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-reddit", {"referrer": "https://old.reddit.com/r/x"}, PLAIN, ORGANIC_SOCIAL),
    ("ref-youtube", {"referrer": "https://www.youtube.com/watch?v=x"}, PLAIN, VIDEO),
    ("ref-gmail", {"referrer": "https://mail.google.com/mail/u/0/"}, PLAIN, EMAIL),
    ("ref-outlook", {"referrer": "https://outlook.live.com/mail/0/inbox"}, PLAIN, EMAIL),
    ("ref-gmail-app", {"referrer": "android-app://com.google.android.gm/"}, PLAIN, EMAIL),
    ("ref-other", {"referrer": "https://blog.example.org/post?id=1"}, PLAIN, REFERRAL),
    ("ref-google-docs-is-referral", {"referrer": "https://docs.google.com/document/d/1"}, PLAIN, REFERRAL),
    ("ref-lookalike-is-referral", {"referrer": "https://google.evil.com/"}, PLAIN, REFERRAL),
    ("ref-own-domain-is-direct", {"referrer": "https://shop.acme.com/cart"}, PLAIN, DIRECT),
    ("ref-own-domain-www", {"referrer": "https://www.acme.com/"}, PLAIN, DIRECT),
    ("ref-not-own-suffix", {"referrer": "https://notacme.com/"}, PLAIN, REFERRAL),
    ("ref-bare-host", {"referrer": "news.example.com/a/b"}, PLAIN, REFERRAL),
    # garbage referrers behave as no referrer
    ("ref-garbage-text", {"referrer": "not a url at all"}, PLAIN, DIRECT),
    ("ref-garbage-control", {"referrer": "https://exa\x00mple.com/\x07"}, PLAIN, DIRECT),
    ("ref-garbage-javascript", {"referrer": "javascript:alert(1)"}, PLAIN, DIRECT),
    ("ref-garbage-huge", {"referrer": "https://" + "a" * 100_000 + ".com/"}, PLAIN, DIRECT),
    ("ref-garbage-bad-port", {"referrer": "https://google.com:abc/"}, PLAIN, DIRECT),
    # 5. nothing at all
    ("nothing-direct", {}, PLAIN, DIRECT),
    ("nothing-direct-page-view", {"event_type": "page_view"}, TenantConfig(), DIRECT),
]


@pytest.mark.parametrize(("fields", "cfg", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_derive_channel(fields: dict[str, Any], cfg: TenantConfig, expected: str) -> None:
    assert derive_channel(make_event(**fields), cfg) == expected


def test_case_ids_unique_and_every_default_channel_covered() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)
    covered = {c[3] for c in CASES}
    assert set(DEFAULT_CHANNELS) <= covered
    assert len(DEFAULT_CHANNELS) == len(set(DEFAULT_CHANNELS)) == 10


@pytest.mark.parametrize(
    ("referrer", "host"),
    [
        ("https://www.Google.co.uk:443/search?q=1", "google.co.uk"),
        ("http://user:pw@Example.COM:8080/x", "example.com"),
        ("//cdn.example.com/x", "cdn.example.com"),
        ("https://example.com.", "example.com"),
        ("https://example.com?x=1", "example.com"),
        ("https://example.com#frag", "example.com"),
        ("http://[2001:DB8::1]:80/", "2001:db8::1"),
        ("android-app://com.google.android.gm", "com.google.android.gm"),
        ("example.com:8080/path", "example.com"),
        ("  https://example.com/  ", "example.com"),
        ("", ""),
        ("localhost:3000", ""),
        ("about:blank", ""),
        ("mailto:someone@example.com", ""),
        ("https://", ""),
        ("https:///path", ""),
        ("http://a..b/", ""),
        ("http://exa mple.com/", ""),
        ("http://[::1/", ""),
        ("https://example.com:99999999/", ""),
        ("\x00\x01\x02", ""),
        ("https://" + "a." * 200 + "com/", ""),
        ("x" * 1_000_000, ""),
    ],
)
def test_referrer_host(referrer: str, host: str) -> None:
    assert referrer_host(referrer) == host


def test_is_internal_referrer() -> None:
    cfg = TenantConfig(own_domains=("acme.com", "WWW.Acme-Shop.DE", ".acme.io", "https://acme.net/"))
    assert is_internal_referrer("https://acme.com/", cfg)
    assert is_internal_referrer("https://www.acme.com/pricing", cfg)
    assert is_internal_referrer("https://checkout.eu.acme.com:8443/", cfg)
    assert is_internal_referrer("https://acme-shop.de/", cfg)
    assert is_internal_referrer("https://app.acme.io/", cfg)
    assert is_internal_referrer("https://acme.net/", cfg)
    assert not is_internal_referrer("https://notacme.com/", cfg)
    assert not is_internal_referrer("https://acme.com.evil.org/", cfg)
    assert not is_internal_referrer("", cfg)
    assert not is_internal_referrer("garbage \x00", cfg)
    assert not is_internal_referrer("https://acme.com/", TenantConfig())


def test_campaign_of() -> None:
    assert campaign_of(make_event(campaign_id="c1", campaign="utm-c")) == "c1"
    assert campaign_of(make_event(campaign="utm-c")) == "utm-c"
    assert campaign_of(make_event()) == ""


def test_normalize_channel_is_idempotent() -> None:
    for raw in ("Paid Search", " paid-search ", "PAID__SEARCH", "a - b", "(internal)"):
        once = normalize_channel(raw)
        assert normalize_channel(once) == once
    assert normalize_channel("Paid - Search") == "paid_search"


def test_compile_rules_validates_and_caches() -> None:
    rules = (ChannelRule("Partner", utm_source="^p$"), ChannelRule("x", click_id=" GCLID "))
    compiled = compile_rules(rules)
    assert compile_rules(tuple(rules)) is compiled  # cached by value
    assert [r.channel for r in compiled] == ["partner", "x"]
    assert compiled[1].click_id == "gclid"
    with pytest.raises(ConfigError, match=r"channel_rules\[1\]\.referrer_host"):
        compile_rules((ChannelRule("ok"), ChannelRule("bad", referrer_host="[unclosed")))
    with pytest.raises(ConfigError, match="empty channel"):
        compile_rules((ChannelRule("  "),))


def test_rules_in_order_and_unconditional_rule() -> None:
    cfg = TenantConfig(channel_rules=(ChannelRule("first", utm_medium="cpc"), ChannelRule("second", utm_medium="c")))
    assert derive_channel(make_event(medium="CPC"), cfg) == "first"
    assert derive_channel(make_event(medium="c"), cfg) == "second"
    catch_all = TenantConfig(channel_rules=(ChannelRule("everything"),))
    assert derive_channel(make_event(), catch_all) == "everything"


def test_derived_channel_is_stable_when_stored() -> None:
    """decode stores the derived channel on the event; deriving again must give the same."""
    ev = make_event(source="google", medium="cpc", click_ids={"gclid": "g"})
    channel = derive_channel(ev, RULES)
    again = make_event(channel=channel, source="partnerco")
    assert derive_channel(again, RULES) == channel


text = st.text(max_size=300)
click_id_keys = st.one_of(st.sampled_from(CLICK_ID_NAMES), st.text(max_size=20))
referrers = st.one_of(
    text,
    st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["http://", "https://", "//", "x-y:"]), text),
)


@settings(max_examples=400, deadline=None)
@given(
    channel=st.one_of(st.just(""), text),
    source=text,
    medium=text,
    campaign=text,
    referrer=referrers,
    click_ids=st.dictionaries(click_id_keys, text, max_size=4),
    use_rules=st.booleans(),
)
def test_derive_channel_never_raises(
    channel: str,
    source: str,
    medium: str,
    campaign: str,
    referrer: str,
    click_ids: dict[str, str],
    use_rules: bool,
) -> None:
    ev = make_event(
        channel=channel, source=source, medium=medium, campaign=campaign, referrer=referrer, click_ids=click_ids
    )
    result = derive_channel(ev, RULES if use_rules else PLAIN)
    assert isinstance(result, str) and result
    if not channel.strip() and not use_rules:
        assert result in DEFAULT_CHANNELS
    host = referrer_host(referrer)
    assert isinstance(host, str) and host == host.strip().lower()
    assert isinstance(is_internal_referrer(referrer, PLAIN), bool)


@settings(max_examples=500, deadline=None)
@given(
    referrer=st.one_of(
        referrers,
        st.builds(
            lambda scheme, host, port, tail: scheme + host + port + tail,
            st.sampled_from(["https://", "//", "android-app://", " http://", "a" * 40 + "://"]),
            st.from_regex(r"[\w.\-]{0,20}", fullmatch=True),
            st.sampled_from(["", ":", ":443", ":99999999", ":\u0663", "@x.com"]),
            st.sampled_from(["", "/", "/p?q#f", " ", "\n", "\x00", "?x", "\\y"]),
        ),
    )
)
def test_referrer_host_fast_path_agrees_with_general_parser(referrer: str) -> None:
    assert referrer_host(referrer) == referrer_host_slow(referrer)
