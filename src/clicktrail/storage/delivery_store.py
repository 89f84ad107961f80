"""SQL for the outbox: claiming due jobs under a lease, recording attempts, circuit breakers, reading
deliveries back. Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers, so its
claim (one UPDATE … RETURNING) is atomic by itself."""

import functools
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    Connection,
    Dialect,
    Integer,
    Row,
    and_,
    bindparam,
    column,
    exists,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from clicktrail.storage.database import counted_executemany, pipeline, unprepared
from clicktrail.storage.event_store import select_rows
from clicktrail.storage.inserts import insert_rows
from clicktrail.storage.schema import conversions, deliveries, delivery_attempts, delivery_breakers

log = logging.getLogger(__name__)

PENDING = "pending"

HELD_BEYOND_PROBE = timedelta(minutes=10)
"""How much longer than its probe a paused source's backlog waits (defer_source)."""

MOVED_PER_CLAIM = 1000
"""Most jobs one claim reschedules for a source paused or resumed; the next claim, right after, moves
the next ones. The claim holds SQLite's write turn, which every worker's clicks and postbacks wait
for: one UPDATE of a 50,000-job backlog took 323 ms on SQLite and 1.4 s on PostgreSQL (a source
that trips again soon after a resume finds its whole backlog due); in 51 transactions of 1,000 the
longest took 25 and 57 ms (scripts/outbox_moves.py; BENCHMARKS.md, "Session of 2026-12-06 (14:24
UTC)")."""


_Moment = datetime | BindParameter[datetime]
"""A time, or the bind parameter that stands for one in a statement built once (_sqlite_claim)."""


def _free(now: _Moment) -> Any:
    return or_(deliveries.c.locked_until.is_(None), deliveries.c.locked_until < now)


def _due(now: _Moment) -> Any:
    return and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now, _free(now))


def held_breakers(connection: Connection) -> Sequence[Row[Any]]:
    """Breakers that are not closed (a handful at most)."""
    query = select(delivery_breakers).where(delivery_breakers.c.state != "closed")
    # In source order: the claim takes their locks (start_probe) in the order it reads them.
    return connection.execute(query.order_by(delivery_breakers.c.source_id)).all()


class Claimed(NamedTuple):
    jobs: list[Row[Any]]
    """The jobs leased, with their conversions (as `jobs` reads them)."""
    next_due: datetime | None
    """When a job still waiting comes due (next_due_at, read before this claim's lease): a retry's
    time, or the end of an earlier lease."""


def claim_jobs(
    connection: Connection,
    *,
    now: datetime,
    limit: int,
    lease_until: datetime,
    token: str,
    excluded_sources: Collection[int] = (),
) -> Claimed:
    """claim_due, with the jobs' conversions and the next due time: on PostgreSQL in one statement
    (_claim_due_on_postgresql), on SQLite (in the process: no round trips) in three."""
    if connection.dialect.name == "postgresql":
        leased, next_due = _claim_due_on_postgresql(
            connection, now, limit, lease_until, token, excluded_sources, None
        )
        _end_orphans(connection, [row.delivery_id for row in leased if row.conversion_id is None], now)
        return Claimed([row for row in leased if row.conversion_id is not None], next_due)
    next_due = next_due_at(connection, now)  # before the lease, as PostgreSQL's statement sees it
    ids = claim_due(
        connection,
        now=now,
        limit=limit,
        lease_until=lease_until,
        token=token,
        excluded_sources=excluded_sources,
    )
    return Claimed(list(jobs(connection, ids, now=now)) if ids else [], next_due)


