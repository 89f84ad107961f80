"""Is this click a bot? Known crawlers and tools, empty or scripted user agents, and what the user
configured (IP ranges, user-agent patterns). Bots are recorded and counted, never dropped."""

import ipaddress
import re
from collections.abc import Iterable
from enum import StrEnum

from clicktrail.clicks.enrichment.agents import Agent
from clicktrail.config import Network

# In an otherwise unrecognised user agent, these mark a crawler: a contact address, or the
# "(compatible; Name/1.0)" convention (real browsers that use it, old MSIE, are recognised).
_CRAWLER_MARKS = ("http:", "https:", "www.", "@", ".com", ".html", "compatible")


class BotReason(StrEnum):
    EMPTY_AGENT = "empty_agent"
    KNOWN_CRAWLER = "known_crawler"
    CRAWLER_MARKS = "crawler_marks"
    SCRIPTED_AGENT = "scripted_agent"
    CONFIGURED_AGENT = "configured_agent"
    CONFIGURED_NETWORK = "configured_network"


class BotRules:
    def __init__(self, networks: Iterable[Network] = (), agent_patterns: Iterable[str] = ()) -> None:
        self._networks = tuple(networks)
        patterns = tuple(agent_patterns)
        self._configured = re.compile("|".join(f"(?:{p})" for p in patterns), re.I) if patterns else None

    def judge_agent(self, ua: str | None, agent: Agent | None) -> BotReason | None:
        """The verdict on a user agent alone; the costly part (the crawler list) is cached with the agent."""
        if not ua or agent is None:
            return BotReason.EMPTY_AGENT
        if self._configured is not None and self._configured.search(ua):
            return BotReason.CONFIGURED_AGENT
        if agent.known_crawler:
            return BotReason.KNOWN_CRAWLER
        if agent.crawler_marks:
            return BotReason.CRAWLER_MARKS
        if agent.unidentified and ("(" not in ua or any(mark in ua for mark in _CRAWLER_MARKS)):
            # Nothing recognised, and no platform comment ("curl/8.4", "okhttp/4.12") or a crawler's
            # marks in it ("FeedFetcher/1.0 (+http://example.com/bot)", "Mozilla/5.0 (compatible; X/1.0)").
            return BotReason.SCRIPTED_AGENT
        return None

    def judge_ip(self, ip: str | None) -> BotReason | None:
        if not self._networks or not ip:
            return None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if any(address in network for network in self._networks):
            return BotReason.CONFIGURED_NETWORK
        return None
