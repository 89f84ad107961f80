from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clicktrail.compiled import stale_compiled
from clicktrail.config import Settings
from clicktrail.web.runtime import Runtime
from tests.delivery_support import DELIVERY_ENV
from tests.receivers import Receiver
from tests.support import SECRET_KEY, ServerProcess, Tracker, fresh_database, start_server


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_compiled()
    if stale:
        pytest.exit(
            f"compiled modules older than their sources ({', '.join(stale)}): the tests would run the "
            "old code. `make compile` builds them again (`make test` does it first).",
            returncode=4,
        )


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server per backend, shared by the tests that only add their own offers and campaigns."""
    directory = tmp_path_factory.mktemp(f"server-{backend}")
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory)
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def tracker(server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(server)
    yield client
    client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def delivery_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that delivers outbound postbacks on a short schedule, allowing 127.0.0.1."""
    directory = tmp_path_factory.mktemp(f"delivery-{backend}")
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory, extra_env=DELIVERY_ENV)
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def pb(delivery_server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(delivery_server)
    yield client
    client.close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Start receivers: receiver() answers 200; receiver(fail_first=2), (hang=True), (redirect=True)…"""
    started: list[Receiver] = []

    def start(**behaviour: Any) -> Receiver:
        started.append(Receiver(**behaviour))
        return started[-1]

    yield start
    for each in started:
        each.close()


@pytest.fixture
def runtime(backend: str, tmp_path: Path) -> Iterator[Runtime]:
    """The tracker's services on a fresh, migrated database of `backend`, without a server."""
    with fresh_database(backend, tmp_path) as url:
        runtime = Runtime(
            Settings(database_url=url, secret_key=SECRET_KEY, analytics_dir=tmp_path / "analytics"),
            migrate=True,
        )
        yield runtime
        runtime.database.dispose()
