"""The dispatcher: an asyncio task in each server process that claims due jobs from the outbox under a
lease, sends them (a bounded number at a time), and records every attempt.

It claims up to twice as many jobs as it sends at once, so the next batch is already claimed while one
is being sent and recorded: a claim is a few round trips to the database, and waiting for it between
batches halved the rate (measured on PostgreSQL: 640/s one batch at a time).

It is woken at once when this process queues a delivery and polls for the rest (jobs queued by other
processes, retries coming due, leases of dead workers running out). A wake-up for jobs whose sources
are all paused by their breakers is let pass while what the last claim read of the breakers is fresh
(`_PAUSED_FRESH_SECONDS`): those jobs wait for their source's probe, so a claim would find nothing
to send (BENCHMARKS.md, "Wake-ups for paused sources"). Database work runs on its own small
thread pool, so it never takes the threads the postback path uses.

On SQLite its write transactions first take a write turn (storage/write_turn.py), as the batch writers
do: they stage their rows on the event loop, and one that found the file locked by a claim slept there,
in SQLite's busy handler, with every request of the process waiting.
"""

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Row

from clicktrail.catalog.routes import CatalogSnapshot, PostbackRule, fresh_postback_rule
from clicktrail.config import Settings
from clicktrail.delivery.breaker import Breaker, BreakerPolicy, BreakerState
from clicktrail.delivery.schedule import RetrySchedule
from clicktrail.delivery.sender import AttemptOutcome, AttemptResult, PostbackSender
from clicktrail.delivery.status import DeliveryStatus
from clicktrail.delivery.template import MacroValues, conversion_values, postback_url
from clicktrail.storage import delivery_store as store
from clicktrail.storage.database import Database
from clicktrail.storage.write_turn import WriteTurn
from clicktrail.types import Clock, SourceId

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_STOP_GRACE_SECONDS = 5.0
_GATHER_SECONDS = 0.02
_PAUSED_FRESH_SECONDS = 1.0
"""How long what a claim read of the breakers is trusted to let wake-ups for paused sources pass: at
most this much later, a source resumed on another worker is claimed for here too."""
_ERROR_MAX = 2000


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed delivery: ours alone until the lease ends."""

    delivery_id: int
    source_id: SourceId
    attempts: int
    """Attempts made before this one."""
    token: str
    lease_until: datetime
    values: MacroValues


@dataclass(frozen=True, slots=True)
class Attempt:
    """A finished attempt, waiting to be recorded."""

    job: Job
    result: AttemptResult
    started_at: datetime
    recorded: "asyncio.Future[None]"
    """Done once the result is stored (or could not be)."""


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    concurrency: int
    poll_seconds: float
    lease: timedelta
    longest_attempt: timedelta
    """Connect and read timeouts together: a job whose lease ends sooner is not started."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "DispatcherConfig":
        return cls(
            settings.delivery_concurrency,
            settings.delivery_poll_seconds,
            timedelta(seconds=settings.delivery_lease_seconds),
            timedelta(seconds=settings.delivery_connect_timeout + settings.delivery_read_timeout),
        )


def _answered(result: AttemptResult) -> bool:
    """The receiver is up: it took the postback, or refused it for good (a final 4xx is about this
    postback, not about the receiver's health)."""
    return result.outcome in (AttemptOutcome.DELIVERED, AttemptOutcome.REJECTED)


