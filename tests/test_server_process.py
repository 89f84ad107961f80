"""The server as a process: several workers on one SQLite file, a clean SIGTERM, first-start set-up."""

import contextlib
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from clicktrail.cli import MOST_AUTO_WORKERS
from clicktrail.config import Settings
from clicktrail.storage.database import Database
from clicktrail.web.app import COLLECTION_THRESHOLD, collect_garbage_less_often
from tests.support import Tracker, free_port, fresh_database, start_server
from tests.test_durability import HalfSentPostback


def _stored_click_ids(database_url: str) -> set[str]:
    database = Database(Settings(database_url=database_url).sqlalchemy_url)
    with database.begin() as connection:
        ids = {row[0] for row in connection.exec_driver_sql("SELECT click_id FROM clicks")}
    database.dispose()
    return ids


def _click_id(response: httpx.Response) -> str:
    """The click ID in a redirect: tests' offers carry it as `cid`, the demo offer as `click_id`."""
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return (query.get("cid") or query["click_id"])[0]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_workers_share_one_database_and_store_every_redirected_click(
    backend: str, tmp_path: Path
) -> None:
    with fresh_database(backend, tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        try:
            tracker = Tracker(server)
            campaign = tracker.campaign()
            with httpx.Client(base_url=server.base_url, timeout=10) as client, ThreadPoolExecutor(16) as pool:
                responses = list(
                    pool.map(
                        lambda n: client.get(f"/c/{campaign['key']}", params={"sub1": str(n)}), range(400)
                    )
                )
            assert {r.status_code for r in responses} == {302}
            redirected = {_click_id(r) for r in responses}
            assert len(redirected) == 400
            assert redirected <= _stored_click_ids(url)
            # A campaign created through one worker works at once whichever worker takes the click.
            fresh = [tracker.campaign() for _ in range(3)]
            for created in fresh:
                for _ in range(4):
                    assert httpx.get(created["tracking_url"]).status_code == 302
            tracker.close()
        finally:
            assert server.stop() == 0, server.log()


def _sockets_on(port: int) -> dict[int, str]:
    """Socket inodes on 127.0.0.1:`port` from /proc/net/tcp, with their state (0A listening,
    01 established)."""
    local = f":{port:04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return {int(row[9]): row[3] for row in rows if row[1].endswith(local)}


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def test_each_worker_listens_on_its_own_socket_and_takes_a_share_of_the_connections(tmp_path: Path) -> None:
    """With one shared socket, the first worker awake accepted a whole burst of keep-alive
    connections and the other idled; with a socket per worker the kernel spreads them."""
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        port = int(server.base_url.rsplit(":", 1)[1])
        try:
            deadline = time.monotonic() + 30
            while list(_sockets_on(port).values()).count("0A") < 2:
                assert time.monotonic() < deadline, "two workers did not both listen"
                time.sleep(0.1)
            connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
            for connection in connections:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                assert connection.recv(65536).startswith(b"HTTP/1.1 200")
            sockets = _sockets_on(port)
            children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
            workers = [pid for pid in map(int, children.read_text().split()) if _socket_inodes(pid) & {
                inode for inode, state in sockets.items() if state == "0A"}]  # fmt: skip
            assert len(workers) == 2
            served = [sum(sockets.get(inode) == "01" for inode in _socket_inodes(pid)) for pid in workers]
            assert sum(served) == 40
            assert min(served) > 0, f"one worker took every connection: {served}"
            assert not _socket_inodes(server.process.pid) & set(sockets), "the supervisor kept a socket"
            for connection in connections:
                connection.close()
            # A second server on the port is refused rather than let into the workers' socket group.
            second = subprocess.run(
                [sys.executable, "-m", "clicktrail.cli", "serve", "--port", str(port), "--workers", "2"],
                env=server.env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert second.returncode == 3, second.stdout + second.stderr
            assert "cannot listen on" in second.stdout + second.stderr
            assert "Traceback" not in second.stdout + second.stderr
        finally:
            assert server.stop() == 0, server.log()


def test_by_default_the_server_runs_one_worker_per_cpu(tmp_path: Path) -> None:
    expected = max(1, min(len(os.sched_getaffinity(0)), MOST_AUTO_WORKERS))
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, workers=None)
        port = int(server.base_url.rsplit(":", 1)[1])
        try:
            deadline = time.monotonic() + 30
            while list(_sockets_on(port).values()).count("0A") < expected:
                assert time.monotonic() < deadline, f"{expected} workers did not all listen"
                time.sleep(0.1)
            time.sleep(0.5)  # long enough for a surplus worker to open its socket as well
            assert list(_sockets_on(port).values()).count("0A") == expected
        finally:
            assert server.stop() == 0, server.log()


def test_a_worker_count_that_is_not_a_number_is_a_one_line_error(tmp_path: Path) -> None:
    for wrong, reason in (("0", "at least 1"), ("many", "a number or auto")):
        answer = subprocess.run(
            [sys.executable, "-m", "clicktrail.cli", "serve", "--workers", wrong],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert answer.returncode == 2
        assert reason in answer.stderr
        assert "Traceback" not in answer.stderr


# Connections the server closes at shutdown leave httpcore sockets that Python reports as unclosed
# in the test process: client-side noise, not a server behaviour under test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_drains_in_flight_clicks_and_exits_cleanly(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path)
        tracker = Tracker(server)
        campaign = tracker.campaign()
        tracker.close()
        redirected: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        response = client.get(f"/c/{campaign['key']}")
                    except httpx.TransportError:
                        return  # the server has stopped listening
                    if response.status_code == 302:
                        redirected.append(_click_id(response))

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        while len(redirected) < 200:
            threading.Event().wait(0.01)
        exit_code = server.stop(signal.SIGTERM)
        stop.set()
        for thread in threads:
            thread.join()

        assert exit_code == 0, server.log()
        assert "Traceback" not in server.log()
        assert set(redirected) <= _stored_click_ids(url)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_with_several_workers_sigterm_refuses_new_connections_at_once_and_drains_the_rest(
    tmp_path: Path,
) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, workers=2)
        tracker = Tracker(server)
        click_id = tracker.click(tracker.campaign()["key"])
        tracker.close()
        in_flight = HalfSentPostback(server.base_url, click_id, "draining")
        threading.Event().wait(0.3)  # the worker has read the request's head

        parts = urlsplit(server.base_url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        server.process.send_signal(signal.SIGTERM)
        refused_after = None
        for attempt in range(50):  # a new connection is refused, not left waiting in the backlog
            threading.Event().wait(0.1)
            try:
                with socket.create_connection(address, timeout=1) as probe:
                    probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    probe.recv(1)
            except ConnectionRefusedError:
                refused_after = attempt
                break
            except OSError:
                continue
        status, answer = in_flight.finish()

        assert refused_after is not None, "the port still accepted connections 5 s after SIGTERM"
        assert (status, answer["result"]) == (200, "accepted")
        assert server.stop() == 0, server.log()


def _serve_briefly(tmp_path: Path, env: dict[str, str]) -> str:
    """Start `clicktrail serve --demo` in tmp_path, wait until it listens and has printed its links
    (once it answers: a moment after /health first does), stop it; return its output."""
    server = start_server(
        f"sqlite:///{tmp_path / 'data' / 'clicktrail.db'}", tmp_path, extra_env=env, args=("--demo",)
    )
    deadline = time.monotonic() + 30
    while "postback URL:" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()
    return server.log()


def test_first_start_prints_a_token_once_and_a_ready_tracking_link(tmp_path: Path) -> None:
    no_token = {"CLICKTRAIL_ADMIN_TOKEN": "", "CLICKTRAIL_SECRET_KEY": ""}
    first = _serve_briefly(tmp_path, no_token)
    token = next(
        line.split(": ", 1)[1] for line in first.splitlines() if line.startswith("admin token (shown")
    )
    link = next(
        line.split(": ", 1)[1].strip() for line in first.splitlines() if line.startswith("tracking link")
    )

    second = _serve_briefly(tmp_path, no_token)
    assert token not in second
    assert "admin token: printed on first start" in second

    server = start_server(f"sqlite:///{tmp_path / 'data' / 'clicktrail.db'}", tmp_path, extra_env=no_token)
    try:
        authorised = httpx.get(
            f"{server.base_url}/api/v1/offers", headers={"Authorization": f"Bearer {token}"}
        )
        assert authorised.status_code == 200
        key = urlsplit(link).path.rsplit("/", 1)[1]
        assert httpx.get(f"{server.base_url}/c/{key}").status_code == 302
        # The generated secret key persisted: IDs minted before a restart still verify after it.
        click = httpx.get(f"{server.base_url}/c/{key}")
        assert (
            httpx.get(f"{server.base_url}/postback", params={"click_id": _click_id(click)}).status_code == 200
        )
        # A token reset while serving takes effect without a restart.
        reset = subprocess.run(
            [sys.executable, "-m", "clicktrail.cli", "tokens", "reset"],
            env=server.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        new_token = reset.stdout.strip().rsplit(" ", 1)[1]
        threading.Event().wait(2.1)
        new_auth = {"Authorization": f"Bearer {new_token}"}
        assert httpx.get(f"{server.base_url}/api/v1/offers", headers=new_auth).status_code == 200
        old_auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.base_url}/api/v1/offers", headers=old_auth).status_code == 401
    finally:
        server.stop()


def test_the_printed_tracking_link_answers_the_moment_it_is_printed(tmp_path: Path) -> None:
    """`make run` prints a ready tracking link: a script that follows it as soon as it appears (as the
    README invites) gets its 302, not a refused connection from workers still starting. The token,
    shown once, is printed before the server starts listening, so a server that fails to start
    cannot take it with it."""
    port = free_port()
    env = {**os.environ, "CLICKTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'clicktrail.db'}"}
    env = {
        name: value
        for name, value in env.items()
        if name not in ("CLICKTRAIL_ADMIN_TOKEN", "CLICKTRAIL_SECRET_KEY")
    }
    command = [
        sys.executable,
        "-m",
        "clicktrail.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        printed: list[str] = []
        for line in process.stdout:
            printed.append(line)
            if line.startswith("tracking link: "):
                link = line.split(": ", 1)[1].strip()
                status = httpx.get(link).status_code  # at once: no retry, no wait
                break
        else:
            raise AssertionError(f"no tracking link printed: {printed}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert status == 302
    token_line = next(number for number, line in enumerate(printed) if line.startswith("admin token (shown"))
    assert token_line < len(printed) - 1


def test_a_bad_setting_is_a_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clicktrail.cli", "migrate"],
        env={"CLICKTRAIL_DATABASE_URL": "mysql://nope", "PATH": "/usr/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "CLICKTRAIL_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_trusted_proxies_decide_whose_forwarded_for_is_believed(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, extra_env={"CLICKTRAIL_TRUSTED_PROXIES": "127.0.0.0/8"})
        try:
            tracker = Tracker(server)
            campaign = tracker.campaign()
            response = tracker.http.get(f"/c/{campaign['key']}", headers={"X-Forwarded-For": "198.51.100.7"})
            click = tracker.api("GET", f"/clicks/{_click_id(response)}").json()
            assert click["ip"] == "198.51.100.7"
            tracker.close()
        finally:
            server.stop()


def test_forwarded_for_is_ignored_by_default(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    response = tracker.http.get(f"/c/{campaign['key']}", headers={"X-Forwarded-For": "198.51.100.7"})
    assert tracker.api("GET", f"/clicks/{_click_id(response)}").json()["ip"] == "127.0.0.1"


def test_a_worker_does_not_run_the_garbage_collector_for_a_wave_of_requests_in_flight() -> None:
    """Each request in flight holds a few dozen container objects until its commit; a worker's
    collector must not walk them all every few dozen requests (web/app.py), yet still run at all."""
    before = gc.get_threshold()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    try:
        collect_garbage_less_often()
        assert gc.get_threshold() == (COLLECTION_THRESHOLD, *before[1:])
        gc.collect()
        gc.callbacks.append(count)
        in_flight: list[list[object]] = [[{"row": [n]}, (n, [])] for n in range(2_000)]  # ~10,000 containers
        assert collections == []
        del in_flight
        garbage = [[[n]] for n in range(COLLECTION_THRESHOLD)]
        assert collections, "past the threshold the collector runs"
        del garbage
    finally:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(count)
        gc.set_threshold(*before)
