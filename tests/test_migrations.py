"""Schema changes go through migrations: upgrading an empty database yields exactly the schema the
code declares, on SQLite and on PostgreSQL, and upgrading twice is harmless."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from clicktrail.config import Settings
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from clicktrail.storage.schema import metadata
from tests.support import fresh_database


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migrations_create_the_declared_schema(backend: str, tmp_path: Path) -> None:
    with fresh_database(backend, tmp_path) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        upgrade(database.engine)
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
        database.dispose()
    assert differences == []