def claim_due(
    connection: Connection,
    *,
    now: datetime,
    limit: int,
    lease_until: datetime,
    token: str,
    excluded_sources: Collection[int] = (),
    only_source: int | None = None,
) -> list[int]:
    """Lease up to `limit` due jobs, oldest due first; returns their ids.

    A job waits while an older job for the same conversion and source is still pending, so a source
    hears of a conversion's status changes in the order they happened (approved before chargeback),
    never two of them at once."""
    if connection.dialect.name == "postgresql":
        leased, _ = _claim_due_on_postgresql(
            connection, now, limit, lease_until, token, excluded_sources, only_source
        )
        return [row.delivery_id for row in leased]
    parameters: dict[str, Any] = {"now": now, "limit": limit, "lease_until": lease_until, "token": token}
    if excluded_sources:
        parameters["excluded"] = list(excluded_sources)
    if only_source is not None:
        parameters["only_source"] = only_source
    claimed = connection.execute(_sqlite_claim(bool(excluded_sources), only_source is not None), parameters)
    return [row.id for row in claimed]


@functools.cache
def _sqlite_claim(excluding: bool, one_source: bool) -> Any:
    """SQLite's claim, built once with its values as parameters: building it afresh (an alias, its
    column proxies, a dozen comparisons) took 2 ms of Python a claim, for a statement that runs in
    0.07 ms, and the claim holds the write turn meanwhile (BENCHMARKS.md, "Claims on SQLite").

    One statement, atomic under SQLite's single writer; `id IN (…)` alone lets it look the chosen
    rows up by rowid instead of scanning every pending one."""
    candidates = select(deliveries.c.id).where(
        _due(bindparam("now", type_=deliveries.c.next_attempt_at.type)), _first_of_its_conversion()
    )
    if excluding:
        candidates = candidates.where(deliveries.c.source_id.not_in(bindparam("excluded", expanding=True)))
    if one_source:
        candidates = candidates.where(deliveries.c.source_id == bindparam("only_source"))
    candidates = candidates.order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(
        bindparam("limit", type_=Integer)
    )
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(candidates.scalar_subquery()))
        .values(
            locked_until=bindparam("lease_until", type_=deliveries.c.locked_until.type),
            lease_token=bindparam("token", type_=deliveries.c.lease_token.type),
        )
        .returning(deliveries.c.id)
    )


def _first_of_its_conversion() -> Any:
    """No older job of the same conversion for the same source is pending: this one's turn."""
    older = deliveries.alias("older")
    return ~exists().where(
        older.c.conversion_id == deliveries.c.conversion_id,
        older.c.source_id == deliveries.c.source_id,
        older.c.id < deliveries.c.id,
        older.c.status == PENDING,
    )


def _lease(connection: Connection, ids: Any, lease_until: datetime, token: str) -> list[int]:
    """Lease the jobs `ids` (a list, or a select of ids) to `token` until `lease_until`."""
    leased = connection.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(ids))
        .values(locked_until=lease_until, lease_token=token)
        .returning(deliveries.c.id)
    )
    return [row.id for row in leased]


_OVERFETCH = 4
"""On PostgreSQL, due jobs locked per job wanted: the in-order check drops some after the lock."""


