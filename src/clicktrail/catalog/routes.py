"""The catalog as the hot paths read it: an immutable snapshot in memory, swapped on change."""

from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from sqlalchemy import Connection

from clicktrail.storage import catalog_store as store
from clicktrail.types import CampaignId, OfferId, SourceId


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
    """Where a tracking link sends its visitors."""

    campaign_id: CampaignId
    source_id: SourceId
    offer: OfferTerms
    cost_model: str = "none"
    cost_value: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    version: str | None = None
    routes: MappingProxyType[str, Route] = field(default_factory=lambda: MappingProxyType({}))
    offers: MappingProxyType[OfferId, OfferTerms] = field(default_factory=lambda: MappingProxyType({}))
    postback_urls: MappingProxyType[SourceId, str | None] = field(
        default_factory=lambda: MappingProxyType({})
    )
    cpa_costs: MappingProxyType[CampaignId, Decimal] = field(default_factory=lambda: MappingProxyType({}))
    """What an approved conversion costs, for campaigns on a CPA cost model."""
    names: MappingProxyType[str, dict[int, str]] = field(default_factory=lambda: MappingProxyType({}))
    """Display names by kind ("campaign", "offer", "source") and ID, for reports."""


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
    routes = {
        row.key: Route(
            CampaignId(row.id),
            SourceId(row.source_id),
            offers[OfferId(row.offer_id)],
            row.cost_model,
            row.cost_value,
        )
        for row in campaign_rows
    }
    postback_urls = {SourceId(row.id): row.postback_url for row in source_rows}
    return CatalogSnapshot(
        version=version,
        routes=MappingProxyType(routes),
        offers=MappingProxyType(offers),
        postback_urls=MappingProxyType(postback_urls),
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
    )
