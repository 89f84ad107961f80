"""Everything a running server holds: built once per process from Settings, started and stopped by
the app's lifespan."""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from clicktrail.bootstrap import AdminTokenCheck, prepare
from clicktrail.catalog.cache import CatalogCache
from clicktrail.catalog.service import Catalog
from clicktrail.config import Settings
from clicktrail.conversions.intake import PostbackIntake
from clicktrail.storage import event_store
from clicktrail.storage.batch import GroupCommitWriter
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
        self.cache = CatalogCache(self.database)
        self.catalog = Catalog(self.database, clock)
        self.tokens = AdminTokenCheck(settings, self.database)
        self.clicks: GroupCommitWriter[dict[str, Any]] = GroupCommitWriter(
            self._commit_clicks,
            batch_size=settings.click_batch_size,
            queue_limit=settings.click_queue_limit,
            name="click-writer",
            on_loop=self.database.is_sqlite,  # measured: BENCHMARKS.md, "commit placement"
        )
        self.postbacks = PostbackIntake(self.database, self.codec, lambda: self.cache.snapshot, clock)
        self._poller: asyncio.Task[None] | None = None

    def _commit_clicks(self, rows: Sequence[dict[str, Any]]) -> None:
        with self.database.begin() as connection:
            event_store.insert_clicks(connection, rows)

    async def start(self) -> None:
        await asyncio.to_thread(self.cache.reload)
        self._poller = asyncio.create_task(self._watch_catalog())

    async def _watch_catalog(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_seconds)
            try:
                await asyncio.to_thread(self.cache.reload_if_changed)
            except Exception:
                log.exception("could not refresh the catalog; serving the last snapshot")

    def catalog_changed(self) -> None:
        """This process changed the catalog: serve the change at once, not at the next poll."""
        self.cache.reload()

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.clicks.drain()
        self.clicks.close()
        self.database.dispose()
