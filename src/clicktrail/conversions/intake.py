"""The postback pipeline: parse → verify the click ID → find the click → check window and token →
record (or recognise a duplicate, or record a status change) → queue outbound postbacks → log.

Postbacks arrive in batches (the group-commit writer, storage/batch.py): a batch's clicks and
existing conversions are read with one query each, every postback is decided in arrival order
against what the batch knows so far (so a duplicate within the batch is a duplicate), and the
conversions, status history, outbox rows and log lines are written together and committed once.
A conversion, its history, its outbox rows and its log line are stored together or not at all.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import quote_plus

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from clicktrail.catalog.routes import CatalogSnapshot, PostbackRule, fresh_postback_rule
from clicktrail.conversions import auth
from clicktrail.conversions.decision import ConversionStatus, Decision, Outcome
from clicktrail.conversions.request import MalformedPostback, PostbackRequest, parse_postback
from clicktrail.ids import ClickIdCodec, InvalidClickId, mint_conversion_id
from clicktrail.macros import SUB_IDS
from clicktrail.storage import event_store as store
from clicktrail.storage.batch import Staged
from clicktrail.storage.database import Database, OpenTransaction, pipeline
from clicktrail.text import clean
from clicktrail.types import ClickId, Clock, ConversionId, SourceId

_LOGGED_QUERY_MAX = 2000
CLICK_DIMENSIONS = ("country", "region", "city", "device_type", "os", "os_version", "browser",
                    "browser_version", "is_bot", "lander_id")  # fmt: skip
"""The click's visitor dimensions a conversion carries, so reports group conversions without a join."""
_SECRET_PARAMS = frozenset({"token"})
_CLICK_COLUMNS = (
    "created_at",
    "campaign_id",
    "offer_id",
    "source_id",
    *SUB_IDS,
    "external_id",
    *CLICK_DIMENSIONS,
)
"""What deciding a postback reads of its click."""
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


class Channel(StrEnum):
    """How a conversion reached us; both go through the same pipeline, idempotency, token and log."""

    POSTBACK = "postback"  # the merchant's server called /postback
    PIXEL = "pixel"  # the visitor's browser loaded /pixel.gif or called /pixel (the JS pixel)


class RawPostback:
    """What arrived, before any judgement: merged query and body parameters. (A plain class, as
    ClickRequest is: clicks/request.py says why.)"""

    def __init__(
        self,
        method: str,
        params: Mapping[str, str],
        ip: str | None,
        via: Channel = Channel.POSTBACK,
    ) -> None:
        self.method = method
        self.params = params
        self.ip = ip
        self.via = via


def _loggable_query(params: Mapping[str, str]) -> str:
    """The parameters as a query string, secrets masked: what `urlencode` gives, without its cost
    for the plain names and values almost every postback has."""
    return "&".join(
        f"{_query_part(name)}={'***' if name in _SECRET_PARAMS else _query_part(value)}"
        for name, value in params.items()
    )[:_LOGGED_QUERY_MAX]


