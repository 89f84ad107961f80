"""Schema changes go through migrations: upgrading an empty database yields exactly the schema the
code declares, on SQLite and on PostgreSQL, and upgrading twice is harmless."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import String, text
from sqlalchemy.dialects import postgresql

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


@pytest.mark.postgres
def test_postgres_compares_the_declared_keys_byte_by_byte(tmp_path: Path) -> None:
    """Alembic's comparison above does not look at collations: every column the schema declares
    with one (key_text: IDs, events, transaction IDs, states) must have it in a migrated database."""
    on_postgres = postgresql.dialect()  # type: ignore[no-untyped-call]
    declared = {
        (table.name, column.name): getattr(column.type.dialect_impl(on_postgres), "collation", None)
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String)
    }
    wanted = {key: collation for key, collation in declared.items() if collation}
    assert ("clicks", "click_id") in wanted
    assert ("conversions", "txid") in wanted
    with fresh_database("postgres", tmp_path) as url:
        database = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(database.engine)
        with database.engine.connect() as connection:
            found = {
                (row.table_name, row.column_name): row.collation_name
                for row in connection.execute(
                    text(
                        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                        "WHERE table_schema = current_schema()"
                    )
                )
            }
        database.dispose()
    assert {key: found[key] for key in wanted} == wanted
    assert all(found[key] is None for key in declared.keys() - wanted.keys())
