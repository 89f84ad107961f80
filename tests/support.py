"""Test support: real databases (a fresh SQLite file, a fresh PostgreSQL database) and a real server
process started with `clicktrail serve`, driven over HTTP."""

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from clicktrail.ids import ClickIdCodec

ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-for-click-ids"
POSTGRES_ENV = "CLICKTRAIL_TEST_POSTGRES_URL"
CATALOG_POLL_SECONDS = 0.2  # how often test servers look for catalog changes


def codec() -> ClickIdCodec:
    """The codec the test servers use (they share SECRET_KEY), to mint IDs as the server would."""
    return ClickIdCodec(hashlib.sha256(SECRET_KEY.encode()).digest())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://… (CI sets it; .ci/run shows how)")
    try:
        with psycopg.connect(url, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        # When the variable is set (always in CI) an unreachable server is a failure, never a skip.
        pytest.fail(f"{POSTGRES_ENV} is set but PostgreSQL cannot be reached: {exc}")
    return url


@contextmanager
def fresh_postgres_database(encoding: str | None = None) -> Iterator[str]:
    """A new database on the test server, dropped afterwards; in `encoding` (with the C locale) if
    given, else the server's default."""
    admin = postgres_admin_url()
    name = f"clicktrail_test_{secrets.token_hex(6)}"
    options = f" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" if encoding else ""
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"{options}')
    parts = urlsplit(admin)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'clicktrail.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@dataclass
class ServerProcess:
    base_url: str
    database_url: str
    process: subprocess.Popen[str]
    log_path: Path
    log_file: IO[str]
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20, *, group: bool = False) -> int:
        """Send `sig` (to the whole process group, workers included, when `group`) and wait for the exit."""
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the server did not stop within {timeout}s:\n{self.log()}") from None
        finally:
            self.log_file.close()


def start_server(
    database_url: str,
    directory: Path,
    *,
    workers: int | None = 1,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    own_process_group: bool = False,
) -> ServerProcess:
    """Start `clicktrail serve` and wait for /health. `workers=None` keeps the command's default;
    `own_process_group` lets `stop(group=True)` signal every worker at once (as an OOM kill would)."""
    port = free_port()
    env = {
        **os.environ,
        "CLICKTRAIL_DATABASE_URL": database_url,
        "CLICKTRAIL_ADMIN_TOKEN": ADMIN_TOKEN,
        "CLICKTRAIL_SECRET_KEY": SECRET_KEY,
        "CLICKTRAIL_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CLICKTRAIL_CATALOG_REFRESH_SECONDS": str(CATALOG_POLL_SECONDS),
        # Reports see events within a second in tests (15 s lag by default).
        "CLICKTRAIL_ANALYTICS_LAG_SECONDS": "0.5",
        "CLICKTRAIL_ANALYTICS_INTERVAL_SECONDS": "0.25",
        # Every test shares the admin token and 127.0.0.1: no rate limits, except on the servers
        # tests/test_rate_limits.py starts to test them.
        "CLICKTRAIL_API_RATE_PER_MINUTE": "0",
        "CLICKTRAIL_API_IP_RATE_PER_MINUTE": "0",
        "CLICKTRAIL_AUTH_FAILURES_PER_MINUTE": "0",
        "CLICKTRAIL_SIGN_IN_PER_MINUTE": "0",
        **(extra_env or {}),
    }
    env = {name: value for name, value in env.items() if value != ""}
    log_path = directory / f"server-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clicktrail.cli",
            "serve",
            "--port",
            str(port),
            *(("--workers", str(workers)) if workers is not None else ()),
            *args,
        ],
        env=env,
        cwd=directory,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_process_group,
    )
    server = ServerProcess(f"http://127.0.0.1:{port}", database_url, process, log_path, log_file, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL, group=own_process_group)
    raise AssertionError(f"the server did not answer /health within 30s:\n{server.log()}")


class Tracker:
    """A user of a running clicktrail: the admin API, tracking links and the postback URL."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False)
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def close(self) -> None:
        self.http.close()

    def api(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return self.http.request(
            method, f"/api/v1{path}", headers={**self.admin, **(headers or {})}, **kwargs
        )

    def create(self, noun: str, **fields: Any) -> dict[str, Any]:
        response = self.api("POST", f"/{noun}", json=fields)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def campaign(
        self, *, url: str = "https://merchant.example/land?cid={click_id}&s1={sub1}", **offer: Any
    ) -> dict[str, Any]:
        """A fresh offer, source and campaign; returns the campaign with `offer` and `source` added."""
        offer_fields = {"name": "Offer", "url": url, "revenue": "10.00", "payout": "4.00", **offer}
        created_offer = self.create("offers", **offer_fields)
        source = self.create("sources", name="Source")
        campaign = self.create(
            "campaigns", name="Campaign", source_id=source["id"], offer_id=created_offer["id"]
        )
        return {**campaign, "offer": created_offer, "source": source}

    def click(self, key: str, **params: str) -> str:
        """Follow a tracking link; return the click ID found in the redirect."""
        response = self.http.get(f"/c/{key}", params=params)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        return query["cid"][0]

    def postback(self, **params: str) -> httpx.Response:
        return self.http.get("/postback", params=params)


def a_pid_nobody_has() -> int:
    """A process ID no process has now (for a directory "left by a dead server")."""
    for pid in range(4_000_000, 3_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("every pid is taken")
