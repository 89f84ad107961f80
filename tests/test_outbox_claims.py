"""Claiming due jobs from the outbox: oldest due first, at most as many as asked, never a job another
worker holds, and a conversion's jobs for one source one at a time, in the order they were queued
(a source hears "approved" before "rejected")."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, select, text, update

from clicktrail.storage import delivery_store
from clicktrail.storage.schema import conversions, deliveries
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime
from tests.outbox_support import claim, queue_jobs


def test_a_conversions_jobs_for_one_source_are_claimed_one_at_a_time_oldest_first(runtime: Runtime) -> None:
    past = utc_now() - timedelta(seconds=10)
    approved, other_source, rejected, other_conversion = queue_jobs(
        runtime, [("a", 1, past), ("a", 2, past), ("a", 1, past - timedelta(seconds=5)), ("b", 1, past)]
    )

    # The "rejected" job is due first, but its conversion's "approved" job for the same source is older.
    assert sorted(claim(runtime, 10)) == sorted([approved, other_source, other_conversion])
    assert claim(runtime, 10, worker="worker-b") == []  # leased: nobody else takes them

    with runtime.database.begin() as connection:
        connection.execute(update(deliveries).where(deliveries.c.id == approved).values(status="delivered"))
    assert claim(runtime, 10) == [rejected]


def test_a_claim_takes_at_most_its_limit_oldest_due_first_and_none_not_yet_due(runtime: Runtime) -> None:
    now = utc_now()
    jobs = [(f"c{n}", 1, now - timedelta(seconds=n)) for n in range(12)]
    ids = queue_jobs(runtime, [*jobs, ("later", 1, now + timedelta(hours=1))])

    first = claim(runtime, 5)
    assert sorted(first) == sorted(ids[7:12])  # the five due longest
    second = claim(runtime, 100)
    assert sorted(second) == sorted(ids[:7])
    assert ids[12] not in first + second


def test_jobs_waiting_behind_older_ones_do_not_keep_a_claimable_job_from_its_turn(runtime: Runtime) -> None:
    """Thirty conversions each have a retry due in an hour and a newer status change due now (it
    waits for the retry); the one claimable job is due last of all."""
    now = utc_now()
    jobs = []
    for n in range(30):
        jobs += [(f"c{n}", 1, now + timedelta(hours=1)), (f"c{n}", 1, now - timedelta(seconds=60 - n))]
    ids = queue_jobs(runtime, [*jobs, ("free", 1, now - timedelta(seconds=1))])

    assert claim(runtime, 1) == [ids[-1]]


def test_a_claim_hands_over_its_jobs_with_their_conversions_and_says_when_the_next_comes_due(
    runtime: Runtime,
) -> None:
    """What the dispatcher sends from (on PostgreSQL one statement: the lock, the in-order check, the
    lease, the conversions and the next due time)."""
    now = utc_now()
    retry_at = now + timedelta(minutes=5)
    ids = queue_jobs(runtime, [("a", 1, now - timedelta(seconds=2)), ("b", 2, now - timedelta(seconds=1)),
                           ("a", 1, now - timedelta(seconds=3)), ("c", 1, retry_at)])  # fmt: skip

    with runtime.database.begin() as connection:
        claimed = delivery_store.claim_jobs(
            connection, now=now, limit=10, lease_until=now + timedelta(seconds=60), token="worker-a"
        )

    # The second job of "a" waits for the first; "c" is not due for five minutes.
    assert sorted((job.delivery_id, job.txid, job.conversion_status) for job in claimed.jobs) == [
        (ids[0], "a", "approved"),
        (ids[1], "b", "approved"),
    ]
    assert {job.lease_token for job in claimed.jobs} == {"worker-a"}
    assert claimed.next_due == retry_at
    with runtime.database.begin() as connection:
        leased = connection.execute(select(deliveries.c.id).where(deliveries.c.lease_token == "worker-a"))
        assert sorted(row.id for row in leased) == ids[:2]


def test_a_claim_reads_past_a_page_of_jobs_waiting_behind_older_ones(runtime: Runtime) -> None:
    """The claim locks a page of four times the jobs it wants; when every one of them waits behind
    an older job of its conversion, it reads the next page rather than coming back empty."""
    now = utc_now()
    jobs = []
    for n in range(12):  # the retries come due in an hour; their status changes wait for them
        jobs += [(f"c{n}", 1, now + timedelta(hours=1)), (f"c{n}", 1, now - timedelta(seconds=60 - n))]
    ids = queue_jobs(runtime, [*jobs, ("free", 1, now - timedelta(seconds=1)), ("free2", 1, now)])

    with runtime.database.begin() as connection:
        claimed = delivery_store.claim_jobs(
            connection, now=now, limit=2, lease_until=now + timedelta(seconds=60), token="worker-a"
        )

    assert sorted(job.delivery_id for job in claimed.jobs) == ids[-2:]
    assert claimed.next_due == now + timedelta(hours=1)


def test_a_job_whose_conversion_is_gone_ends_dead_saying_why_instead_of_being_leased_for_ever(
    runtime: Runtime,
) -> None:
    """A conversion deleted by hand (or by a purge that left the outbox behind) leaves nothing to fill
    its postback from: its job is not sent, and ends, rather than coming back at every lease's end."""
    past = utc_now() - timedelta(seconds=5)
    orphan, kept = queue_jobs(runtime, [("gone", 1, past), ("kept", 1, past)])
    with runtime.database.begin() as connection:
        connection.execute(delete(conversions).where(conversions.c.conversion_id == "conversion-gone"))

    now = utc_now()
    with runtime.database.begin() as connection:
        claimed = delivery_store.claim_jobs(
            connection, now=now, limit=10, lease_until=now + timedelta(seconds=60), token="worker-a"
        )

    assert [job.delivery_id for job in claimed.jobs] == [kept]
    with runtime.database.begin() as connection:
        row = connection.execute(select(deliveries).where(deliveries.c.id == orphan)).one()
    assert (row.status, row.last_error, row.lease_token) == ("dead", delivery_store.ORPHANED, None)
    later = now + timedelta(minutes=5)  # past the lease: nothing of it comes back
    with runtime.database.begin() as connection:
        again = delivery_store.claim_jobs(
            connection, now=later, limit=10, lease_until=later + timedelta(seconds=60), token="worker-b"
        )
    assert [job.delivery_id for job in again.jobs] == [kept]