def _claim_due_on_postgresql(
    connection: Connection,
    now: datetime,
    limit: int,
    lease_until: datetime,
    token: str,
    excluded_sources: Collection[int],
    only_source: int | None,
) -> tuple[list[Row[Any]], datetime | None]:
    """claim_due on PostgreSQL, page after page of the oldest due jobs (skipping those another worker
    holds); each page one statement (_postgresql_claim_page) that locks it, keeps the jobs that are
    their conversion's oldest pending job for their source, leases them and returns them with their
    conversions (None in the conversion's columns if it is gone) and the next due time. The next
    page only if that left fewer than `limit` (jobs waiting behind an older one never keep a
    claimable job from its turn).

    One statement where the claim took five (lock, in-order check, lease, the jobs, the next due
    time), each a round trip: a worker's claims of a dozen jobs took 26 ms at 1,000 deliveries a
    second on a 2-core machine shared with the server, about 3 ms a round trip, and were running 80%
    of the time (BENCHMARKS.md, "PostgreSQL's delivery lag").

    The in-order check is not a NOT EXISTS join in the locking query: with the outbox's statistics
    stale (a burst into a young table, before autovacuum analyses it), PostgreSQL checked every due
    job against every pending job of its source, 1.4 s per claim with 4,000 jobs waiting (EXPLAIN
    ANALYZE; 2 ms after ANALYZE), and a backlog drained at 103 jobs a second (BENCHMARKS.md, "The
    outbox's claim on PostgreSQL"). The page is locked first (a CTE, materialised), then the pending
    jobs of its conversions are read, once per page, and the page's jobs kept by looking their ids
    up in that answer (a join there, planned on the same stale statistics as a nested loop over
    both, took 19 ms a page of 256: BENCHMARKS.md, "PostgreSQL's claim in one statement";
    `scripts/claim_times.py --postgres [--explain]` times and shows a claim on a stale table)."""
    page_size = _OVERFETCH * limit
    parameters: dict[str, Any] = {
        "now": now,
        "page_size": page_size,
        "lease_until": lease_until,
        "token": token,
    }
    if excluded_sources:
        parameters["excluded"] = list(excluded_sources)
    if only_source is not None:
        parameters["only_source"] = only_source
    leased: list[Row[Any]] = []
    while True:
        parameters["limit"] = limit - len(leased)
        page_statement = _postgresql_claim_page(
            bool(excluded_sources), only_source is not None, "after_id" in parameters
        )
        # psycopg prepares a statement run five times, and PostgreSQL then switches to a generic
        # plan that cannot see `now`: measured, 258 ms per claim of 64 from a 5,000-job outbox
        # instead of 7 ms. Never prepared, it is planned with its values each time (where a SET
        # LOCAL plan_cache_mode cost a round trip of its own).
        with unprepared(connection):
            rows = connection.execute(page_statement, parameters).all()
        page = rows[0]  # one row at least, with the page's own figures (the jobs are left-joined)
        leased += [row for row in rows if row.delivery_id is not None]
        if len(leased) >= limit or page.locked_count < page_size:
            break
        parameters["after_at"], parameters["after_id"] = page.last_at, page.last_id
    waiting = [moment for moment in (page.next_retry, page.lease_end) if moment is not None]
    return leased, min(waiting, default=None)


