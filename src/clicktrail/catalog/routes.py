"""The catalog as the hot paths read it: an immutable snapshot in memory, swapped on change."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from ipaddress import IPv4Network, IPv6Network, ip_network
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, Row

from clicktrail.catalog.caps import CapBook
from clicktrail.catalog.rules import CompiledPath, RoutingInput, RoutingPlan, Visit, WeightedChoice
from clicktrail.storage import catalog_store as store
from clicktrail.storage.schema import sources
from clicktrail.types import CampaignId, LanderId, OfferId, SourceId

_UTC = ZoneInfo("UTC")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OfferTerms:
    id: OfferId
    url: str
    revenue: Decimal
    payout: Decimal
    currency: str
    attribution_window_days: int
    postback_token: str | None
    postback_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    """Empty: any address may post back."""
    postback_secret: str | None = None
    daily_cap: int | None = None
    cap_zone: ZoneInfo = _UTC
    fallback_offer_id: OfferId | None = None


@dataclass(frozen=True, slots=True)
class LanderTerms:
    id: LanderId
    url: str


_NO_OFFERS: Mapping[OfferId, OfferTerms] = MappingProxyType({})
_NO_LANDERS: Mapping[LanderId, LanderTerms] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    """Where a tracking link sends its visitors: `offer` (after `lander` when it has one), or the
    offer and lander its routing plan chooses, moved down the fallback chain when capped."""

    campaign_id: CampaignId
    source_id: SourceId
    offer: OfferTerms
    cost_model: str = "none"
    cost_value: Decimal = Decimal(0)
    plan: RoutingPlan[OfferTerms] | None = None
    lander: LanderTerms | None = None
    offers: Mapping[OfferId, OfferTerms] = field(default_factory=lambda: _NO_OFFERS)
    """Every offer of the catalog, for fallbacks."""
    landers: Mapping[LanderId, LanderTerms] = field(default_factory=lambda: _NO_LANDERS)
    dynamic: bool = field(init=False)
    """Whether each visit needs a choice (rules, or a cap that may send it elsewhere): computed once,
    so a campaign with neither pays one attribute read for routing on the click path."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dynamic", self.plan is not None or self.offer.daily_cap is not None)

    def path_for(self, visit: Visit) -> CompiledPath[OfferTerms]:
        """The path this visit takes (the campaign's own offer and lander when it has no rules)."""
        if self.plan is None:
            return CompiledPath(WeightedChoice.of([(self.offer, 1)]), self.lander.id if self.lander else None)
        return self.plan.path_for(visit)

    def for_visit(self, visit: Visit, visitor_id: str, caps: CapBook, now: datetime) -> "Route":
        """This route with the offer (and lander) chosen for this visitor, its cap respected."""
        offer, lander = self.offer, self.lander
        if self.plan is not None:
            path = self.plan.path_for(visit)
            offer = path.choice.pick(f"{self.campaign_id}:{visitor_id}")
            lander = self.landers.get(LanderId(path.lander_id)) if path.lander_id else None
        if offer.daily_cap is not None:
            offer = caps.settle(offer, self.offers, now)
        if offer is self.offer and lander is self.lander:
            return self
        return replace(self, offer=offer, lander=lander)


@dataclass(frozen=True, slots=True)
class PostbackRule:
    """Where a source's outbound postbacks go and which conversions it is sent."""

    url: str
    events: frozenset[str]
    """Empty: every event."""
    statuses: frozenset[str]

    def wants(self, event: str, status: str) -> bool:
        return (not self.events or event in self.events) and status in self.statuses


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    version: str | None = None
    routes: MappingProxyType[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    offers: MappingProxyType[OfferId, OfferTerms] = field(default_factory=lambda: MappingProxyType({}))
    postback_rules: MappingProxyType[SourceId, PostbackRule] = field(
        default_factory=lambda: MappingProxyType({})
    )
    """Only the sources that have a postback URL."""
    cpa_costs: MappingProxyType[CampaignId, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    """What an approved conversion costs, for campaigns on a CPA cost model."""
    names: MappingProxyType[str, dict[int, str]] = field(default_factory=lambda: MappingProxyType({}))
    """Display names by kind ("campaign", "offer", "source", "lander") and ID, for reports."""
    by_campaign: MappingProxyType[CampaignId, Route] = field(default_factory=lambda: MappingProxyType({}))
    """The same routes by campaign ID, for `/lp/click` (which knows the click, not the key)."""

    def capped_offers(self) -> list[OfferTerms]:
        return [offer for offer in self.offers.values() if offer.daily_cap is not None]


def postback_rule(source_row: Row[Any]) -> PostbackRule | None:
    if not source_row.postback_url:
        return None
    return PostbackRule(
        source_row.postback_url,
        frozenset(source_row.postback_events),
        frozenset(source_row.postback_statuses),
    )


def fresh_postback_rule(connection: Connection, source_id: SourceId) -> PostbackRule | None:
    """The source's rule as stored now, for when the snapshot may not know it yet."""
    return postback_rule(row) if (row := store.get_row(connection, sources, source_id)) else None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return _UTC  # validated on save; a zone the system lost since counts in UTC


def load_snapshot(connection: Connection) -> CatalogSnapshot:
    version = store.catalog_version(connection)
    offer_rows, source_rows, campaign_rows = store.all_rows(connection)
    lander_rows = store.all_landers(connection)
    offers = MappingProxyType(
        {
            OfferId(row.id): OfferTerms(
                id=OfferId(row.id),
                url=row.url,
                revenue=row.revenue,
                payout=row.payout,
                currency=row.currency,
                attribution_window_days=row.attribution_window_days,
                postback_token=row.postback_token,
                postback_networks=tuple(ip_network(text, strict=False) for text in row.postback_ips),
                postback_secret=row.postback_secret,
                daily_cap=row.daily_cap,
                cap_zone=_zone(row.cap_timezone),
                fallback_offer_id=OfferId(row.fallback_offer_id) if row.fallback_offer_id else None,
            )
            for row in offer_rows
        }
    )
    landers = MappingProxyType(
        {LanderId(row.id): LanderTerms(LanderId(row.id), row.url) for row in lander_rows}
    )
    routes = {}
    for row in campaign_rows:
        offer = offers[OfferId(row.offer_id)]
        lander = landers.get(LanderId(row.lander_id)) if row.lander_id else None
        plan = None
        if row.routing:
            try:
                routing = RoutingInput.model_validate_json(row.routing)
                plan = RoutingPlan.compile(routing, offers, offer, lander.id if lander else None)
            except (ValueError, KeyError):
                log.exception("campaign %s: unreadable routing, sending everyone to its offer", row.id)
        routes[row.key] = Route(
            CampaignId(row.id),
            SourceId(row.source_id),
            offer,
            row.cost_model,
            row.cost_value,
            plan,
            lander,
            offers,
            landers,
        )
    postback_rules = {SourceId(row.id): rule for row in source_rows if (rule := postback_rule(row))}
    return CatalogSnapshot(
        version=version,
        routes=MappingProxyType(routes),
        by_campaign=MappingProxyType({route.campaign_id: route for route in routes.values()}),
        offers=offers,
        cpa_costs=MappingProxyType(
            {CampaignId(row.id): row.cost_value for row in campaign_rows if row.cost_model == "cpa"}
        ),
        names=MappingProxyType(
            {
                "campaign": {row.id: row.name for row in campaign_rows},
                "offer": {row.id: row.name for row in offer_rows},
                "source": {row.id: row.name for row in source_rows},
                "lander": {row.id: row.name for row in lander_rows},
            }
        ),
        postback_rules=MappingProxyType(postback_rules),
    )
