"""The postback pipeline: parse → verify the click ID → find the click → check window and token →
record (or recognise a duplicate, or record a status change) → queue outbound postbacks → log.

Everything from finding the click to the log entry happens in one transaction, so a conversion, its
status history, its outbox rows and its log line are stored together or not at all.
"""

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from clicktrail.catalog.routes import CatalogSnapshot, fresh_postback_rule
from clicktrail.conversions.decision import ConversionStatus, Decision, Outcome
from clicktrail.conversions.request import MalformedPostback, PostbackRequest, parse_postback
from clicktrail.ids import ClickIdCodec, InvalidClickId, mint_conversion_id
from clicktrail.macros import SUB_IDS
from clicktrail.storage import event_store as store
from clicktrail.storage.database import Database
from clicktrail.types import ClickId, Clock, ConversionId

_LOGGED_QUERY_MAX = 2000
CLICK_DIMENSIONS = ("country", "region", "city", "device_type", "os", "os_version", "browser",
                    "browser_version", "is_bot", "lander_id")  # fmt: skip
"""The click's visitor dimensions a conversion carries, so reports group conversions without a join."""
_SECRET_PARAMS = frozenset({"token"})


class Channel(StrEnum):
    """How a conversion reached us; both go through the same pipeline, idempotency, token and log."""

    POSTBACK = "postback"  # the merchant's server called /postback
    PIXEL = "pixel"  # the visitor's browser loaded /pixel.gif or called /pixel (the JS pixel)


@dataclass(frozen=True, slots=True)
class RawPostback:
    """What arrived, before any judgement: merged query and body parameters."""

    method: str
    params: Mapping[str, str]
    ip: str | None
    via: Channel = Channel.POSTBACK


def _loggable_query(params: Mapping[str, str]) -> str:
    shown = {name: ("***" if name in _SECRET_PARAMS else value) for name, value in params.items()}
    return urlencode(shown)[:_LOGGED_QUERY_MAX]


def _nobody_to_tell() -> None:
    return None


