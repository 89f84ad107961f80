"""A fresh, migrated database for the outbox measurement scripts (claim_times.py, outbox_moves.py):
SQLite in a temporary directory, or with --postgres a fresh database on CLICKTRAIL_TEST_POSTGRES_URL's
server, made as the tests make theirs. Touches 127.0.0.1 only."""

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import fresh_database  # a fresh database per backend, as the tests make


def add_postgres_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postgres", action="store_true", help="use CLICKTRAIL_TEST_POSTGRES_URL's server")


@contextmanager
def scratch_database(parser: argparse.ArgumentParser, postgres: bool, prefix: str) -> Iterator[Database]:
    """The database, migrated; dropped (or its directory removed) afterwards. A missing server URL
    is the command line's error."""
    if postgres and not os.environ.get("CLICKTRAIL_TEST_POSTGRES_URL"):
        parser.error("--postgres needs CLICKTRAIL_TEST_POSTGRES_URL")
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        fresh_database("postgres" if postgres else "sqlite", Path(tmp)) as url,
    ):
        database = Database(url)
        upgrade(database.engine)
        try:
            yield database
        finally:
            database.dispose()