def test_a_claim_is_planned_with_its_values_however_often_a_connection_runs_it(
    runtime: Runtime, backend: str
) -> None:
    """psycopg prepares a statement a connection has run five times, and PostgreSQL then plans it
    once for any values: a plan that cannot see `now` scanned the whole outbox (258 ms a claim of
    64 from 5,000 jobs instead of 7). The claim is never prepared, on a connection of its own or
    not."""
    if backend != "postgres":
        pytest.skip("SQLite has no prepared plans to go stale")
    queue_jobs(runtime, [(f"c{n}", 1, utc_now() - timedelta(seconds=1)) for n in range(10)])
    with runtime.database.begin() as connection:
        for _ in range(8):
            now = utc_now()
            delivery_store.claim_jobs(
                connection, now=now, limit=1, lease_until=now + timedelta(seconds=60), token="worker-a"
            )
        prepared = connection.execute(text("SELECT statement FROM pg_prepared_statements")).scalars().all()
        driver = connection.connection.driver_connection
        assert driver is not None
        assert driver.prepare_threshold == 5  # left as it was for the rest

    assert not [statement for statement in prepared if "FOR UPDATE SKIP LOCKED" in statement]


@pytest.mark.parametrize("reschedule", ["pause", "resume"])
def test_rescheduling_a_sources_jobs_never_waits_for_one_another_worker_is_changing(
    runtime: Runtime, backend: str, reschedule: str
) -> None:
    """A paused source's waiting jobs are moved to its next probe, a resumed one's made due now, in one
    statement over many jobs. A job another worker is changing at that moment (finishing an attempt
    on it) is left to that worker, not waited for: two such statements waiting on each other's rows
    were a deadlock PostgreSQL broke only after a second, by failing one of the two transactions."""
    if backend == "sqlite":
        pytest.skip("SQLite's writers take turns: no two transactions hold rows at once")
    now = utc_now()
    later = now + timedelta(hours=1)
    start, moved_to = (now, later) if reschedule == "pause" else (later, now)
    ids = queue_jobs(runtime, [(f"c{n}", 1, start) for n in range(4)])
    with runtime.database.engine.connect() as other_worker, runtime.database.begin() as connection:
        other_worker.execute(update(deliveries).where(deliveries.c.id == ids[2]).values(attempts=1))
        source_id = connection.execute(select(deliveries.c.source_id).limit(1)).scalar_one()
        connection.execute(text("SET LOCAL lock_timeout = '5s'"))  # a wait fails the test, not hangs it
        if reschedule == "pause":
            delivery_store.defer_source(connection, source_id, until=moved_to, now=now)
        else:
            delivery_store.make_source_due(connection, source_id, now=moved_to)
        other_worker.commit()

    with runtime.database.begin() as connection:
        due = dict(connection.execute(select(deliveries.c.id, deliveries.c.next_attempt_at)).all())
    if reschedule == "pause":  # past the probe, which takes the oldest whenever it is due
        moved_to += delivery_store.HELD_BEYOND_PROBE
    assert [due[job] for job in ids] == [moved_to, moved_to, start, moved_to]


