"""The outbox tests' jobs, queued for conversions, and their claims."""

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput
from clicktrail.storage import delivery_store, event_store, inserts
from clicktrail.storage.schema import deliveries
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime


def queue_jobs(runtime: Runtime, jobs: list[tuple[str, int, datetime]]) -> list[int]:
    """A conversion per distinct name in `jobs` (name, source, due), then the jobs in that order."""
    offer = runtime.catalog.create_offer(OfferInput(name="O", url="https://m.example/?c={click_id}"))
    sources = {
        source: runtime.catalog.create_source(
            SourceInput(name=f"S{source}", postback_url="https://n.example/")
        )
        for source in sorted({source for _, source, _ in jobs})
    }
    campaign = runtime.catalog.create_campaign(
        CampaignInput(name="C", source_id=sources[min(sources)].id, offer_id=offer.id)
    )
    now = utc_now()
    conversions: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    with runtime.database.begin() as connection:
        for name, source, due in jobs:
            if name not in conversions:
                conversions[name] = _conversion(connection, runtime, campaign, name, now)
            rows.append(
                {"created_at": now, "conversion_id": conversions[name], "click_id": f"click-{name}",
                 "source_id": sources[source].id, "status": "pending", "conversion_status": "approved",
                 "attempts": 0, "next_attempt_at": due, "updated_at": now}
            )  # fmt: skip
        event_store.insert_deliveries(connection, rows)
        ids = connection.execute(deliveries.select().order_by(deliveries.c.id)).all()
    return [row.id for row in ids]


def _conversion(connection: Connection, runtime: Runtime, campaign: Any, name: str, now: datetime) -> str:
    inserts.insert_clicks(
        connection,
        [{"click_id": f"click-{name}", "created_at": now, "campaign_id": campaign.id,
          "offer_id": campaign.offer_id, "source_id": campaign.source_id, "is_bot": False,
          "is_unique": True}],
    )  # fmt: skip
    conversion_id = f"conversion-{name}"
    event_store.insert_conversions(
        connection,
        [{"conversion_id": conversion_id, "created_at": now, "updated_at": now, "click_id": f"click-{name}",
          "event": "sale", "txid": name, "status": "approved", "revenue": Decimal(0), "payout": Decimal(0),
          "currency": "USD", "cost": Decimal(0), "click_time": now, "campaign_id": campaign.id,
          "offer_id": campaign.offer_id, "source_id": campaign.source_id, "is_bot": False,
          "via": "postback"}],
    )  # fmt: skip
    return conversion_id


def claim(runtime: Runtime, limit: int, worker: str = "worker-a") -> list[int]:
    now = utc_now()
    with runtime.database.begin() as connection:
        return delivery_store.claim_due(
            connection, now=now, limit=limit, lease_until=now + timedelta(seconds=60), token=worker
        )
