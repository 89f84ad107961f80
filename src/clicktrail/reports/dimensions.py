"""The dimensions and metrics a report may name: a whitelist, so no user text ever becomes SQL."""

from dataclasses import dataclass
from enum import StrEnum

SUB_IDS = tuple(f"sub{n}" for n in range(1, 11))


@dataclass(frozen=True, slots=True)
class Dimension:
    name: str
    column: str
    """The column in both the click and the conversion segments (conversions carry click dimensions)."""
    time_part: str | None = None
    """For day/hour: the part of the local time the value is."""
    filter_param: str | None = None
    """The query parameter that filters on it (campaign_id=…); None when not filterable."""
    numeric: bool = False


DIMENSIONS: dict[str, Dimension] = {
    dim.name: dim
    for dim in (
        Dimension("campaign", "campaign_id", filter_param="campaign_id", numeric=True),
        Dimension("offer", "offer_id", filter_param="offer_id", numeric=True),
        Dimension("source", "source_id", filter_param="source_id", numeric=True),
        *(Dimension(sub, sub, filter_param=sub) for sub in SUB_IDS),
        Dimension("external_id", "external_id", filter_param="external_id"),
        Dimension("lander", "lander_id", filter_param="lander_id", numeric=True),
        Dimension("country", "country", filter_param="country"),
        Dimension("region", "region", filter_param="region"),
        Dimension("city", "city", filter_param="city"),
        Dimension("device_type", "device_type", filter_param="device_type"),
        Dimension("os", "os", filter_param="os"),
        Dimension("os_version", "os_version", filter_param="os_version"),
        Dimension("browser", "browser", filter_param="browser"),
        Dimension("browser_version", "browser_version", filter_param="browser_version"),
        Dimension("day", "day", time_part="day"),
        Dimension("hour", "hour", time_part="hour"),
        Dimension("event", "event"),
    )
}
MAX_GROUP_BY = 4


class Metric(StrEnum):
    CLICKS = "clicks"
    UNIQUE_CLICKS = "unique_clicks"
    BOT_CLICKS = "bot_clicks"
    CONVERSIONS = "conversions"
    PENDING = "pending"
    REJECTED = "rejected"
    REVENUE = "revenue"
    PAYOUT = "payout"
    COST = "cost"
    PROFIT = "profit"
    CR = "cr"
    EPC = "epc"
    CPC = "cpc"
    ROI = "roi"
    LANDER_VIEWS = "lander_views"
    LANDER_CLICKS = "lander_clicks"
    LANDER_CTR = "lander_ctr"


MONEY_METRICS = frozenset({Metric.REVENUE, Metric.PAYOUT, Metric.COST, Metric.PROFIT, Metric.EPC, Metric.CPC})
