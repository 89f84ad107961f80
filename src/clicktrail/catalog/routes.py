"""The catalog as the hot paths read it: an immutable snapshot in memory, swapped on change."""

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import Connection

from clicktrail.catalog.rules import RoutingInput, RoutingPlan, Visit
from clicktrail.storage import catalog_store as store
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


@dataclass(frozen=True, slots=True)
class Route:
    """Where a tracking link sends its visitors: `offer`, or the offer its routing plan chooses."""

    campaign_id: CampaignId
    source_id: SourceId
    offer: OfferTerms
    plan: RoutingPlan[OfferTerms] | None = None

    def for_visit(self, visit: Visit, visitor_id: str) -> "Route":
        """This route with the offer chosen for this visitor (itself when the campaign has no rules)."""
        if self.plan is None:
            return self
        chosen = self.plan.choose(visit, f"{self.campaign_id}:{visitor_id}")
        return self if chosen is self.offer else replace(self, offer=chosen)


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    version: str | None = None
    routes: MappingProxyType[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    offers: MappingProxyType[OfferId, OfferTerms] = field(default_factory=lambda: MappingProxyType({}))
    postback_urls: MappingProxyType[SourceId, str | None] = field(
        default_factory=lambda: MappingProxyType({})
    )


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
        routes[row.key] = Route(CampaignId(row.id), SourceId(row.source_id), offer, plan)
    postback_urls = {SourceId(row.id): row.postback_url for row in source_rows}
    return CatalogSnapshot(
        version=version,
        routes=MappingProxyType(routes),
        offers=MappingProxyType(offers),
        postback_urls=MappingProxyType(postback_urls),
    )
