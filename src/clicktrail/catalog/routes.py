"""The catalog as the hot paths read it: an immutable snapshot in memory, swapped on change."""

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal
from ipaddress import IPv4Network, IPv6Network, ip_network
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, Row

from clicktrail.catalog.rules import RoutingInput, RoutingPlan, Visit
from clicktrail.storage import catalog_store as store
from clicktrail.storage.schema import sources
from clicktrail.types import CampaignId, OfferId, SourceId

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


@dataclass(frozen=True, slots=True)
class Route:
    """Where a tracking link sends its visitors: `offer`, or the offer its routing plan chooses."""

    campaign_id: CampaignId
    source_id: SourceId
    offer: OfferTerms
    cost_model: str = "none"
    cost_value: Decimal = Decimal(0)
    plan: RoutingPlan[OfferTerms] | None = None

    def for_visit(self, visit: Visit, visitor_id: str) -> "Route":
        """This route with the offer chosen for this visitor (itself when the campaign has no rules)."""
        if self.plan is None:
            return self
        chosen = self.plan.choose(visit, f"{self.campaign_id}:{visitor_id}")
        return self if chosen is self.offer else replace(self, offer=chosen)


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
    """Display names by kind ("campaign", "offer", "source") and ID, for reports."""


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


def load_snapshot(connection: Connection) -> CatalogSnapshot:
    version = store.catalog_version(connection)
    offer_rows, source_rows, campaign_rows = store.all_rows(connection)
    offers = {
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
        )
        for row in offer_rows
    }
    routes = {}
    for row in campaign_rows:
        offer = offers[OfferId(row.offer_id)]
        plan = None
        if row.routing:
            try:
                plan = RoutingPlan.compile(RoutingInput.model_validate_json(row.routing), offers, offer)
            except (ValueError, KeyError):
                log.exception("campaign %s: unreadable routing, sending everyone to its offer", row.id)
        routes[row.key] = Route(
            CampaignId(row.id), SourceId(row.source_id), offer, row.cost_model, row.cost_value, plan
        )
    postback_rules = {SourceId(row.id): rule for row in source_rows if (rule := postback_rule(row))}
    return CatalogSnapshot(
        version=version,
        routes=MappingProxyType(routes),
        offers=MappingProxyType(offers),
        cpa_costs=MappingProxyType(
            {CampaignId(row.id): row.cost_value for row in campaign_rows if row.cost_model == "cpa"}
        ),
        names=MappingProxyType(
            {
                "campaign": {row.id: row.name for row in campaign_rows},
                "offer": {row.id: row.name for row in offer_rows},
                "source": {row.id: row.name for row in source_rows},
            }
        ),
        postback_rules=MappingProxyType(postback_rules),
    )
