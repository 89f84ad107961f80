"""The catalog snapshot each worker serves from, refreshed when any worker changes the catalog."""

import time

from clicktrail.catalog.routes import CatalogSnapshot, Route, load_snapshot
from clicktrail.storage import catalog_store
from clicktrail.storage.database import Database

# A miss on an unknown key may mean the campaign was created a moment ago by another worker;
# reload then, but not more often than this, so random keys cannot turn into a reload storm.
MISS_RELOAD_INTERVAL = 0.25


class CatalogCache:
    def __init__(self, database: Database) -> None:
        self._db = database
        self.snapshot = CatalogSnapshot()
        self._loaded_at = 0.0

    def reload(self) -> None:
        with self._db.begin() as connection:
            self.snapshot = load_snapshot(connection)
        self._loaded_at = time.monotonic()

    def reload_if_changed(self) -> bool:
        with self._db.begin() as connection:
            version = catalog_store.catalog_version(connection)
        if version == self.snapshot.version:
            return False
        self.reload()
        return True

    def route(self, key: str) -> Route | None:
        return self.snapshot.routes.get(key)

    def worth_reloading_for_miss(self) -> bool:
        return time.monotonic() - self._loaded_at > MISS_RELOAD_INTERVAL