def _query_part(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else quote_plus(text)


class LostRace(Exception):
    """Another transaction changed a conversion this batch read before the batch's write: the batch
    rolls back and is decided again (PostbackIntake._after_a_race)."""


def _nobody_to_tell(_sources: frozenset[int]) -> None:
    return None


def _never_held(_source: SourceId, _now: datetime) -> datetime | None:
    return None


@dataclass(slots=True)
class _Known:
    """A conversion as the batch knows it: stored before, or new in this batch (`row` not yet inserted)."""

    conversion_id: ConversionId
    status: str
    revenue: Decimal
    row: dict[str, Any] | None = None


@dataclass(slots=True)
class _Batch:
    """What one batch read, and what it will write when every postback in it is decided."""

    now: datetime
    snapshot: CatalogSnapshot
    snapshot_current: bool
    """The catalog has not changed since the snapshot was loaded (its version, read by the batch)."""
    clicks: dict[str, Any]
    known: dict[tuple[str, str, str], _Known]
    rules: dict[SourceId, PostbackRule | None] = field(default_factory=dict)
    due_at: dict[SourceId, datetime] = field(default_factory=dict)
    """When a source's new jobs come due: now, or its paused deliveries' next probe."""
    new_conversions: list[dict[str, Any]] = field(default_factory=list)
    status_changes: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def write(self, connection: Connection) -> None:
        # Inserts before updates; a conversion changed later in its own batch is inserted as it ends.
        # On PostgreSQL the five statements go in one round trip (the commit is one more).
        with pipeline(connection):
            store.insert_conversions(connection, self.new_conversions)
            applied = store.set_conversion_statuses(connection, self.status_changes)
            store.insert_status_changes(connection, self.history)
            store.insert_deliveries(connection, self.deliveries)
            store.insert_postback_logs(connection, self.logs)
        if applied() != len(self.status_changes):
            raise LostRace("another transaction changed a conversion's status since this batch read it")


class PostbackIntake:
    def __init__(
        self,
        database: Database,
        codec: ClickIdCodec,
        snapshot: Callable[[], CatalogSnapshot],
        clock: Clock,
        delivery_queued: Callable[[frozenset[int]], None] = _nobody_to_tell,
        held_until: Callable[[SourceId, datetime], datetime | None] = _never_held,
    ) -> None:
        self._db = database
        self._codec = codec
        self._snapshot = snapshot
        self._clock = clock
        self._delivery_queued = delivery_queued
        """Called (from the committing thread) after a commit that queued outbound postbacks, with the
        sources they are for."""
        self._held_until = held_until
        """When a source's deliveries are paused (its circuit breaker open), until when: its jobs are
        queued for then instead of due now."""

    def handle(self, raw: RawPostback) -> Outcome:
        """Decide and record one postback (blocks on the database)."""
        return self.handle_batch([raw])[0]

    def handle_batch(self, raws: Sequence[RawPostback]) -> list[Outcome]:
        """Decide and record postbacks in arrival order, in one transaction; one outcome each."""
        try:
            return self._record(raws)
        except (IntegrityError, LostRace):
            return self._after_a_race(raws)

    def refuse(self, raw: RawPostback, decision: Decision, error: str, detail: str) -> Outcome:
        """Log a postback refused before parsing (an oversized or unreadable body)."""
        outcome = Outcome(decision, error=error, detail=detail)
        with self._db.begin() as connection:
            store.insert_postback_logs(connection, [self._log_row(raw, outcome, self._clock(), None, None)])
        return outcome

    def _after_a_race(self, raws: Sequence[RawPostback]) -> list[Outcome]:
        """Another process stored one of these conversions, or changed one's status, between our read
        and our write, and the whole batch rolled back (on SQLite only a batch decided before its
        writer's turn, `prepare_batch`, can lose such a race). The batch is decided again as a
        whole: its read now sees that conversion as the other process left it (the failed write
        waited for its commit). Deciding each
        postback in a transaction of its own instead cost a commit per postback of the batch, on the
        event loop, while every other request of the worker waited: in `make bench` about ten
        batches a minute lose such a race (BENCHMARKS.md, "Session of 2026-12-06 (08:47 UTC)").
        Only a batch that loses a second race goes one by one."""
        try:
            return self._record(raws)
        except (IntegrityError, LostRace):
            return [self._record_alone(raw) for raw in raws]

    def _record_alone(self, raw: RawPostback) -> Outcome:
        try:
            return self._record([raw])[0]
        except (IntegrityError, LostRace):
            # A concurrent postback for the same conversion committed first: decide again.
            return self._record([raw])[0]

    def prepare_batch(self, raws: Sequence[RawPostback]) -> "PreparedBatch":
        """Read and decide postbacks now, in a transaction of their own; PreparedBatch.write writes
        them and leaves the commit (and the delivery wake-up after it) to the function it returns: a
        caller on the event loop runs that in a thread while the loop goes on reading requests. The
        batch writer writes at once on PostgreSQL; on SQLite it runs this before it takes the file's
        write turn and the write in it: the other workers' batches are written meanwhile, and a
        conversion one of them wrote after this read (the same postback, sent twice at once) fails
        the write, which then decides the batch again, as a race is on PostgreSQL (`_after_a_race`)."""
        transaction = self._db.open_transaction()
        outcomes, batch = transaction.run(lambda connection: self._decide_batch(connection, raws))
        return PreparedBatch(self, raws, transaction, outcomes, batch)

    def _record(self, raws: Sequence[RawPostback]) -> list[Outcome]:
        with self._db.begin() as connection:
            outcomes, queued = self._write(connection, raws)
        if queued:
            self._delivery_queued(queued)
        return outcomes

    def _write(
        self, connection: Connection, raws: Sequence[RawPostback]
    ) -> tuple[list[Outcome], frozenset[int]]:
        """Decide and write the batch in `connection`'s transaction; say which sources it queued
        outbound postbacks for."""
        outcomes, batch = self._decide_batch(connection, raws)
        return outcomes, self._write_decided(connection, batch)

    @staticmethod
    def _write_decided(connection: Connection, batch: "_Batch") -> frozenset[int]:
        """Write a decided batch; say which sources it queued outbound postbacks for. Raises
        IntegrityError or LostRace when another transaction wrote one of its conversions first."""
        batch.write(connection)
        return frozenset(delivery["source_id"] for delivery in batch.deliveries)

    def _decide_batch(
        self, connection: Connection, raws: Sequence[RawPostback]
    ) -> tuple[list[Outcome], "_Batch"]:
        """Read what the batch needs and decide every postback in arrival order: the outcomes, and
        the batch holding the rows to write."""
        now = self._clock()
        parsed = [self._parse(raw) for raw in raws]
        click_ids = list({click_id for _, click_id, _ in parsed if click_id is not None})
        outcomes: list[Outcome] = []
        reads = store.postback_batch_reads(connection, click_ids, _CLICK_COLUMNS)
        snapshot = self._snapshot()
        batch = _Batch(
            now=now,
            snapshot=snapshot,
            snapshot_current=reads.catalog_version == snapshot.version,
            clicks=reads.clicks,
            known={
                (row.click_id, row.event, row.txid): _Known(
                    ConversionId(row.conversion_id), row.status, row.revenue
                )
                for row in reads.conversions
            },
        )
        for raw, (request, click_id, refusal) in zip(raws, parsed, strict=True):
            if request is None or click_id is None:
                assert refusal is not None
                outcome = refusal
                logged_click_id = raw.params.get("click_id")
            else:
                outcome = self._decide(connection, batch, raw, request, click_id)
                logged_click_id = click_id
            outcomes.append(outcome)
            batch.logs.append(self._log_row(raw, outcome, now, logged_click_id, request))
        return outcomes, batch

    def _parse(self, raw: RawPostback) -> tuple[PostbackRequest | None, ClickId | None, Outcome | None]:
        try:
            request = parse_postback(dict(raw.params))
            return request, self._codec.verify(request.click_id), None
        except MalformedPostback as malformed:
            return None, None, Outcome(Decision.MALFORMED, error=malformed.error, detail=malformed.detail)
        except InvalidClickId as invalid:
            return None, None, Outcome(Decision.MALFORMED, error="bad_click_id", detail=str(invalid))

    def _log_row(
        self,
        raw: RawPostback,
        outcome: Outcome,
        now: datetime,
        click_id: str | None,
        request: PostbackRequest | None,
    ) -> dict[str, Any]:
        return {
            "received_at": now,
            "method": raw.method,
            "query": _loggable_query(raw.params),
            "ip": raw.ip,
            # Cleaned: a refused postback's raw values may hold NUL, which PostgreSQL refuses in text,
            # failing the whole batch (every postback in it answered 503) instead of logging this one.
            "click_id": clean(click_id, 64),
            "event": request.event if request else clean(raw.params.get("event"), 64),
            "txid": request.txid if request else clean(raw.params.get("txid"), 255),
            "decision": outcome.decision.value,
            "error": outcome.error,
            "detail": outcome.detail,
            "conversion_id": outcome.conversion_id,
            "via": raw.via.value,
        }

    def _decide(
        self,
        connection: Connection,
        batch: _Batch,
        raw: RawPostback,
        request: PostbackRequest,
        click_id: ClickId,
    ) -> Outcome:
        now = batch.now
        click = batch.clicks.get(click_id)
        if click is None:
            return Outcome(Decision.UNKNOWN_CLICK, error="unknown_click", detail=f"no click {click_id}")
        offer = batch.snapshot.offers.get(click.offer_id)
        if offer is None:
            return Outcome(Decision.UNKNOWN_CLICK, error="unknown_click", detail="the click's offer is gone")
        if now - click.created_at > timedelta(days=offer.attribution_window_days):
            detail = (
                f"the click is older than the offer's {offer.attribution_window_days}-day attribution window"
            )
            return Outcome(Decision.EXPIRED, error="expired", detail=detail)
        refused = auth.refusal(offer, raw.params, request.token, raw.ip, now)
        if refused is not None:
            return refused

        key = (click_id, request.event, request.txid)
        existing = batch.known.get(key)
        if existing is not None:
            if existing.status == request.status:
                return Outcome(Decision.DUPLICATE, existing.conversion_id)
            if existing.row is not None:  # inserted by this batch: insert it with its latest status
                existing.row.update(status=request.status.value, updated_at=now)
            else:
                batch.status_changes.append(
                    {
                        "id": existing.conversion_id,
                        "status": request.status.value,
                        "updated_at": now,
                        "old_status": existing.status,
                    }
                )
            self._history(batch, existing.conversion_id, existing.status, request.status, existing.revenue)
            existing.status = request.status.value
            self._queue_delivery(connection, batch, click, existing.conversion_id, request)
            return Outcome(Decision.UPDATED, existing.conversion_id)

        conversion_id = mint_conversion_id(now)
        revenue = offer.revenue if request.revenue is None else request.revenue
        row = {
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
            "cost": batch.snapshot.cpa_costs.get(click.campaign_id, Decimal(0)),
            "click_time": click.created_at,
            "campaign_id": click.campaign_id,
            "offer_id": click.offer_id,
            "source_id": click.source_id,
            **{name: getattr(click, name) for name in SUB_IDS},
            "external_id": click.external_id,
            **{name: getattr(click, name) for name in CLICK_DIMENSIONS},
            "via": raw.via.value,
        }
        batch.new_conversions.append(row)
        batch.known[key] = _Known(conversion_id, request.status.value, revenue, row)
        self._history(batch, conversion_id, None, request.status, revenue)
        self._queue_delivery(connection, batch, click, conversion_id, request)
        return Outcome(Decision.ACCEPTED, conversion_id)

    def _history(
        self,
        batch: _Batch,
        conversion_id: ConversionId,
        old: str | None,
        new: ConversionStatus,
        revenue: Decimal,
    ) -> None:
        batch.history.append(
            {
                "conversion_id": conversion_id,
                "changed_at": batch.now,
                "old_status": old,
                "new_status": new.value,
                "revenue": revenue,
            }
        )

    def _queue_delivery(
        self,
        connection: Connection,
        batch: _Batch,
        click: Any,
        conversion_id: ConversionId,
        request: PostbackRequest,
    ) -> None:
        """The outbox row for the source's outbound postback, in the conversion's own transaction,
        when the source has a postback URL and asked for this event and status."""
        source_id = SourceId(click.source_id)
        if source_id not in batch.rules:
            rule = batch.snapshot.postback_rules.get(source_id)
            if rule is None and not batch.snapshot_current:
                # Another worker may have given the source its URL a moment ago: ask the database.
                # Not when the catalog is as the snapshot knows it: a source without a postback URL
                # (many want none) cost every batch one more round trip.
                rule = fresh_postback_rule(connection, source_id)
            batch.rules[source_id] = rule
            batch.due_at[source_id] = self._held_until(source_id, batch.now) or batch.now
        rule = batch.rules[source_id]
        if rule is None or not rule.wants(request.event, request.status.value):
            return
        batch.deliveries.append(
            {
                "created_at": batch.now,
                "conversion_id": conversion_id,
                "click_id": click.click_id,
                "source_id": click.source_id,
                "status": "pending",
                "conversion_status": request.status.value,
                "attempts": 0,
                "next_attempt_at": batch.due_at[source_id],
                "updated_at": batch.now,
            }
        )


class PreparedBatch:
    """A batch of postbacks read and decided in its own transaction, not yet written (prepare_batch)."""

    def __init__(
        self,
        intake: PostbackIntake,
        raws: Sequence[RawPostback],
        transaction: OpenTransaction,
        outcomes: list[Outcome],
        batch: _Batch,
    ) -> None:
        self._intake = intake
        self._raws = raws
        self._transaction = transaction
        self._outcomes = outcomes
        self._batch = batch

    def write(self, later: Sequence[RawPostback] = ()) -> Staged[Outcome]:
        """Write the decided batch, then decide and write `later` (postbacks that came meanwhile) in
        the same transaction; return the outcomes of both (they hold once committed) and the function
        that commits them. If another transaction wrote one of the batch's conversions since its read, the
        whole is decided again and committed right here (with nothing left to commit)."""
        intake, batch = self._intake, self._batch

        def write_all(connection: Connection) -> tuple[list[Outcome], frozenset[int]]:
            queued = intake._write_decided(connection, batch)
            if not later:
                return self._outcomes, queued
            outcomes, queued_later = intake._write(connection, later)
            return self._outcomes + outcomes, queued | queued_later

        try:
            outcomes, queued = self._transaction.run(write_all)
        except (IntegrityError, LostRace):
            return Staged(intake._after_a_race([*self._raws, *later]))
        transaction = self._transaction

        def finish() -> None:
            transaction.commit()
            if queued:
                intake._delivery_queued(queued)

        return Staged(outcomes, finish)

    def discard(self) -> None:
        """Give the connection back without writing (the batch failed before its turn)."""
        self._transaction.close()
