"""All of a click's visitor dimensions in one call, from in-process data only."""

from datetime import datetime, timedelta

from clicktrail.clicks.enrichment.agents import AgentParser
from clicktrail.clicks.enrichment.bots import BotReason, BotRules
from clicktrail.clicks.enrichment.geo import GeoLocator
from clicktrail.clicks.enrichment.uniqueness import UniqueVisitors, visitor_id
from clicktrail.config import Settings


class Visitor:
    """A plain class rather than a dataclass, as ClickRequest is (clicks/request.py says why)."""

    def __init__(
        self,
        visitor_id: str,
        country: str | None,
        region: str | None,
        city: str | None,
        device_type: str | None,
        os: str | None,
        os_version: str | None,
        browser: str | None,
        browser_version: str | None,
        bot_reason: BotReason | None,
        is_unique: bool,
    ) -> None:
        self.visitor_id = visitor_id
        self.country = country
        self.region = region
        self.city = city
        self.device_type = device_type
        self.os = os
        self.os_version = os_version
        self.browser = browser
        self.browser_version = browser_version
        self.bot_reason = bot_reason
        self.is_unique = is_unique

    @property
    def is_bot(self) -> bool:
        return self.bot_reason is not None

    def columns(self) -> dict[str, object]:
        """The click row's columns for these dimensions."""
        return {
            "visitor_id": self.visitor_id,
            "country": self.country,
            "region": self.region,
            "city": self.city,
            "device_type": self.device_type,
            "os": self.os,
            "os_version": self.os_version,
            "browser": self.browser,
            "browser_version": self.browser_version,
            "is_bot": self.is_bot,
            "is_unique": self.is_unique,
        }


class Enricher:
    def __init__(self, agents: AgentParser, geo: GeoLocator, bots: BotRules, uniques: UniqueVisitors) -> None:
        self.agents = agents
        self.geo = geo
        self.bots = bots
        self.uniques = uniques

    @classmethod
    def from_settings(cls, settings: Settings) -> "Enricher":
        return cls(
            AgentParser(settings.user_agent_cache_size),
            GeoLocator.from_setting(settings.geoip_db),
            BotRules(settings.bot_network_list, settings.bot_user_agents),
            UniqueVisitors(
                timedelta(hours=settings.unique_window_hours),
                settings.unique_cache_size,
                settings.shared_memory_dir,
            ),
        )

    def enrich(
        self,
        campaign_id: int,
        ip: str | None,
        user_agent: str | None,
        now: datetime,
        known_visitor: str | None = None,
    ) -> Visitor:
        """`known_visitor`: the visitor ID from our cookie, when the browser kept it; it outlives a
        change of IP (mobile networks), so it names the visitor better than IP + user agent."""
        agent = self.agents.parse(user_agent) if user_agent else None
        location = self.geo.locate(ip)
        bot = self.bots.judge_ip(ip) or self.bots.judge_agent(user_agent, agent)
        visitor = known_visitor or visitor_id(ip, user_agent)
        return Visitor(
            visitor_id=visitor,
            country=location.country,
            region=location.region,
            city=location.city,
            device_type=agent.device_type.value if agent else None,
            os=agent.os if agent else None,
            os_version=agent.os_version if agent else None,
            browser=agent.browser if agent else None,
            browser_version=agent.browser_version if agent else None,
            bot_reason=bot,
            is_unique=self.uniques.is_unique(campaign_id, visitor, now),
        )
