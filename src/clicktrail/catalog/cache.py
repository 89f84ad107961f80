"""The catalog snapshot each worker serves from, refreshed when any worker changes the catalog."""

from clicktrail.catalog.routes import CatalogSnapshot, Route, load_snapshot
from clicktrail.storage import catalog_store
from clicktrail.storage.database import Database


class CatalogCache:
    def __init__(self, database: Database) -> None:
        self._db = database
        self.snapshot = CatalogSnapshot()

    def reload(self) -> None:
        with self._db.begin() as connection:
            self.snapshot = load_snapshot(connection)

    def reload_if_changed(self) -> bool:
        """One small read of the catalog version; the full reload only when another worker changed it.

        Also called on an unknown tracking key, which may be a campaign created a moment ago on
        another worker: the visitor must get the redirect, not a 404, and a flood of random keys
        costs one indexed read each, never a reload."""
        with self._db.begin() as connection:
            version = catalog_store.catalog_version(connection)
        if version == self.snapshot.version:
            return False
        self.reload()
        return True

    def route(self, key: str) -> Route | None:
        return self.snapshot.routes.get(key)