@functools.cache
def _postgresql_claim_page(excluding: bool, one_source: bool, after: bool) -> Any:
    """One page of PostgreSQL's claim as one statement, built once per shape (its values are
    parameters). Its first columns are the page's own figures, the same in every row: how many jobs
    it locked, the last of them (where the next page starts) and the next due time, read with the
    statement's snapshot (another worker's leases; this claim's own are not in it)."""
    conditions = [
        "status = 'pending'",
        "next_attempt_at <= :now",
        "(locked_until IS NULL OR locked_until < :now)",
    ]
    if excluding:
        conditions.append("source_id NOT IN :excluded")
    if one_source:
        conditions.append("source_id = :only_source")
    if after:
        conditions.append("(next_attempt_at, id) > (:after_at, :after_id)")
    conversion_columns = ", ".join(f"conversions.{column_.name}" for column_ in conversions.c)
    sql = f"""
WITH locked AS MATERIALIZED (
    SELECT id, conversion_id, next_attempt_at FROM deliveries
    WHERE {" AND ".join(conditions)}
    ORDER BY next_attempt_at, id
    LIMIT :page_size
    FOR UPDATE SKIP LOCKED
), first_pending AS (
    SELECT min(id) AS id FROM deliveries
    WHERE status = 'pending' AND conversion_id IN (SELECT conversion_id FROM locked)
    GROUP BY conversion_id, source_id
), chosen AS (
    SELECT id FROM locked WHERE id = ANY(ARRAY(SELECT id FROM first_pending))
    ORDER BY next_attempt_at, id
    LIMIT :limit
), leased AS (
    UPDATE deliveries SET locked_until = :lease_until, lease_token = :token
    FROM chosen WHERE deliveries.id = chosen.id
    RETURNING deliveries.id, deliveries.source_id, deliveries.conversion_status, deliveries.attempts,
        deliveries.created_at, deliveries.lease_token, deliveries.conversion_id
), last_locked AS (
    SELECT next_attempt_at, id FROM locked ORDER BY next_attempt_at DESC, id DESC LIMIT 1
), page AS (
    SELECT
        (SELECT count(*) FROM locked) AS locked_count,
        (SELECT next_attempt_at FROM last_locked) AS last_at,
        (SELECT id FROM last_locked) AS last_id,
        (SELECT min(next_attempt_at) FROM deliveries
            WHERE status = 'pending' AND next_attempt_at > :now) AS next_retry,
        (SELECT min(locked_until) FROM deliveries WHERE locked_until > :now) AS lease_end
)
SELECT page.locked_count, page.last_at, page.last_id, page.next_retry, page.lease_end,
    leased.id AS delivery_id, leased.source_id AS delivery_source_id, leased.conversion_status,
    leased.attempts, leased.created_at AS queued_at, leased.lease_token, {conversion_columns}
FROM page LEFT JOIN (leased LEFT JOIN conversions ON conversions.conversion_id = leased.conversion_id) ON true
"""  # noqa: S608 (only the schema's own names are formatted in; every value is a parameter)
    moment = deliveries.c.next_attempt_at.type
    parameters = [
        bindparam("now", type_=moment),
        bindparam("page_size", type_=Integer),
        bindparam("limit", type_=Integer),
        bindparam("lease_until", type_=moment),
        bindparam("token", type_=deliveries.c.lease_token.type),
    ]
    if excluding:
        parameters.append(bindparam("excluded", expanding=True, type_=Integer))
    if one_source:
        parameters.append(bindparam("only_source", type_=Integer))
    if after:
        parameters += [bindparam("after_at", type_=moment), bindparam("after_id", type_=BigInteger)]
    return (
        text(sql)
        .bindparams(*parameters)
        .columns(
            column("locked_count", BigInteger),
            column("last_at", moment),
            column("last_id", BigInteger),
            column("next_retry", moment),
            column("lease_end", moment),
            column("delivery_id", BigInteger),
            column("delivery_source_id", Integer),
            column("conversion_status", deliveries.c.conversion_status.type),
            column("attempts", Integer),
            column("queued_at", moment),
            column("lease_token", deliveries.c.lease_token.type),
            *conversions.c,
        )
    )


def start_probe(
    connection: Connection, source_id: int, *, now: datetime, probe_until: datetime, token: str
) -> int | None:
    """Take the half-open probe of a tripped source: one of its due jobs, when the cool-down is over and
    no other worker holds the probe. Returns the leased job's id."""
    taken = connection.execute(
        update(delivery_breakers)
        .where(
            delivery_breakers.c.source_id == source_id,
            delivery_breakers.c.state.in_(("open", "half_open")),
            delivery_breakers.c.probe_at <= now,
        )
        .values(state="half_open", probe_at=probe_until, updated_at=now)
    )
    if taken.rowcount != 1:
        return None
    ids = claim_due(connection, now=now, limit=1, lease_until=probe_until, token=token, only_source=source_id)
    if not ids:
        ids = _lease_oldest_waiting(connection, source_id, now=now, lease_until=probe_until, token=token)
    if not ids:
        # Nothing due to probe with: stay tripped and look again later.
        connection.execute(
            update(delivery_breakers)
            .where(delivery_breakers.c.source_id == source_id)
            .values(state="open", probe_at=now, updated_at=now)
        )
        return None
    return ids[0]


