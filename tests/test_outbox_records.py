"""Recording a batch of finished attempts: every attempt stored, each job's result written only while
the job is still leased to the worker that sent it, a job delivered before keeps when it was
delivered, and the sources' breakers read back in the same step (on PostgreSQL one round trip)."""

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from clicktrail.storage import delivery_store
from clicktrail.storage.schema import deliveries, delivery_attempts
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime
from tests.outbox_support import claim, queue_jobs


def _result(delivery_id: int, token: str, status: str, **values: Any) -> dict[str, Any]:
    now = utc_now()
    return {
        "id": delivery_id, "token": token, "status": status, "attempts": 1, "next_attempt_at": None,
        "last_error": None, "updated_at": now, "delivered_at": None, **values,
    }  # fmt: skip


def _attempt(delivery_id: int, outcome: str, **values: Any) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id, "attempted_at": utc_now(), "url": "https://n.example/?c=1",
        "outcome": outcome, "status_code": None, "latency_ms": 12, "error": None, **values,
    }  # fmt: skip


def test_a_batch_stores_every_attempt_and_finishes_only_the_jobs_still_leased_to_it(
    runtime: Runtime,
) -> None:
    past = utc_now() - timedelta(seconds=5)
    delivered, retried, taken_over = queue_jobs(runtime, [("a", 1, past), ("b", 1, past), ("c", 1, past)])
    assert sorted(claim(runtime, 10, worker="worker-a")) == [delivered, retried, taken_over]
    with runtime.database.begin() as connection:  # its lease ran out and another worker took it
        connection.execute(
            deliveries.update().where(deliveries.c.id == taken_over).values(lease_token="worker-b")
        )
    retry_at = utc_now() + timedelta(seconds=30)

    with runtime.database.begin() as connection:
        ours, _ = delivery_store.record_attempts(
            connection,
            [
                _attempt(delivered, "delivered", status_code=200),
                _attempt(retried, "failed", error="connection refused"),
                _attempt(taken_over, "delivered", status_code=200),
            ],
            [
                _result(delivered, "worker-a", "delivered", delivered_at=utc_now()),
                _result(retried, "worker-a", "pending", next_attempt_at=retry_at, last_error="refused"),
                _result(taken_over, "worker-a", "delivered", delivered_at=utc_now()),
            ],
            [],
        )

    assert ours == 2
    with runtime.database.begin() as connection:
        jobs = {row.id: row for row in connection.execute(select(deliveries)).all()}
        attempts = connection.execute(select(delivery_attempts).order_by(delivery_attempts.c.id)).all()
    assert [(a.delivery_id, a.outcome, a.status_code, a.error) for a in attempts] == [
        (delivered, "delivered", 200, None),
        (retried, "failed", None, "connection refused"),
        (taken_over, "delivered", 200, None),
    ]
    assert (jobs[delivered].status, jobs[delivered].attempts, jobs[delivered].lease_token) == (
        "delivered",
        1,
        None,
    )
    assert jobs[delivered].delivered_at is not None
    assert (jobs[retried].status, jobs[retried].next_attempt_at, jobs[retried].last_error) == (
        "pending",
        retry_at,
        "refused",
    )
    assert jobs[retried].locked_until is None
    # The other worker's lease and result are left alone.
    assert (jobs[taken_over].status, jobs[taken_over].lease_token) == ("pending", "worker-b")


def test_a_failed_resend_of_a_delivered_job_keeps_when_it_was_delivered(runtime: Runtime) -> None:
    (job,) = queue_jobs(runtime, [("a", 1, utc_now() - timedelta(seconds=5))])
    delivered_at = utc_now() - timedelta(hours=1)
    with runtime.database.begin() as connection:  # delivered an hour ago, then queued again by hand
        connection.execute(
            deliveries.update().where(deliveries.c.id == job).values(delivered_at=delivered_at)
        )
    assert claim(runtime, 1) == [job]

    with runtime.database.begin() as connection:
        ours, _ = delivery_store.record_attempts(
            connection,
            [_attempt(job, "failed", error="timed out")],
            [_result(job, "worker-a", "dead", last_error="timed out")],
            [],
        )

    assert ours == 1
    with runtime.database.begin() as connection:
        row = connection.execute(select(deliveries).where(deliveries.c.id == job)).one()
    assert (row.status, row.delivered_at, row.last_error) == ("dead", delivered_at, "timed out")


def test_the_breakers_of_the_batchs_sources_come_back_with_the_record(runtime: Runtime) -> None:
    past = utc_now() - timedelta(seconds=5)
    first, second = queue_jobs(runtime, [("a", 1, past), ("b", 2, past)])
    with runtime.database.begin() as connection:
        sources = connection.execute(select(deliveries.c.id, deliveries.c.source_id)).all()
    source_of = dict(sources)
    now = utc_now()
    with runtime.database.begin() as connection:
        delivery_store.save_breaker(
            connection,
            source_of[second],
            {"state": "open", "failures": 5, "reason": "refused", "opened_at": now, "probe_at": now,
             "updated_at": now},
        )  # fmt: skip
    claim(runtime, 10)

    with runtime.database.begin() as connection:
        _, breakers = delivery_store.record_attempts(
            connection,
            [_attempt(first, "delivered", status_code=200)],
            [_result(first, "worker-a", "delivered", delivered_at=now)],
            [source_of[first], source_of[second]],
        )

    # The source that never failed has no breaker; the other's is read as stored.
    assert [(b.source_id, b.state, b.failures, b.probe_at) for b in breakers] == [
        (source_of[second], "open", 5, now)
    ]
