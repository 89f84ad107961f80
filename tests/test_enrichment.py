"""Enrichment, piece by piece: the user-agent cache, uniqueness, the bot rules, geolocation."""

from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest
from pydantic import ValidationError

from clicktrail.clicks.enrichment import Enricher
from clicktrail.clicks.enrichment.agents import AgentParser, DeviceType
from clicktrail.clicks.enrichment.bots import BotReason, BotRules
from clicktrail.clicks.enrichment.geo import GeoLocator, bundled_database
from clicktrail.clicks.enrichment.uniqueness import UniqueVisitors, visitor_id
from clicktrail.clicks.request import visitor_cookie
from clicktrail.config import Settings
from tests import corpora

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def _real(kind: str) -> str:
    """The most common real-world browser user agent of a device type (fake-useragent's sample)."""
    return next(ua for ua, found in corpora.real_browsers() if found == kind)


# The user-agent cache


def test_each_distinct_user_agent_is_parsed_once_while_cached() -> None:
    parser = AgentParser(cache_size=10)
    first = parser.parse(_real("mobile"))
    again = parser.parse(_real("mobile"))
    assert again is first
    info = parser.cache_info()
    assert (info.hits, info.misses) == (1, 1)


def test_the_user_agent_cache_is_bounded() -> None:
    parser = AgentParser(cache_size=2)
    for ua, _ in corpora.real_browsers()[:50]:
        parser.parse(ua)
    assert parser.cache_info().currsize == 2


def test_a_phone_a_tablet_and_a_desktop_are_told_apart_with_os_and_browser() -> None:
    parser = AgentParser(cache_size=10)
    phone, tablet, desktop = (parser.parse(_real(kind)) for kind in ("mobile", "tablet", "desktop"))
    assert (phone.device_type, tablet.device_type, desktop.device_type) == (
        DeviceType.MOBILE,
        DeviceType.TABLET,
        DeviceType.DESKTOP,
    )
    assert phone.os == "iOS"
    assert phone.os_version is not None
    assert phone.os_version.startswith("18.")
    assert phone.browser == "Mobile Safari"
    assert phone.browser_version is not None


# Uniqueness


def test_the_first_click_of_a_visitor_on_a_campaign_is_unique_and_repeats_within_the_window_are_not() -> None:
    uniques = UniqueVisitors(DAY, capacity=100)
    assert uniques.is_unique(1, "visitor-a", T0)
    assert not uniques.is_unique(1, "visitor-a", T0 + timedelta(minutes=5))
    assert not uniques.is_unique(1, "visitor-a", T0 + DAY - timedelta(seconds=1))


def test_a_new_window_starts_with_the_first_click_after_the_last_one_ends() -> None:
    uniques = UniqueVisitors(DAY, capacity=100)
    assert uniques.is_unique(1, "visitor-a", T0)
    assert uniques.is_unique(1, "visitor-a", T0 + DAY)
    assert not uniques.is_unique(1, "visitor-a", T0 + DAY + timedelta(hours=23))
    assert uniques.is_unique(1, "visitor-a", T0 + 2 * DAY)


def test_uniqueness_is_per_campaign_and_per_visitor() -> None:
    uniques = UniqueVisitors(DAY, capacity=100)
    assert uniques.is_unique(1, "visitor-a", T0)
    assert uniques.is_unique(2, "visitor-a", T0)
    assert uniques.is_unique(1, "visitor-b", T0)
    assert not uniques.is_unique(2, "visitor-a", T0)


def test_the_memory_is_bounded_and_forgets_the_least_recently_seen_visitor_first() -> None:
    uniques = UniqueVisitors(DAY, capacity=2)
    uniques.is_unique(1, "a", T0)
    uniques.is_unique(1, "b", T0)
    uniques.is_unique(1, "a", T0 + timedelta(minutes=1))  # a seen again: b is now the oldest
    uniques.is_unique(1, "c", T0 + timedelta(minutes=2))  # evicts b
    assert len(uniques) == 2
    assert not uniques.is_unique(1, "a", T0 + timedelta(minutes=3))
    assert uniques.is_unique(1, "b", T0 + timedelta(minutes=3))  # forgotten, so counted again


def test_a_visitor_is_its_ip_and_user_agent() -> None:
    ua = _real("desktop")
    assert visitor_id("203.0.113.7", ua) == visitor_id("203.0.113.7", ua)
    assert visitor_id("203.0.113.7", ua) != visitor_id("203.0.113.8", ua)
    assert visitor_id("203.0.113.7", ua) != visitor_id("203.0.113.7", _real("mobile"))
    assert len(visitor_id(None, None)) == 16


# Bots