def _lease_oldest_waiting(
    connection: Connection, source_id: int, *, now: datetime, lease_until: datetime, token: str
) -> list[int]:
    """Lease the source's oldest pending job for a probe, whenever it is due: a paused source's
    backlog waits past the probe (defer_source). One another transaction holds is skipped, not
    waited for (this one holds the breaker's row), and so is a job queued after another of its
    conversion's for the source: a source hears a conversion's changes in order. Reads every pending
    job of the source (25 ms at 100,000 on PostgreSQL), once per probe."""
    oldest = (
        select(deliveries.c.id)
        .where(
            deliveries.c.source_id == source_id,
            deliveries.c.status == PENDING,
            _free(now),
            _first_of_its_conversion(),
        )
        .order_by(deliveries.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return _lease(connection, oldest, lease_until, token)


def next_due_at(connection: Connection, now: datetime) -> datetime | None:
    """When a waiting job next comes due: a retry's time, or the end of a lease (a worker may have died).
    Two index seeks: one aggregate with both FILTERs read every pending row, a paused source's whole
    backlog, on each claim."""
    retry = connection.execute(
        select(func.min(deliveries.c.next_attempt_at)).where(
            deliveries.c.status == PENDING, deliveries.c.next_attempt_at > now
        )
    ).scalar_one_or_none()
    # Leases only (finish and release clear them), whatever the status: with `status = 'pending'`
    # SQLite read every pending row by the due index instead of the few leased ones.
    lease_end = connection.execute(
        select(func.min(deliveries.c.locked_until)).where(deliveries.c.locked_until > now)
    ).scalar_one_or_none()
    moments: list[datetime] = [moment for moment in (retry, lease_end) if moment is not None]
    return min(moments, default=None)


def defer_source(
    connection: Connection, source_id: int, until: datetime, now: datetime, *, limit: int | None = None
) -> bool:
    """A paused source's waiting jobs wait past its next probe instead of being due: the claim then
    never reads them (it skipped them one by one, the whole backlog on every claim, while the source
    was down). The probe takes the source's oldest waiting job whenever it is due (start_probe).
    At most `limit` jobs (MOVED_PER_CLAIM unless given), oldest first; returns True when some are
    left to move (the next claim moves them: MOVED_PER_CLAIM says why).

    Past the probe, by HELD_BEYOND_PROBE: when they waited for the probe itself, every failed probe
    (each one a little later) moved the whole backlog again, and a backlog grows for as long as its
    source is down: 18 such UPDATEs of up to 1.7 s each in PostgreSQL's slow-statement log over two
    minutes of paced postbacks (BENCHMARKS.md, "Session of 2026-12-06 (11:29 UTC)"). Now a later
    probe moves only the jobs queued since. A resume makes them all due at once (make_source_due);
    one missed (a worker restarted) leaves them late by HELD_BEYOND_PROBE at most. The API shows
    them waiting for the probe (delivery/queries.py)."""
    later = deliveries.c.next_attempt_at < until
    return _reschedule(connection, source_id, later, until + HELD_BEYOND_PROBE, now, limit)


def _reschedule(
    connection: Connection, source_id: int, condition: Any, due: datetime, now: datetime, limit: int | None
) -> bool:
    """Make up to `limit` (MOVED_PER_CLAIM) of the source's pending jobs that meet `condition` due at
    `due`, oldest first; True when as many as that moved (some may be left)."""
    limit = limit or MOVED_PER_CLAIM
    moved = connection.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(_lockable_pending_of(source_id, condition).limit(limit)))
        .values(next_attempt_at=due, updated_at=now)
    )
    return moved.rowcount >= limit


def _lockable_pending_of(source_id: int, condition: Any) -> Any:
    """The ids of a source's pending jobs that meet `condition`, locked in id order, skipping those
    another transaction holds (PostgreSQL; SQLite's writers take turns).

    Rescheduling a source's jobs touches many rows. As a plain UPDATE two workers locked them in the
    order of their plans while another worker's `finish` held some of them: PostgreSQL found the
    deadlock after its deadlock_timeout (a second) and failed one of the transactions, twice in one
    `make bench`. Skipped rows are being claimed, finished or rescheduled by that other transaction,
    and a source seen resumed is made due again by the next claims (Dispatcher._resumed_since)."""
    return (
        select(deliveries.c.id)
        .where(deliveries.c.source_id == source_id, deliveries.c.status == PENDING, condition)
        .order_by(deliveries.c.id)
        .with_for_update(skip_locked=True)
    )


