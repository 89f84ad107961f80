"""Creating, reading and changing offers, sources and campaigns."""

import secrets
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table

from clicktrail.accounts import audit
from clicktrail.accounts.audit import SYSTEM, Actor
from clicktrail.catalog.models import (
    Campaign,
    CampaignInput,
    CampaignPatch,
    Lander,
    LanderInput,
    LanderPatch,
    Offer,
    OfferInput,
    OfferPatch,
    Source,
    SourceInput,
    SourcePatch,
)
from clicktrail.catalog.rules import RoutingInput
from clicktrail.errors import NotFound, ValidationFailed
from clicktrail.ids import ALPHABET
from clicktrail.storage import catalog_store as store
from clicktrail.storage.database import Database
from clicktrail.storage.schema import CATALOG_VERSION, campaigns, landers, offers, sources
from clicktrail.types import CampaignId, Clock, OfferId, SourceId

CAMPAIGN_KEY_LENGTH = 10


NULLABLE = frozenset(
    {
        "postback_token",
        "postback_secret",
        "postback_url",
        "routing",
        "daily_cap",
        "fallback_offer_id",
        "lander_id",
    }
)


PostbackUrlCheck = Callable[[str], str | None]
"""Says what is wrong with a postback URL's address (e.g. a private host), or None when it may be used."""


def _accept_any_address(_: str) -> None:
    return None


def _refuse_nulls(values: dict[str, Any]) -> None:
    nulls = {
        name: "cannot be null" for name, value in values.items() if value is None and name not in NULLABLE
    }
    if nulls:
        raise ValidationFailed(f"{', '.join(nulls)} cannot be null", nulls)


def _offer(row: Row[Any]) -> Offer:
    return Offer(**row._asdict())


def _lander(row: Row[Any]) -> Lander:
    return Lander(**row._asdict())


def _source(row: Row[Any]) -> Source:
    return Source(**row._asdict())


def _campaign(row: Row[Any]) -> Campaign:
    values = row._asdict()
    routing = values.pop("routing")
    return Campaign(**values, routing=RoutingInput.model_validate_json(routing) if routing else None)


def _stored_routing(values: dict[str, Any], routing: RoutingInput | None) -> None:
    """The routing column as JSON text (or NULL), in place of the validated model's dump."""
    if "routing" in values:
        values["routing"] = routing.model_dump_json(exclude_none=True) if routing is not None else None