def test_an_empty_user_agent_is_a_bot() -> None:
    assert BotRules().judge_agent("", None) is BotReason.EMPTY_AGENT
    assert BotRules().judge_agent(None, None) is BotReason.EMPTY_AGENT


def test_listed_crawlers_and_http_tools_are_bots() -> None:
    parser, rules = AgentParser(10), BotRules()
    crawler = corpora.crawler_list()[0]
    assert rules.judge_agent(crawler, parser.parse(crawler)) is BotReason.KNOWN_CRAWLER


def test_a_browser_shaped_agent_carrying_a_crawlers_marks_is_a_bot_though_no_list_names_it() -> None:
    parser, rules = AgentParser(10), BotRules()
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0 Safari/537.36"
    )
    marked = (
        f"{chrome} ShopWatcher/2.1 (+https://shopwatcher.example/about)",
        chrome.replace("like Gecko)", "like Gecko; Acme-Preview)"),
        f"{chrome} uptime-checker",
    )
    assert rules.judge_agent(chrome, parser.parse(chrome)) is None
    for ua in marked:
        assert rules.judge_agent(ua, parser.parse(ua)) is BotReason.CRAWLER_MARKS, ua


def test_user_configured_agent_patterns_and_networks_mark_bots() -> None:
    parser = AgentParser(10)
    rules = BotRules([ip_network("198.51.100.0/24")], ["headlesschrome", r"my-monitor/\d"])
    browser = _real("desktop")
    assert rules.judge_agent(browser, parser.parse(browser)) is None
    monitored = f"{browser} My-Monitor/2"
    assert rules.judge_agent(monitored, parser.parse(monitored)) is BotReason.CONFIGURED_AGENT
    assert rules.judge_ip("198.51.100.23") is BotReason.CONFIGURED_NETWORK
    assert rules.judge_ip("203.0.113.1") is None
    assert rules.judge_ip("not an address") is None


def test_a_bot_pattern_that_is_not_a_regular_expression_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(bot_user_agents=("unclosed(",))


# Geolocation


def test_the_bundled_database_locates_a_public_address() -> None:
    assert bundled_database() is not None
    geo = GeoLocator.from_setting(None)
    location = geo.locate("8.8.8.8")
    geo.close()
    assert location.country == "US"


def test_private_loopback_and_malformed_addresses_have_no_location() -> None:
    geo = GeoLocator.from_setting(None)
    found = [geo.locate(ip).country for ip in ("10.1.2.3", "127.0.0.1", "::1", "bogus", None)]
    geo.close()
    assert found == [None] * 5


def test_geolocation_can_be_turned_off() -> None:
    geo = GeoLocator.from_setting("off")
    assert geo.locate("8.8.8.8").country is None


# All together


def test_the_enricher_fills_every_dimension_of_a_visit() -> None:
    settings = Settings(bot_networks="198.51.100.0/24", unique_window_hours=1)
    enricher = Enricher.from_settings(settings)
    phone = _real("mobile")
    first = enricher.enrich(7, "8.8.8.8", phone, T0)
    repeat = enricher.enrich(7, "8.8.8.8", phone, T0 + timedelta(minutes=30))
    later = enricher.enrich(7, "8.8.8.8", phone, T0 + timedelta(hours=1))
    from_bot_range = enricher.enrich(7, "198.51.100.9", phone, T0)
    enricher.geo.close()
    assert (first.country, first.device_type, first.os, first.browser) == (
        "US",
        "mobile",
        "iOS",
        "Mobile Safari",
    )
    assert (first.is_unique, repeat.is_unique, later.is_unique) == (True, False, True)
    assert not first.is_bot
    assert from_bot_range.bot_reason is BotReason.CONFIGURED_NETWORK
    assert first.columns()["visitor_id"] == visitor_id("8.8.8.8", phone)


def test_our_visitor_cookie_is_read_only_when_well_formed() -> None:
    assert visitor_cookie("theme=dark; ct_vid=0123456789abcdef; x=1") == "0123456789abcdef"
    assert visitor_cookie("ct_vid=0123456789ABCDEF") is None
    assert visitor_cookie("ct_vid=<script>") is None
    assert visitor_cookie("other=0123456789abcdef") is None
    assert visitor_cookie(None) is None


def test_a_known_visitor_keeps_its_id_and_uniqueness_across_addresses() -> None:
    enricher = Enricher.from_settings(Settings(geoip_db="off"))
    phone = _real("mobile")
    first = enricher.enrich(3, "203.0.113.1", phone, T0, known_visitor="0123456789abcdef")
    moved = enricher.enrich(3, "198.51.100.1", phone, T0, known_visitor="0123456789abcdef")
    assert (first.visitor_id, moved.visitor_id) == ("0123456789abcdef", "0123456789abcdef")
    assert (first.is_unique, moved.is_unique) == (True, False)