def jobs(connection: Connection, ids: Sequence[int], *, now: datetime) -> Sequence[Row[Any]]:
    """Claimed jobs with their conversions (the macro values). A job whose conversion is gone is
    not among them: it ends (_end_orphans)."""
    query = (
        select(
            deliveries.c.id.label("delivery_id"),
            deliveries.c.source_id.label("delivery_source_id"),
            deliveries.c.conversion_status,
            deliveries.c.attempts,
            deliveries.c.created_at.label("queued_at"),
            deliveries.c.lease_token,
            conversions,
        )
        .join(conversions, conversions.c.conversion_id == deliveries.c.conversion_id)
        .where(deliveries.c.id.in_(list(ids)))
    )
    found = connection.execute(query).all()
    if len(found) < len(ids):
        _end_orphans(connection, sorted(set(ids) - {row.delivery_id for row in found}), now)
    return found


ORPHANED = "its conversion no longer exists"


def _end_orphans(connection: Connection, ids: Sequence[int], now: datetime) -> None:
    """Claimed jobs whose conversion row is gone (deleted by hand, or by a purge that left the
    outbox behind) have nothing to fill a postback's macros from: they end dead, saying why, rather
    than being leased, left unsent and leased again when the lease runs out, for ever."""
    if not ids:
        return
    log.warning("%s delivery jobs dead: %s", len(ids), ORPHANED)
    connection.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(list(ids)))
        .values(status="dead", last_error=ORPHANED, locked_until=None, lease_token=None, updated_at=now)
    )


class Recorded(NamedTuple):
    ours: int
    """How many of the jobs were still leased to us (record_attempts)."""
    breakers: Sequence[Any]
    """The breakers of the sources asked for that exist, unlocked (breakers_of)."""


def record_attempts(
    connection: Connection,
    attempts: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    source_ids: Collection[int],
) -> Recorded:
    """Store a batch's attempts (rows of delivery_attempts), their jobs' results (finish) and read the
    breakers of `source_ids`: on PostgreSQL the three and the BEGIN go in one round trip (a
    pipeline), where they took four one after another; with the COMMIT a record is two.

    A PostgreSQL dispatcher spent about a third of its delivery threads' time recording at 1,000
    postbacks a second, most of it waiting for those round trips on a busy machine (py-spy;
    BENCHMARKS.md, "Session of 2026-12-06 (16:40 UTC)")."""
    with pipeline(connection):
        if attempts:
            insert_rows(connection, delivery_attempts, attempts)
        count = _finish(connection, results)
        breakers = breakers_of(connection, source_ids)
    return Recorded(count(), breakers)


def _finish(connection: Connection, results: Sequence[Mapping[str, Any]]) -> Callable[[], int]:
    """Record attempts' results and end their leases, in one executemany on the driver's cursor. Each
    result names `id`, `token`, `status`, `attempts`, `next_attempt_at`, `last_error`, `updated_at`
    and `delivered_at`; a job whose lease is no longer `token` is left alone. Returns the function
    that counts the jobs that were ours, to call once the statement has been answered (after the
    pipeline it runs in: counted_executemany)."""
    if not results:
        return lambda: 0
    sql, convert = _finish_plan(connection.dialect)
    # In id order, as every statement that locks many jobs takes them: no two wait on each other.
    ordered = sorted(results, key=lambda result: int(result["id"]))
    return counted_executemany(connection, sql, [convert(result) for result in ordered])


_FINISHED_NAMES = ("status", "attempts", "next_attempt_at", "last_error", "updated_at", "delivered_at")


@functools.cache
def _finish_plan(dialect: Dialect) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
    marker = "?" if dialect.paramstyle == "qmark" else "%s"
    # Fixed names; every value is bound. A failed re-send of a job delivered before keeps when it
    # was delivered (the COALESCE).
    sql = (
        f"UPDATE deliveries SET status = {marker}, attempts = {marker}, "  # noqa: S608
        f"next_attempt_at = {marker}, last_error = {marker}, updated_at = {marker}, "
        f"delivered_at = COALESCE({marker}, delivered_at), locked_until = NULL, lease_token = NULL "
        f"WHERE id = {marker} AND lease_token = {marker}"
    )
    processors = [
        deliveries.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in (*_FINISHED_NAMES, "id", "lease_token")
    ]
    converters = [
        (name, _same if process is None else process)
        for name, process in zip((*_FINISHED_NAMES, "id", "token"), processors, strict=True)
    ]

    def convert(result: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(process(result[name]) for name, process in converters)

    return sql, convert


def release(connection: Connection, delivery_ids: Sequence[int], token: str) -> None:
    """Give back leases not used (at shutdown), so another worker need not wait for them to expire."""
    if delivery_ids:
        connection.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.lease_token == token)
            .values(locked_until=None, lease_token=None)
        )