class PostbackIntake:
    def __init__(
        self,
        database: Database,
        codec: ClickIdCodec,
        snapshot: Callable[[], CatalogSnapshot],
        clock: Clock,
        delivery_queued: Callable[[], None] = _nobody_to_tell,
    ) -> None:
        self._db = database
        self._codec = codec
        self._snapshot = snapshot
        self._clock = clock
        self._delivery_queued = delivery_queued
        """Called (from this worker thread) after a commit that queued an outbound postback."""

    def handle(self, raw: RawPostback) -> Outcome:
        """Decide and record one postback; runs in a worker thread (it blocks on the database)."""
        try:
            request = parse_postback(dict(raw.params))
            click_id = self._codec.verify(request.click_id)
        except MalformedPostback as exc:
            return self._log_only(raw, Outcome(Decision.MALFORMED, error=exc.error, detail=exc.detail))
        except InvalidClickId as exc:
            return self._log_only(raw, Outcome(Decision.MALFORMED, error="bad_click_id", detail=str(exc)))
        try:
            return self._record(raw, request, click_id)
        except IntegrityError:
            # A concurrent postback for the same (click, event, txid) committed first: decide again.
            return self._record(raw, request, click_id)

    def refuse(self, raw: RawPostback, decision: Decision, error: str, detail: str) -> Outcome:
        """Log a postback refused before parsing (an oversized or unreadable body)."""
        return self._log_only(raw, Outcome(decision, error=error, detail=detail))

    def _log_only(self, raw: RawPostback, outcome: Outcome) -> Outcome:
        with self._db.begin() as connection:
            self._log(connection, raw, outcome, click_id=raw.params.get("click_id"), request=None)
        return outcome

    def _log(
        self,
        connection: Connection,
        raw: RawPostback,
        outcome: Outcome,
        click_id: str | None,
        request: PostbackRequest | None,
    ) -> None:
        store.insert_postback_log(
            connection,
            {
                "received_at": self._clock(),
                "method": raw.method,
                "query": _loggable_query(raw.params),
                "ip": raw.ip,
                "click_id": (click_id or "")[:64] or None,
                "event": request.event if request else (raw.params.get("event") or "")[:64] or None,
                "txid": request.txid if request else (raw.params.get("txid") or "")[:255] or None,
                "decision": outcome.decision.value,
                "error": outcome.error,
                "detail": outcome.detail,
                "conversion_id": outcome.conversion_id,
                "via": raw.via.value,
            },
        )

    def _record(self, raw: RawPostback, request: PostbackRequest, click_id: ClickId) -> Outcome:
        with self._db.begin() as connection:
            outcome = self._decide(connection, request, click_id, raw.via)
            self._log(connection, raw, outcome, click_id=click_id, request=request)
        if outcome.decision in (Decision.ACCEPTED, Decision.UPDATED):
            self._delivery_queued()
        return outcome

    def _decide(
        self, connection: Connection, request: PostbackRequest, click_id: ClickId, via: Channel
    ) -> Outcome:
        now = self._clock()
        click = store.get_click(connection, click_id)
        if click is None:
            return Outcome(Decision.UNKNOWN_CLICK, error="unknown_click", detail=f"no click {click_id}")
        offer = self._snapshot().offers.get(click.offer_id)
        if offer is None:
            return Outcome(Decision.UNKNOWN_CLICK, error="unknown_click", detail="the click's offer is gone")
        if now - click.created_at > timedelta(days=offer.attribution_window_days):
            detail = (
                f"the click is older than the offer's {offer.attribution_window_days}-day attribution window"
            )
            return Outcome(Decision.EXPIRED, error="expired", detail=detail)
        if offer.postback_token is not None and not hmac.compare_digest(
            (request.token or "").encode(), offer.postback_token.encode()
        ):
            return Outcome(
                Decision.BAD_TOKEN, error="bad_token", detail="the token does not match the offer's"
            )

        existing = store.find_conversion(connection, click_id, request.event, request.txid)
        if existing is not None:
            if existing.status == request.status:
                return Outcome(Decision.DUPLICATE, ConversionId(existing.conversion_id))
            conversion_id = ConversionId(existing.conversion_id)
            store.set_conversion_status(connection, conversion_id, request.status, now)
            self._history(connection, conversion_id, existing.status, request.status, existing.revenue, now)
            self._queue_delivery(connection, click, conversion_id, request.event, request.status, now)
            return Outcome(Decision.UPDATED, conversion_id)

        conversion_id = mint_conversion_id(now)
        revenue = offer.revenue if request.revenue is None else request.revenue
        store.insert_conversion(
            connection,
            {
                "conversion_id": conversion_id,
                "created_at": now,
                "updated_at": now,
                "click_id": click_id,
                "event": request.event,
                "txid": request.txid,
                "status": request.status.value,
                "revenue": revenue,
                "payout": offer.payout,
                "currency": request.currency or offer.currency,
                "cost": self._snapshot().cpa_costs.get(click.campaign_id, Decimal(0)),
                "click_time": click.created_at,
                "campaign_id": click.campaign_id,
                "offer_id": click.offer_id,
                "source_id": click.source_id,
                **{name: getattr(click, name) for name in SUB_IDS},
                "external_id": click.external_id,
                **{name: getattr(click, name) for name in CLICK_DIMENSIONS},
                "via": via.value,
            },
        )
        self._history(connection, conversion_id, None, request.status, revenue, now)
        self._queue_delivery(connection, click, conversion_id, request.event, request.status, now)
        return Outcome(Decision.ACCEPTED, conversion_id)

    def _history(
        self,
        connection: Connection,
        conversion_id: ConversionId,
        old: str | None,
        new: ConversionStatus,
        revenue: Decimal,
        now: datetime,
    ) -> None:
        store.insert_status_change(
            connection,
            {
                "conversion_id": conversion_id,
                "changed_at": now,
                "old_status": old,
                "new_status": new.value,
                "revenue": revenue,
            },
        )

    def _queue_delivery(
        self,
        connection: Connection,
        click: Row[Any],
        conversion_id: ConversionId,
        event: str,
        status: ConversionStatus,
        now: datetime,
    ) -> None:
        """The outbox row for the source's outbound postback, in the conversion's own transaction,
        when the source has a postback URL and asked for this event and status."""
        rule = self._snapshot().postback_rules.get(click.source_id)
        if rule is None:
            # Another worker may have given the source its URL a moment ago: ask the database.
            rule = fresh_postback_rule(connection, click.source_id)
        if rule is None or not rule.wants(event, status.value):
            return
        store.insert_delivery(
            connection,
            {
                "created_at": now,
                "conversion_id": conversion_id,
                "click_id": click.click_id,
                "source_id": click.source_id,
                "status": "pending",
                "conversion_status": status.value,
                "attempts": 0,
                "next_attempt_at": now,
                "updated_at": now,
            },
        )
