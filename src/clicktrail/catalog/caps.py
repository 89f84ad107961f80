"""Daily conversion caps: once an offer has its `daily_cap` conversions in the cap's day, new clicks
routed to it go to its fallback offer instead (and on down the fallback chain), until the day ends.

The click path must not query the database per click, so each worker process keeps a small table of
today's counts for the capped offers, refreshed every `CLICKTRAIL_CAP_REFRESH_SECONDS` by one grouped
query (`refresh`). What that tolerates (docs/visitors.md): a cap is noticed up to one refresh interval
after the conversion that reached it, so clicks in that interval still go to the capped offer; and a
cap is on conversions, which arrive after their clicks, so clicks sent before the cap was reached can
still convert past it. A new day needs no refresh: a count taken on an earlier day counts as zero.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from clicktrail.storage import routing_store
from clicktrail.storage.database import Database
from clicktrail.types import OfferId

MAX_FALLBACK_HOPS = 10


class Capped(Protocol):
    """What caps need to know of an offer (catalog.routes.OfferTerms)."""

    @property
    def id(self) -> OfferId: ...
    @property
    def daily_cap(self) -> int | None: ...
    @property
    def cap_zone(self) -> ZoneInfo: ...
    @property
    def fallback_offer_id(self) -> OfferId | None: ...


C = TypeVar("C", bound=Capped)


def day_start(zone: ZoneInfo, now: datetime) -> datetime:
    """Midnight of `now`'s day in `zone`, in UTC."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), time(), zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Count:
    day: datetime
    conversions: int


class CapBook:
    """Today's conversion counts of the capped offers, as this worker last read them."""

    def __init__(self) -> None:
        self._counts: Mapping[OfferId, _Count] = {}

    def conversions_today(self, offer: Capped, now: datetime) -> int:
        count = self._counts.get(offer.id)
        if count is None or count.day != day_start(offer.cap_zone, now):
            return 0  # never counted, or counted on an earlier day: the new day starts at zero
        return count.conversions

    def reached(self, offer: Capped, now: datetime) -> bool:
        return offer.daily_cap is not None and self.conversions_today(offer, now) >= offer.daily_cap

    def settle(self, offer: C, offers: Mapping[OfferId, C], now: datetime) -> C:
        """The offer a new click goes to: `offer`, or the first offer down its fallback chain that has
        not reached its cap (the last one of the chain when all have)."""
        seen = {offer.id}
        while offer.daily_cap is not None and self.reached(offer, now):
            fallback = offers.get(offer.fallback_offer_id) if offer.fallback_offer_id else None
            if fallback is None or fallback.id in seen or len(seen) > MAX_FALLBACK_HOPS:
                break
            seen.add(fallback.id)
            offer = fallback
        return offer

    def refresh(self, database: Database, offers: Iterable[Capped], now: datetime) -> None:
        """Count today's conversions of every capped offer: one grouped query per cap timezone."""
        by_day: dict[datetime, list[OfferId]] = {}
        for offer in offers:
            if offer.daily_cap is not None:
                by_day.setdefault(day_start(offer.cap_zone, now), []).append(offer.id)
        counts: dict[OfferId, _Count] = {}
        with database.begin() as connection:
            for start, offer_ids in by_day.items():
                found = routing_store.conversions_since(connection, offer_ids, start)
                for offer_id in offer_ids:
                    counts[offer_id] = _Count(start, found.get(offer_id, 0))
        self._counts = counts  # one assignment: readers on the event loop see the old or the new table