def _same(value: Any) -> Any:
    return value


_BREAKER_NAMES = tuple(column.name for column in delivery_breakers.columns)


def breakers_of(connection: Connection, source_ids: Collection[int]) -> Sequence[Any]:
    """The breakers of these sources that exist (a source that never failed has none), unlocked, as
    named tuples (read by the driver: event_store.select_rows, which a pipeline allows)."""
    if not source_ids:
        return []
    return select_rows(connection, delivery_breakers, _BREAKER_NAMES, "source_id", sorted(source_ids))


def get_breaker(connection: Connection, source_id: int) -> Row[Any] | None:
    query = select(delivery_breakers).where(delivery_breakers.c.source_id == source_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).one_or_none()


def save_breaker(connection: Connection, source_id: int, values: Mapping[str, Any]) -> None:
    row = {"source_id": source_id, **values}
    statement: Any
    if connection.dialect.name == "postgresql":
        statement = postgresql.insert(delivery_breakers).values(**row)
    else:
        statement = sqlite.insert(delivery_breakers).values(**row)
    statement = statement.on_conflict_do_update(index_elements=["source_id"], set_=dict(values))
    connection.execute(statement)


def make_source_due(
    connection: Connection, source_id: int, now: datetime, *, limit: int | None = None
) -> bool:
    """A source resumed: its waiting jobs are due now rather than at their backed-off times (those
    another transaction holds are left to it: _lockable_pending_of). At most `limit`, oldest first;
    returns True when some are left (as defer_source)."""
    return _reschedule(connection, source_id, deliveries.c.next_attempt_at > now, now, now, limit)


def get_delivery(connection: Connection, delivery_id: int) -> Row[Any] | None:
    return connection.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one_or_none()


def requeue(connection: Connection, delivery_id: int, now: datetime) -> bool:
    """Make a job due now with a fresh schedule, unless a worker holds it right now."""
    result = connection.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, _free(now))
        .values(status=PENDING, attempts=0, next_attempt_at=now, updated_at=now)
    )
    return result.rowcount == 1


def list_deliveries(
    connection: Connection,
    *,
    click_id: str | None,
    source_id: int | None,
    status: str | None,
    before: int | None,
    limit: int,
) -> Sequence[Row[Any]]:
    query = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
    source: ColumnElement[Any] = deliveries.c.source_id
    state: ColumnElement[Any] = deliveries.c.status
    key: ColumnElement[Any] = deliveries.c.id
    if click_id is not None:
        # Through the click's conversions (their unique key starts with click_id; deliveries are
        # indexed by conversion): an index of deliveries by click cost every postback a write. A
        # click has a handful of deliveries, so the other filters are only checked on them: as
        # expressions no index holds, or SQLite, without statistics, may prefer walking a paused
        # source's whole backlog (source_id, status) or the table's ids from `before` down.
        of_click = select(conversions.c.conversion_id).where(conversions.c.click_id == click_id)
        query = query.where(deliveries.c.conversion_id.in_(of_click))
        source, state, key = source + 0, state.concat(""), key + 0
    if source_id is not None:
        query = query.where(source == source_id)
    if status is not None:
        query = query.where(state == status)
    if before is not None:
        query = query.where(key < before)
    return connection.execute(query).all()


def attempts_of(connection: Connection, delivery_ids: Sequence[int]) -> Sequence[Row[Any]]:
    if not delivery_ids:
        return []
    query = (
        select(delivery_attempts)
        .where(delivery_attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(delivery_attempts.c.id)
    )
    return connection.execute(query).all()
