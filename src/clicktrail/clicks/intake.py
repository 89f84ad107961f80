"""Turning a parsed visit and its route into a click row and the redirect the visitor follows."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from clicktrail.catalog.routes import Route
from clicktrail.catalog.rules import Visit
from clicktrail.clicks.enrichment import Visitor
from clicktrail.clicks.request import ClickRequest
from clicktrail.macros import SUB_IDS, fill
from clicktrail.types import ClickId

_THOUSAND = Decimal(1000)


def click_cost(request: ClickRequest, route: Route) -> Decimal | None:
    """The source's own `cost=` wins; otherwise the campaign's CPC or CPM model (CPA costs land on
    conversions)."""
    if request.cost is not None:
        return request.cost
    if route.cost_model == "cpc":
        return route.cost_value
    if route.cost_model == "cpm":
        return route.cost_value / _THOUSAND  # exact: CPM values have at most 3 decimal places
    return None


def click_row(
    request: ClickRequest, route: Route, click_id: ClickId, now: datetime, visitor: Visitor
) -> dict[str, Any]:
    # Filled in place, in the columns' order, rather than merged from `**dict(zip(...))`: the sub IDs'
    # intermediate dictionary was half a microsecond of each click.
    row: dict[str, Any] = {
        "click_id": click_id,
        "created_at": now,
        "campaign_id": route.campaign_id,
        "offer_id": route.offer.id,
        "source_id": route.source_id,
    }
    row.update(zip(SUB_IDS, request.subs, strict=True))
    row["external_id"] = request.external_id
    row["cost"] = click_cost(request, route)
    row["ip"] = request.ip
    row["user_agent"] = request.user_agent
    row["referrer"] = request.referrer
    row["lander_id"] = route.lander.id if route.lander is not None else None
    row.update(visitor.columns())
    return row


def visit_of(request: ClickRequest, visitor: Visitor, now: datetime) -> Visit:
    """What the campaign's routing rules look at."""
    return Visit(
        country=visitor.country,
        device_type=visitor.device_type,
        os=visitor.os,
        browser=visitor.browser,
        is_bot=visitor.is_bot,
        subs=dict(zip(SUB_IDS, request.subs, strict=True)),
        hour=now.hour,
    )


def redirect_url(request: ClickRequest, route: Route, click_id: ClickId) -> str:
    """The lander's URL when the route shows one, else the offer's, with the macros filled; visitor
    values are percent-encoded by `fill`."""
    values: dict[str, str | None] = {
        "click_id": click_id,
        "campaign_id": str(route.campaign_id),
        "offer_id": str(route.offer.id),
        "source_id": str(route.source_id),
        "external_id": request.external_id,
    }
    values.update(zip(SUB_IDS, request.subs, strict=True))  # as in click_row
    return fill(route.offer.url if route.lander is None else route.lander.url, values)