class Dispatcher:
    def __init__(
        self,
        database: Database,
        snapshot: Callable[[], CatalogSnapshot],
        sender: PostbackSender,
        *,
        config: DispatcherConfig,
        schedule: RetrySchedule,
        breakers: BreakerPolicy,
        clock: Clock,
        turn: WriteTurn | None = None,
    ) -> None:
        self._db = database
        self._turn = turn
        self._turn_lock = threading.Lock()  # the turn is one open file: the pool's threads share it
        self._snapshot = snapshot
        self._sender = sender
        self._config = config
        self._schedule = schedule
        self._breakers = breakers
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="delivery-db")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], Job] = {}
        """Claimed jobs, sending or waiting for a sending slot."""
        self._sending = asyncio.Semaphore(config.concurrency)
        self._finished_attempts: list[Attempt] = []
        self._recorder: asyncio.Task[None] | None = None
        self._paused: tuple[float, dict[int, datetime]] = (0.0, {})
        """When the last claim ran (monotonic) and the sources it found paused, with their probe times."""
        self._resumed: dict[int, float] = {}
        """Sources found resumed since an earlier claim, with when that was first seen (monotonic)."""
        self.claims = 0
        """Claims made so far (each a write transaction), counted once done: for the tests and an
        operator's curiosity."""

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._runner = asyncio.create_task(self._run(), name="delivery-dispatcher")

    def wake(self, sources: frozenset[int] | None = None) -> None:
        """Look for due jobs now: jobs were queued for `sources` (None: for any, or something else
        changed). Safe to call from any thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        if sources is not None and self._all_paused(sources):
            return
        loop.call_soon_threadsafe(wakeup.set)

    def _all_paused(self, sources: frozenset[int]) -> bool:
        """Whether the last claim, a moment ago, found every one of `sources` paused until later."""
        now = self._clock()
        return all(self.held_until(source, now) is not None for source in sources)

    def held_until(self, source_id: int, now: datetime) -> datetime | None:
        """When `source_id`'s next probe goes, if the last claim, a moment ago, found it paused until
        after `now`. The postback intake queues that source's new jobs for then: a job queued due now
        had to be deferred by the next claim, one more write of the row and its five indexes, inside
        the claim's hold on SQLite's write turn, while every click and postback waited (BENCHMARKS.md,
        "Jobs for a paused source"). Safe to call from any thread."""
        claimed_at, paused = self._paused
        if time.monotonic() - claimed_at > _PAUSED_FRESH_SECONDS:
            return None
        probe_at = paused.get(source_id)
        return probe_at if probe_at is not None and probe_at > now else None

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=_STOP_GRACE_SECONDS)
        unfinished = dict(self._inflight)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(list(unfinished))
        if self._recorder is not None:
            await self._recorder
        for task, job in unfinished.items():
            if task.cancelled():
                with contextlib.suppress(Exception):
                    await self._in_db(self._release, job)
        self._executor.shutdown(wait=True)
        if self._turn is not None:
            self._turn.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction, in this dispatcher's write turn when it has one (SQLite)."""
        if self._turn is None:
            with self._db.begin() as connection:
                yield connection
            return
        with self._turn_lock:
            self._turn.take()
            try:
                with self._db.begin() as connection:
                    yield connection
            finally:
                self._turn.give_back()

    async def _in_db(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            free = 2 * self._config.concurrency - len(self._inflight)
            claimed: list[Job] = []
            wait = self._config.poll_seconds
            if free > 0:
                try:
                    claimed, next_due = await self._in_db(self._claim, free)
                    if next_due is not None:
                        wait = min(wait, max((next_due - self._clock()).total_seconds(), 0.0))
                except Exception:
                    log.exception("could not claim deliveries; trying again shortly")
                for job in claimed:
                    task = asyncio.create_task(self._deliver(job))
                    self._inflight[task] = job
                    task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue  # there may be more due right now
            try:
                # Not asyncio.wait_for: on Python 3.11 it drops a cancellation that lands in the loop
                # turn its wait ends in (a delivery recorded as the server stops), and stop() then
                # waited forever for a loop that went on claiming. asyncio.timeout never does.
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            except TimeoutError:
                continue
            # Woken (a job queued, an attempt recorded): let a burst gather so that one claim, one
            # transaction, takes many jobs rather than one each. Costs the lag a few milliseconds.
            await asyncio.sleep(_GATHER_SECONDS)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if self._wakeup is not None:
            self._wakeup.set()

    # Blocking steps, on the dispatcher's own threads.

    def _claim(self, limit: int) -> tuple[list[Job], datetime | None]:
        """Lease up to `limit` due jobs (probes of tripped sources first); also say when the next
        retry or probe comes due, so the loop can sleep until then.

        On PostgreSQL, while no source is paused or just resumed (the usual case), the claim's
        statements run alone (Database.alone): the breakers' read, then the claim, one statement
        atomic by itself, without BEGIN and COMMIT, two of a claim's four round trips. A probe
        needs its breaker's row held while it leases a job, and a resume its backlog moved in one
        go with the claim: those claims take a transaction, as every claim on SQLite does (its
        write turn)."""
        now = self._clock()
        lease_until = now + self._config.lease
        token = secrets.token_hex(8)
        claimed_at = time.monotonic()
        if self._turn is None:
            with self._db.alone() as connection:
                held = store.held_breakers(connection)
                resumed = self._resumed_since(held)
                quiet = not held and not resumed
                if quiet:
                    rows, upcoming = self._lease(connection, held, resumed, limit, now, lease_until, token)
            if not quiet:
                with self._db.begin() as connection:
                    rows, upcoming = self._lease(connection, held, resumed, limit, now, lease_until, token)
        else:
            with self._writing() as connection:
                held = store.held_breakers(connection)
                resumed = self._resumed_since(held)
                rows, upcoming = self._lease(connection, held, resumed, limit, now, lease_until, token)
        next_due = min((moment for moment in upcoming if moment is not None), default=None)
        self._paused = (
            claimed_at,
            {breaker.source_id: breaker.probe_at for breaker in held if breaker.probe_at is not None},
        )
        self.claims += 1
        jobs = [
            Job(
                delivery_id=row.delivery_id,
                source_id=SourceId(row.delivery_source_id),
                attempts=row.attempts,
                token=token,
                lease_until=lease_until,
                values=conversion_values(row._asdict(), row.delivery_source_id, row.conversion_status),
            )
            for row in rows
        ]
        return jobs, next_due

    def _lease(
        self,
        connection: Connection,
        held: Sequence[Row[Any]],
        resumed: list[int],
        limit: int,
        now: datetime,
        lease_until: datetime,
        token: str,
    ) -> tuple[list[Row[Any]], list[datetime | None]]:
        """The claim's work on `connection`, given the breakers held (not closed) and the sources
        resumed since the last claim: the jobs leased and the moments something comes due."""
        probes: list[int] = []
        unmoved = False  # a source's jobs left to reschedule: claim again at once to move them
        for breaker in held:
            if breaker.probe_at is not None and breaker.probe_at <= now and len(probes) < limit:
                probe = store.start_probe(
                    connection, breaker.source_id, now=now, probe_until=lease_until, token=token
                )
                if probe is not None:
                    probes.append(probe)
            elif breaker.probe_at is not None and breaker.probe_at > now:
                unmoved |= store.defer_source(connection, breaker.source_id, breaker.probe_at, now)
        for source_id in resumed:
            if store.make_source_due(connection, source_id, now):
                unmoved = True
                self._resumed[source_id] = time.monotonic()  # kept until all of them are due
        rows = list(store.jobs(connection, probes, now=now)) if probes else []
        claimed = store.Claimed([], None)
        if len(probes) < limit:
            claimed = store.claim_jobs(
                connection,
                now=now,
                limit=limit - len(probes),
                lease_until=lease_until,
                token=token,
                excluded_sources=[breaker.source_id for breaker in held],
            )
            rows += claimed.jobs
        # With every slot filled the loop claims again as soon as one frees: no need to know.
        upcoming = [claimed.next_due] if len(rows) < limit else []
        upcoming += [breaker.probe_at for breaker in held if breaker.probe_at and breaker.probe_at > now]
        upcoming += [now] if unmoved else []
        return rows, upcoming

    def _resumed_since(self, held: Sequence[Row[Any]]) -> list[int]:
        """Sources an earlier claim found paused and this one does not, again on every claim until
        twice _PAUSED_FRESH_SECONDS after the first (or after the last that left some of the
        source's jobs to make due: store.MOVED_PER_CLAIM): postbacks decided on the earlier claim's word may
        commit jobs queued for the old probe time after the resume made the waiting ones due (a job
        due late, never lost), and those are made due here. Called once per claim."""
        moment = time.monotonic()
        still = {breaker.source_id for breaker in held}
        for source_id in self._paused[1].keys() - still:
            self._resumed.setdefault(source_id, moment)
        resumed = [source_id for source_id in self._resumed if source_id not in still]
        # Forgotten once paused again, or after this claim if it came late enough.
        self._resumed = {
            source_id: seen
            for source_id, seen in self._resumed.items()
            if source_id not in still and moment - seen < 2 * _PAUSED_FRESH_SECONDS
        }
        return resumed

    def _fresh_rule(self, source_id: SourceId) -> PostbackRule | None:
        with self._db.begin() as connection:
            return fresh_postback_rule(connection, source_id)

    def _release(self, job: Job) -> None:
        with self._writing() as connection:
            store.release(connection, [job.delivery_id], job.token)

    def _record(self, finished: list[Attempt]) -> None:
        """Record finished attempts, many in one transaction of a few statements (as the click writer
        groups clicks): the attempts, the jobs' new states, then each source's breaker once."""
        now = self._clock()
        attempts, results = [], []
        for attempt in finished:
            attempts.append(self._attempt_row(attempt))
            results.append(self._result_values(attempt, now))
        answers: dict[SourceId, list[AttemptResult]] = {}
        for attempt in finished:
            if attempt.result.outcome is not AttemptOutcome.BLOCKED:  # says nothing of its health
                answers.setdefault(attempt.job.source_id, []).append(attempt.result)
        with self._writing() as connection:
            ours, breakers = store.record_attempts(connection, attempts, results, answers)
            self._update_breakers(connection, answers, breakers, now)
        if ours < len(finished):
            log.warning("%s delivery attempts ended after their leases ran out", len(finished) - ours)

    @staticmethod
    def _attempt_row(attempt: Attempt) -> dict[str, Any]:
        result = attempt.result
        return {
            "delivery_id": attempt.job.delivery_id,
            "attempted_at": attempt.started_at,
            "url": result.url or "(none)",
            "outcome": result.outcome.value,
            "status_code": result.status_code,
            "latency_ms": result.latency_ms,
            "error": (result.error or "")[:_ERROR_MAX] or None,
        }

    def _result_values(self, attempt: Attempt, now: datetime) -> dict[str, Any]:
        job, result = attempt.job, attempt.result
        attempts = job.attempts + 1
        next_at: datetime | None = None
        delivered_at: datetime | None = None
        if result.outcome is AttemptOutcome.DELIVERED:
            status, delivered_at = DeliveryStatus.DELIVERED, now
        elif result.outcome is AttemptOutcome.BLOCKED:
            status = DeliveryStatus.BLOCKED
        elif result.outcome is AttemptOutcome.REJECTED:
            status = DeliveryStatus.DEAD  # the receiver said no: asking again would not change it
        else:
            next_at = self._schedule.next_attempt(attempts, now)
            status = DeliveryStatus.PENDING if next_at is not None else DeliveryStatus.DEAD
        return {
            "id": job.delivery_id,
            "token": job.token,
            "status": status.value,
            "attempts": attempts,
            "next_attempt_at": next_at,
            "last_error": None if status is DeliveryStatus.DELIVERED else result.error,
            "updated_at": now,
            "delivered_at": delivered_at,
        }

    def _update_breakers(
        self,
        connection: Connection,
        answers: dict[SourceId, list[AttemptResult]],
        breakers: Sequence[Any],
        now: datetime,
    ) -> None:
        """Apply a batch's answers (by source, in the order they came) to each source's breaker, read
        unlocked in `breakers`. A source whose breaker is closed and clean and which only answered
        needs no write (the usual case); the others are read again, locked."""
        current = {row.source_id: row for row in breakers}
        for source_id in sorted(answers):
            row = current.get(source_id)
            clean = row is None or (row.state == BreakerState.CLOSED and row.failures == 0)
            if clean and all(_answered(result) for result in answers[source_id]):
                continue
            self._update_breaker(connection, source_id, answers[source_id], now)

    def _update_breaker(
        self, connection: Connection, source_id: SourceId, results: list[AttemptResult], now: datetime
    ) -> None:
        before = Breaker.from_row(store.get_breaker(connection, source_id), source_id)  # locked
        after = before
        for result in results:
            if _answered(result):
                after = self._breakers.after_success(after)
            else:
                after = self._breakers.after_failure(after, result.error or "failed", now)
        if after == before:
            return
        if before.state is not BreakerState.CLOSED and after.state is BreakerState.CLOSED:
            log.info("source %s: delivering again, the circuit breaker closed", source_id)
            store.make_source_due(connection, source_id, now)
        elif before.state is BreakerState.CLOSED and after.state is BreakerState.OPEN:
            log.warning("source %s: deliveries paused after %s failures", source_id, after.failures)
        store.save_breaker(connection, source_id, {**after.values(), "updated_at": now})

    # The attempt itself, on the event loop.

    async def _deliver(self, job: Job) -> None:
        # Hold the slot until the result is stored: what a crash can make us send again stays within
        # the concurrency limit.
        async with self._sending:
            if self._clock() + self._config.longest_attempt >= job.lease_until:
                # It waited too long for a slot (a receiver hanging): another worker may take it once
                # the lease ends, so sending now could make two attempts at once. Give it back.
                try:
                    await self._in_db(self._release, job)
                except Exception:
                    log.exception("could not give delivery %s back; its lease will end", job.delivery_id)
                return
            await self._attempt(job)

    async def _attempt(self, job: Job) -> None:
        started_at = self._clock()
        rule = self._snapshot().postback_rules.get(job.source_id)
        if rule is None:
            # The source may have got its URL on another worker a moment ago: ask the database.
            rule = await self._in_db(self._fresh_rule, job.source_id)
        if rule is None:
            result = AttemptResult(
                "", AttemptOutcome.BLOCKED, error="the source has no postback URL (any more)"
            )
        else:
            url = postback_url(rule.url, job.values)
            try:
                result = await self._sender.send(url)
            except Exception as exc:
                log.exception("delivery %s: the attempt failed unexpectedly", job.delivery_id)
                result = AttemptResult(url, AttemptOutcome.FAILED, error=f"internal error: {exc!r}")
        recorded = asyncio.get_running_loop().create_future()
        self._finished_attempts.append(Attempt(job, result, started_at, recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_finished())
        await recorded

    async def _record_finished(self) -> None:
        while self._finished_attempts:
            batch, self._finished_attempts = self._finished_attempts, []
            try:
                await self._in_db(self._record, batch)
            except Exception:
                # Their leases run out and other attempts follow: at least once, never lost.
                log.exception("could not record %s delivery attempts", len(batch))
            for attempt in batch:
                if not attempt.recorded.done():
                    attempt.recorded.set_result(None)
            if self._wakeup is not None:
                self._wakeup.set()  # their retries are scheduled now: plan the next sleep with them
