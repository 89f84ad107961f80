"""Rows put straight into the database for tests that start at a later step (a postback, a delivery)."""

from typing import Any

from clicktrail.catalog.models import Campaign
from clicktrail.storage import inserts
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime


def stored_clicks(runtime: Runtime, campaign: Campaign, count: int = 1) -> list[str]:
    """`count` clicks on `campaign`, made now, with IDs the server's codec accepts."""
    now = utc_now()
    rows: list[dict[str, Any]] = [
        {
            "click_id": runtime.codec.mint(now),
            "created_at": now,
            "campaign_id": campaign.id,
            "offer_id": campaign.offer_id,
            "source_id": campaign.source_id,
            "is_bot": False,
            "is_unique": True,
        }
        for _ in range(count)
    ]
    with runtime.database.begin() as connection:
        inserts.insert_clicks(connection, rows)
    return [row["click_id"] for row in rows]
