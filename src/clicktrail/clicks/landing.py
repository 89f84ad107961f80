"""Landers: the visitor saw the campaign's landing page and clicks on to an offer (`/lp/click`).

The lander's link carries no offer, only the click: its ID (from the lander URL's `{click_id}`, or the
tracker's click cookie) and, on a multi-offer lander, which of the path's offers (`/lp/click/{n}`,
1-based, in the order the path lists them). Without `n` the visitor goes to the offer chosen at the
click. The offer's cap is respected again (it may have filled since), the first click-through of each
click is recorded for the lander click-through measures, and the click moves to the offer the
visitor chose so its conversions are attributed there.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from clicktrail.catalog.caps import CapBook
from clicktrail.catalog.routes import CatalogSnapshot, OfferTerms
from clicktrail.catalog.rules import Visit
from clicktrail.ids import ClickIdCodec, InvalidClickId
from clicktrail.macros import SUB_IDS, fill
from clicktrail.storage import event_store, routing_store
from clicktrail.storage.database import Database
from clicktrail.types import ClickId, OfferId

# The click's dimensions a lander click-through carries, so reports count it without a join.
_CARRIED = (
    "campaign_id", "source_id", *SUB_IDS, "external_id", "country", "region", "city", "device_type", "os",
    "os_version", "browser", "browser_version", "is_bot",
)  # fmt: skip


class Refusal(StrEnum):
    """Why a lander click-through was not continued; each has its status in web/errors.py."""

    MISSING_CLICK_ID = "missing_click_id"
    BAD_CLICK_ID = "bad_click_id"
    UNKNOWN_CLICK = "unknown_click"
    NO_LANDER = "no_lander"
    NO_SUCH_OFFER = "no_such_offer"


@dataclass(frozen=True, slots=True)
class LanderExit:
    """Where the visitor goes (`url`), or why not (`refusal`, `detail`)."""

    url: str | None = None
    refusal: Refusal | None = None
    detail: str = ""


def _refuse(refusal: Refusal, detail: str) -> LanderExit:
    return LanderExit(refusal=refusal, detail=detail)


def _visit(click: Row[Any]) -> Visit:
    """What the routing rules saw when the visitor clicked, from the stored click."""
    return Visit(
        country=click.country,
        device_type=click.device_type,
        os=click.os,
        browser=click.browser,
        is_bot=bool(click.is_bot),
        subs={name: getattr(click, name) for name in SUB_IDS},
        hour=click.created_at.hour,
    )


def offer_url(click: Row[Any], offer: OfferTerms) -> str:
    """The offer's URL with the click's macros filled, exactly as `/c/` would have."""
    values: Mapping[str, str | None] = {
        "click_id": click.click_id,
        "campaign_id": str(click.campaign_id),
        "offer_id": str(offer.id),
        "source_id": str(click.source_id),
        "external_id": click.external_id,
        **{name: getattr(click, name) for name in SUB_IDS},
    }
    return fill(offer.url, values)


class LanderClicks:
    def __init__(
        self,
        database: Database,
        codec: ClickIdCodec,
        snapshot: Callable[[], CatalogSnapshot],
        caps: CapBook,
        reload_catalog: Callable[[], object] = lambda: None,
    ) -> None:
        """`reload_catalog`: reload the snapshot if another worker changed the catalog (a campaign or
        offer created a moment ago elsewhere that this worker has not polled yet)."""
        self._db = database
        self._codec = codec
        self._snapshot = snapshot
        self._caps = caps
        self._reload_catalog = reload_catalog

    def go_on(self, text: str | None, n: int | None, now: datetime) -> LanderExit:
        """Continue click `text` from its lander to the path's `n`-th offer (None: the click's own).
        Raises StorageError."""
        if not text:
            return _refuse(Refusal.MISSING_CLICK_ID, "pass click_id, or keep the tracker's click cookie")
        try:
            click_id = self._codec.verify(text)
        except InvalidClickId as exc:
            return _refuse(Refusal.BAD_CLICK_ID, str(exc))
        snapshot = self._snapshot()
        with self._db.begin() as connection:
            click = event_store.get_click(connection, click_id)
            if click is None:
                return _refuse(Refusal.UNKNOWN_CLICK, f"no click {click_id}")
            if click.lander_id is None:
                return _refuse(Refusal.NO_LANDER, "this click went straight to its offer, not to a lander")
            offer = self._chosen(snapshot, click, n)
            if offer is None and click.campaign_id not in snapshot.by_campaign:
                self._reload_catalog()
                snapshot = self._snapshot()
                offer = self._chosen(snapshot, click, n)
            if offer is None:
                return _refuse(Refusal.NO_SUCH_OFFER, f"the lander's path has no offer {n}")
            offer = self._caps.settle(offer, snapshot.offers, now)
            if offer.id != click.offer_id:
                routing_store.move_click_to_offer(connection, click_id, offer.id)
            self._record(connection, click, click_id, offer, now)
        return LanderExit(url=offer_url(click, offer))

    def _chosen(self, snapshot: CatalogSnapshot, click: Row[Any], n: int | None) -> OfferTerms | None:
        if n is None:
            return snapshot.offers.get(OfferId(click.offer_id))
        route = snapshot.by_campaign.get(click.campaign_id)
        if route is None:
            return None
        offers = route.path_for(_visit(click)).offers
        return offers[n - 1] if 1 <= n <= len(offers) else None

    def _record(
        self, connection: Connection, click: Row[Any], click_id: ClickId, offer: OfferTerms, now: datetime
    ) -> None:
        """The click's first click-through, once: a repeat (back, then another offer) is not counted."""
        if routing_store.lander_click_exists(connection, click_id):
            return
        values = {name: getattr(click, name) for name in _CARRIED}
        row = {
            **values,
            "click_id": click_id,
            "created_at": now,
            "click_time": click.created_at,
            "lander_id": click.lander_id,
            "offer_id": offer.id,
        }
        try:
            with connection.begin_nested():
                routing_store.insert_lander_click(connection, row)
        except IntegrityError:
            pass  # a concurrent twin recorded it first
