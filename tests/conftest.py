from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ServerProcess, Tracker, fresh_database, start_server


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
