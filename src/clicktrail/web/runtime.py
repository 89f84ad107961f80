"""Everything a running server holds: built once per process from Settings, started and stopped by
the app's lifespan."""

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from clicktrail.accounts.service import Accounts
from clicktrail.bootstrap import AdminTokenCheck, prepare
from clicktrail.catalog.cache import CatalogCache
from clicktrail.catalog.caps import CapBook
from clicktrail.catalog.service import Catalog
from clicktrail.clicks.enrichment import Enricher
from clicktrail.config import Settings
from clicktrail.conversions.decision import Outcome
from clicktrail.conversions.intake import PostbackIntake, RawPostback
from clicktrail.delivery.breaker import BreakerPolicy
from clicktrail.delivery.dispatcher import Dispatcher, DispatcherConfig
from clicktrail.delivery.guard import HostGuard
from clicktrail.delivery.schedule import RetrySchedule
from clicktrail.delivery.sender import PostbackSender
from clicktrail.delivery.wakeup import QueuedBell
from clicktrail.reports import remote
from clicktrail.reports.result import ReportEngine
from clicktrail.reports.segments import SegmentStore
from clicktrail.storage import inserts
from clicktrail.storage.batch import GroupCommitWriter, Staged
from clicktrail.storage.database import Database
from clicktrail.types import Clock, utc_now

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, *, clock: Clock = utc_now, migrate: bool = False) -> None:
        self.settings = settings
        self.clock = clock
        self.database = Database(settings.sqlalchemy_url)
        installation = prepare(settings, self.database, migrate=migrate)
        self.codec = installation.codec
        self.key = installation.key
        self.cache = CatalogCache(self.database)
        self.caps = CapBook()
        self.guard = HostGuard.from_settings(settings)
        self.enricher = Enricher.from_settings(settings)
        self.catalog = Catalog(self.database, clock, check_postback_url=self.guard.check_url)
        self.tokens = AdminTokenCheck(settings, self.database)
        self.accounts = Accounts(self.database, clock)
        self.clicks: GroupCommitWriter[dict[str, Any], None] = GroupCommitWriter(
            self._commit_clicks,
            batch_size=settings.click_batch_size,
            queue_limit=settings.click_queue_limit,
            name="click-writer",
            on_loop=True,  # measured on both backends: BENCHMARKS.md, "Comparisons"
            cooperative=self.database.cooperative,
            turn=self.database.write_turn(),
        )
        self.sender = PostbackSender.from_settings(settings, self.guard)
        self.dispatcher = Dispatcher(
            self.database,
            lambda: self.cache.snapshot,
            self.sender,
            config=DispatcherConfig.from_settings(settings),
            schedule=RetrySchedule.from_settings(settings),
            breakers=BreakerPolicy.from_settings(settings),
            clock=clock,
            turn=self.database.write_turn(),
        )
        # Rings after each commit that queued outbound postbacks: wakes this process's dispatcher and,
        # on PostgreSQL, every other one (docs/delivery.md, "Fast").
        self.bell = QueuedBell(self.database, listen=settings.delivery_enabled)
        self.bell.subscribe(self.dispatcher.wake)
        self.postbacks = PostbackIntake(
            self.database,
            self.codec,
            lambda: self.cache.snapshot,
            clock,
            self.bell.ring,
            held_until=self.dispatcher.held_until,
        )
        self.postback_writer: GroupCommitWriter[RawPostback, Outcome] = GroupCommitWriter(
            self._commit_postbacks,
            batch_size=settings.postback_batch_size,
            queue_limit=settings.postback_queue_limit,
            name="postback-writer",
            # As for clicks, on both backends: a batch in a thread took the GIL from the loop at every
            # step of its round trips (BENCHMARKS.md, "CPU per request" and "Session of 2026-12-06").
            on_loop=True,
            cooperative=self.database.cooperative,
            turn=self.database.write_turn(),
            # On SQLite a batch is read and decided before the turn, written in it: the workers no
            # longer take turns to decide (BENCHMARKS.md, "Session of 2026-12-07").
            prepare=self.postbacks.prepare_batch if self.database.is_sqlite else None,
        )
        # The report feed and the report engine run in processes of their own (cli.py), not here.
        self.segments = SegmentStore(settings.analytics_path())
        self._reports: ReportEngine | None = None
        self._reports_lock = threading.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._cap_counter: asyncio.Task[None] | None = None

    def _commit_clicks(self, rows: Sequence[dict[str, Any]]) -> Staged[None]:
        """Insert the batch on the loop; the commit (SQLite's fsync) is left to the writer's thread.
        On PostgreSQL the batch is one COPY, run as its own transaction (run_alone): it answers once
        committed, with the WAL flushed, and the loop waits for it cooperatively (storage/batch.py)."""
        done: list[None] = [None] * len(rows)
        if not self.database.is_sqlite:
            self.database.run_alone(lambda connection: inserts.insert_clicks(connection, rows))
            return Staged(done)
        _, commit = self.database.stage(lambda connection: inserts.insert_clicks(connection, rows))
        return Staged(done, commit)

    def _commit_postbacks(self, raws: Sequence[RawPostback]) -> Staged[Outcome]:
        """Decide and write the batch on the loop; the commit as for clicks."""
        return self.postbacks.prepare_batch(raws).write()

    @property
    def reports(self) -> ReportEngine:
        """The report engine: under `clicktrail serve`, the report engine process (reports/remote.py),
        so a worker never holds DuckDB's memory; otherwise (an app built in a test, a script) DuckDB
        in this process, built by its first report."""
        with self._reports_lock:  # reports run in threads: two first reports must not build two
            if self._reports is None:
                address = os.environ.get(remote.ADDRESS_VARIABLE)
                if address:
                    self._reports = remote.RemoteReports(address, self.settings.report_timeout_seconds)
                else:
                    from clicktrail.reports.engine import DuckDbReports

                    limit = self.settings.report_memory_limit
                    self._reports = DuckDbReports(self.segments, memory_limit=limit)
            return self._reports

    async def start(self) -> None:
        await asyncio.to_thread(self.cache.reload)
        self._poller = asyncio.create_task(self._watch_catalog())
        await asyncio.to_thread(self.count_caps)
        self._cap_counter = asyncio.create_task(self._watch_caps())
        await self.sender.open()
        if self.settings.delivery_enabled:
            await self.dispatcher.start()
        await self.bell.start()
        # Everything built so far (modules, parsers' tables, the catalog) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it under load.
        gc.freeze()

    async def _watch_catalog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_seconds)
            try:
                await asyncio.to_thread(self.cache.reload_if_changed)
            except Exception:
                log.exception("could not refresh the catalog; serving the last snapshot")

    def count_caps(self) -> None:
        """Read today's conversions of the capped offers (none capped: no query)."""
        capped = self.cache.snapshot.capped_offers()
        if capped:
            self.caps.refresh(self.database, capped, self.clock())

    async def _watch_caps(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cap_refresh_seconds)
            try:
                await asyncio.to_thread(self.count_caps)
            except Exception:
                log.exception("could not count capped offers' conversions; keeping the last counts")

    def catalog_changed(self) -> None:
        """This process changed the catalog: serve the change at once, not at the next poll."""
        self.cache.reload()

    async def stop(self) -> None:
        await self.bell.stop()
        await self.dispatcher.stop()
        await self.sender.close()
        for task in (self._poller, self._cap_counter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for writer in (self.clicks, self.postback_writer):
            await writer.drain()
            writer.close()
        self.enricher.geo.close()
        self.database.dispose()