def test_a_paused_sources_backlog_is_moved_once_not_again_at_every_later_probe(
    runtime: Runtime, backend: str
) -> None:
    """While a source is down its breaker probes it every so often, each probe a little later. Its
    backlog waits past the probe (HELD_BEYOND_PROBE), so a later probe moves only the jobs queued
    since, not the whole backlog again (up to 1.7 s for one such UPDATE on PostgreSQL, and a backlog
    grows while its source is down); the probe takes the oldest waiting job, whenever it is due."""
    now = utc_now()
    first_probe, second_probe = now + timedelta(seconds=30), now + timedelta(seconds=90)
    backlog = [(f"c{n}", 1, now - timedelta(seconds=10 - n)) for n in range(5)]
    ids = queue_jobs(runtime, [*backlog, ("queued-later", 1, first_probe)])  # by the intake, for the probe
    *waiting, queued_later = ids
    with runtime.database.begin() as connection:
        source_id = connection.execute(select(deliveries.c.source_id).limit(1)).scalar_one()
        delivery_store.defer_source(connection, source_id, until=first_probe, now=now)
    probed_at = first_probe + timedelta(seconds=1)  # that probe failed; the next one is later
    with runtime.database.begin() as connection:
        delivery_store.defer_source(connection, source_id, until=second_probe, now=probed_at)
        rows = {
            row.id: (row.next_attempt_at, row.updated_at)
            for row in connection.execute(
                select(deliveries.c.id, deliveries.c.next_attempt_at, deliveries.c.updated_at)
            )
        }
        delivery_store.save_breaker(
            connection, source_id,
            {"state": "open", "failures": 5, "reason": "answered 503", "opened_at": now,
             "probe_at": second_probe, "updated_at": probed_at},
        )  # fmt: skip
        probe = delivery_store.start_probe(
            connection, source_id, now=second_probe, probe_until=second_probe + timedelta(minutes=1),
            token="probe",
        )  # fmt: skip

    held = first_probe + delivery_store.HELD_BEYOND_PROBE
    assert [rows[job] for job in waiting] == [(held, now)] * 5  # not written again at the second probe
    assert rows[queued_later] == (second_probe + delivery_store.HELD_BEYOND_PROBE, probed_at)
    assert probe == waiting[0]


@pytest.mark.parametrize("reschedule", ["pause", "resume"])
def test_a_sources_jobs_are_rescheduled_a_limited_number_at_a_time_oldest_first(
    runtime: Runtime, reschedule: str
) -> None:
    """Each call moves at most `limit` jobs and says whether any are left, so a big backlog is moved
    over several short transactions (the claim that moves it holds SQLite's write turn, which every
    click waits for) instead of one long one."""
    now = utc_now()
    later = now + timedelta(hours=1)
    start, moved_to = (now, later) if reschedule == "pause" else (later, now)
    ids = queue_jobs(runtime, [(f"c{n}", 1, start) for n in range(5)])
    with runtime.database.begin() as connection:
        source_id = connection.execute(select(deliveries.c.source_id).limit(1)).scalar_one()

    def move() -> tuple[bool, dict[int, datetime]]:
        with runtime.database.begin() as connection:
            if reschedule == "pause":
                left = delivery_store.defer_source(connection, source_id, until=moved_to, now=now, limit=2)
            else:
                left = delivery_store.make_source_due(connection, source_id, now=moved_to, limit=2)
            return left, dict(connection.execute(select(deliveries.c.id, deliveries.c.next_attempt_at)).all())

    # A paused source's jobs wait past the probe (which takes the oldest whenever it is due).
    expected = moved_to + delivery_store.HELD_BEYOND_PROBE if reschedule == "pause" else moved_to
    moves = [move() for _ in range(3)]
    assert [left for left, _ in moves] == [True, True, False]
    assert [[due[job] == expected for job in ids] for _, due in moves] == [
        [True, True, False, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


def test_a_clicks_deliveries_are_found_through_its_conversions_whatever_else_is_asked(
    runtime: Runtime, backend: str
) -> None:
    """The deliveries list of one click (the dashboard's link from a click or a conversion). No index
    holds deliveries by click (every postback paid a write to one): they are found through the click's
    conversions, and the other filters only sift those, so a source's backlog of thousands of jobs is
    never walked to list a click's three."""
    now = utc_now()
    backlog = [(f"other-{n}", 1, now) for n in range(200)]
    jobs = [("a", 1, now), ("a", 2, now), ("b", 1, now), *backlog]
    a_first, a_second, b_first, *_ = queue_jobs(runtime, jobs)
    statements: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with runtime.database.begin() as connection:
        first_source = connection.execute(
            select(deliveries.c.source_id).where(deliveries.c.id == a_first)
        ).scalar_one()

        def listed(**filters: Any) -> list[int]:
            asked = {"click_id": None, "source_id": None, "status": None, "before": None, **filters}
            return [row.id for row in delivery_store.list_deliveries(connection, limit=50, **asked)]

        event.listen(runtime.database.engine, "before_cursor_execute", remember)
        try:
            assert listed(click_id="click-a") == [a_second, a_first]
            assert listed(click_id="click-a", source_id=first_source) == [a_first]
            assert listed(click_id="click-a", status="pending", before=a_second) == [a_first]
            assert listed(click_id="click-b", source_id=first_source, status="pending") == [b_first]
            assert listed(click_id="click-b", status="dead") == []
            assert listed(click_id="no-such-click") == []
        finally:
            event.remove(runtime.database.engine, "before_cursor_execute", remember)
        if backend == "sqlite":  # PostgreSQL plans by its statistics of the table
            for statement, parameters in statements:
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                searches = [row[-1] for row in plan]
                by_conversion = "SEARCH deliveries USING INDEX ix_deliveries_conversion_id (conversion_id=?)"
                assert by_conversion in searches
                assert not [line for line in searches if line.startswith("SCAN deliveries")]