class Catalog:
    """The catalog's write and read operations; every change bumps the version workers watch."""

    def __init__(
        self, database: Database, clock: Clock, check_postback_url: PostbackUrlCheck = _accept_any_address
    ) -> None:
        self._db = database
        self._clock = clock
        self._check_postback_url = check_postback_url

    def _vet_postback_url(self, url: str | None) -> None:
        problem = None if url is None else self._check_postback_url(url)
        if problem is not None:
            raise ValidationFailed(f"postback_url: {problem}", {"postback_url": problem})

    def _bump(self, connection: Connection) -> None:
        self._db.set_meta_value(connection, CATALOG_VERSION, store.new_version())

    def _create(self, table: Table, values: dict[str, Any], noun: str, actor: Actor) -> Row[Any]:
        now = self._clock()
        with self._db.begin() as connection:
            row = store.insert_row(connection, table, {**values, "created_at": now, "updated_at": now})
            audit.record(connection, now, actor, "create", noun, row.id, after=row._asdict())
            self._bump(connection)
        return row

    def _patch(self, table: Table, row_id: int, values: dict[str, Any], noun: str, actor: Actor) -> Row[Any]:
        _refuse_nulls(values)
        now = self._clock()
        with self._db.begin() as connection:
            before = store.get_row(connection, table, row_id)
            if before is None:
                raise NotFound(f"no {noun} with id {row_id}")
            if values:
                values = {**values, "updated_at": now}
            row = store.update_row(connection, table, row_id, values)
            assert row is not None
            audit.record(
                connection, now, actor, "update", noun, row_id, before=before._asdict(), after=row._asdict()
            )
            self._bump(connection)
        return row

    def _get(self, table: Table, row_id: int, noun: str) -> Row[Any]:
        with self._db.begin() as connection:
            row = store.get_row(connection, table, row_id)
        if row is None:
            raise NotFound(f"no {noun} with id {row_id}")
        return row

    def _list(self, table: Table, after_id: int, limit: int) -> Sequence[Row[Any]]:
        with self._db.begin() as connection:
            return store.list_rows(connection, table, after_id=after_id, limit=limit)

    # Offers
    def _check_fallback(self, offer_id: int | None, fallback_id: int | None) -> None:
        """The fallback exists, and following fallbacks from it never comes back to this offer."""
        if fallback_id is None:
            return
        with self._db.begin() as connection:
            seen = {offer_id} if offer_id is not None else set()
            current: int | None = fallback_id
            while current is not None:
                if current in seen:
                    detail = "fallback_offer_id: the fallback chain would come back to this offer"
                    raise ValidationFailed(detail, {"fallback_offer_id": detail})
                row = store.get_row(connection, offers, current)
                if row is None:
                    detail = f"no offer with id {current}"
                    raise ValidationFailed(detail, {"fallback_offer_id": detail})
                seen.add(current)
                current = row.fallback_offer_id

    def create_offer(self, data: OfferInput, actor: Actor = SYSTEM) -> Offer:
        self._check_fallback(None, data.fallback_offer_id)
        return _offer(self._create(offers, data.model_dump(), "offer", actor))

    def patch_offer(self, offer_id: int, data: OfferPatch, actor: Actor = SYSTEM) -> Offer:
        values = data.model_dump(exclude_unset=True)
        if values.get("cap_timezone", "") is None:
            values["cap_timezone"] = "UTC"
        self._check_fallback(offer_id, values.get("fallback_offer_id"))
        return _offer(self._patch(offers, offer_id, values, "offer", actor))

    def get_offer(self, offer_id: int) -> Offer:
        return _offer(self._get(offers, offer_id, "offer"))

    def list_offers(self, after_id: int = 0, limit: int = 100) -> list[Offer]:
        return [_offer(row) for row in self._list(offers, after_id, limit)]

    # Landers
    def create_lander(self, data: LanderInput, actor: Actor = SYSTEM) -> Lander:
        return _lander(self._create(landers, data.model_dump(), "lander", actor))

    def patch_lander(self, lander_id: int, data: LanderPatch, actor: Actor = SYSTEM) -> Lander:
        values = data.model_dump(exclude_unset=True)
        return _lander(self._patch(landers, lander_id, values, "lander", actor))

    def get_lander(self, lander_id: int) -> Lander:
        return _lander(self._get(landers, lander_id, "lander"))

    def list_landers(self, after_id: int = 0, limit: int = 100) -> list[Lander]:
        return [_lander(row) for row in self._list(landers, after_id, limit)]

    # Sources
    def create_source(self, data: SourceInput, actor: Actor = SYSTEM) -> Source:
        self._vet_postback_url(data.postback_url)
        return _source(self._create(sources, data.model_dump(mode="json"), "source", actor))

    def patch_source(self, source_id: int, data: SourcePatch, actor: Actor = SYSTEM) -> Source:
        self._vet_postback_url(data.postback_url)
        values = data.model_dump(mode="json", exclude_unset=True)
        return _source(self._patch(sources, source_id, values, "source", actor))

    def get_source(self, source_id: int) -> Source:
        return _source(self._get(sources, source_id, "source"))

    def list_sources(self, after_id: int = 0, limit: int = 100) -> list[Source]:
        return [_source(row) for row in self._list(sources, after_id, limit)]

    # Campaigns
    def _check_references(self, connection: Connection, source_id: int | None, offer_id: int | None) -> None:
        problems = {}
        if source_id is not None and store.get_row(connection, sources, source_id) is None:
            problems["source_id"] = f"no source with id {source_id}"
        if offer_id is not None and store.get_row(connection, offers, offer_id) is None:
            problems["offer_id"] = f"no offer with id {offer_id}"
        if problems:
            raise ValidationFailed("; ".join(problems.values()), problems)

    def _check_lander(self, connection: Connection, lander_id: int | None) -> None:
        if lander_id is not None and store.get_row(connection, landers, lander_id) is None:
            detail = f"no lander with id {lander_id}"
            raise ValidationFailed(detail, {"lander_id": detail})

    def _check_routing(self, connection: Connection, routing: RoutingInput | None) -> None:
        if routing is None:
            return
        missing = sorted(i for i in routing.offer_ids() if store.get_row(connection, offers, i) is None)
        if missing:
            detail = f"routing names offers that do not exist: {', '.join(map(str, missing))}"
            raise ValidationFailed(detail, {"routing": detail})
        missing = sorted(i for i in routing.lander_ids() if store.get_row(connection, landers, i) is None)
        if missing:
            detail = f"routing names landers that do not exist: {', '.join(map(str, missing))}"
            raise ValidationFailed(detail, {"routing": detail})

    def _new_key(self, connection: Connection) -> str:
        while True:
            key = "".join(secrets.choice(ALPHABET) for _ in range(CAMPAIGN_KEY_LENGTH))
            if not store.key_exists(connection, key):
                return key

    def create_campaign(self, data: CampaignInput, actor: Actor = SYSTEM) -> Campaign:
        now = self._clock()
        with self._db.begin() as connection:
            self._check_references(connection, data.source_id, data.offer_id)
            self._check_lander(connection, data.lander_id)
            self._check_routing(connection, data.routing)
            values = {
                **data.model_dump(),
                "key": self._new_key(connection),
                "created_at": now,
                "updated_at": now,
            }
            _stored_routing(values, data.routing)
            row = store.insert_row(connection, campaigns, values)
            audit.record(connection, now, actor, "create", "campaign", row.id, after=row._asdict())
            self._bump(connection)
        return _campaign(row)

    def patch_campaign(self, campaign_id: int, data: CampaignPatch, actor: Actor = SYSTEM) -> Campaign:
        values = data.model_dump(exclude_unset=True)
        _refuse_nulls(values)
        now = self._clock()
        with self._db.begin() as connection:
            before = store.get_row(connection, campaigns, campaign_id)
            if before is None:
                raise NotFound(f"no campaign with id {campaign_id}")
            self._check_references(connection, values.get("source_id"), values.get("offer_id"))
            self._check_lander(connection, values.get("lander_id"))
            self._check_routing(connection, data.routing)
            _stored_routing(values, data.routing)
            if values:
                values["updated_at"] = now
            row = store.update_row(connection, campaigns, campaign_id, values)
            assert row is not None
            audit.record(
                connection, now, actor, "update", "campaign", campaign_id, before=before._asdict(),
                after=row._asdict(),
            )  # fmt: skip
            self._bump(connection)
        return _campaign(row)

    def get_campaign(self, campaign_id: int) -> Campaign:
        return _campaign(self._get(campaigns, campaign_id, "campaign"))

    def list_campaigns(self, after_id: int = 0, limit: int = 100) -> list[Campaign]:
        return [_campaign(row) for row in self._list(campaigns, after_id, limit)]


__all__ = ["Campaign", "CampaignId", "Catalog", "Lander", "Offer", "OfferId", "Source", "SourceId"]
