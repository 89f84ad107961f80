"""What outbound postbacks must never do, on SQLite and on PostgreSQL: call a private address, or send
a job twice at once from several workers; and a killed dispatcher loses nothing."""

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clicktrail.config import Settings
from clicktrail.delivery.wakeup import LISTENER_NAME
from clicktrail.storage.write_turn import WriteTurn
from clicktrail.web.runtime import Runtime
from tests.delivery_support import (
    DELIVERY_ENV,
    TEMPLATE,
    affiliate,
    convert,
    deliveries_of,
    settled,
    wait_until,
)
from tests.receivers import Receiver
from tests.support import SECRET_KEY, ServerProcess, Tracker, fresh_database, start_server


@pytest.fixture(scope="module")
def admin_node(
    delivery_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A second node on the delivering server's database that records and administers but does not
    deliver, and allows `localhost` besides 127.0.0.1."""
    env = {
        **DELIVERY_ENV,
        "CLICKTRAIL_DELIVERY_ALLOW_HOSTS": "127.0.0.1,localhost",
        "CLICKTRAIL_DELIVERY_ENABLED": "0",
    }
    node = start_server(delivery_server.database_url, tmp_path_factory.mktemp("admin-node"), extra_env=env)
    yield node
    assert node.stop() == 0, node.log()


# SSRF


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://localhost:8080/pb", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://10.1.2.3/pb", "10.1.2.3 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a private address"),
        ("http://[::1]:8080/pb", "::1 is a loopback address"),
        ("http://0x7f000001/pb", "0x7f000001 resolves to 127.0.0.1, a loopback address"),
        ("http://192.168.0.10/pb", "192.168.0.10 is a private address"),
    ],
)
def test_a_template_whose_host_is_not_public_is_refused_on_save(pb: Tracker, url: str, problem: str) -> None:
    created = pb.api("POST", "/sources", json={"name": "Sneaky", "postback_url": url})

    assert created.status_code == 422
    body = created.json()
    assert body["error"] == "validation_error"
    assert problem in body["detail"]
    assert "CLICKTRAIL_DELIVERY_ALLOW_HOSTS" in body["fields"]["postback_url"]
    source = pb.create("sources", name="Fine", postback_url="http://127.0.0.1:9/pb")  # allowlisted
    assert pb.api("PATCH", f"/sources/{source['id']}", json={"postback_url": url}).status_code == 422


def test_an_unknown_macro_is_refused_on_save(pb: Tracker) -> None:
    response = pb.api(
        "POST", "/sources", json={"name": "Typo", "postback_url": "https://p.example/?c={clickid}"}
    )
    assert response.status_code == 422
    assert "{clickid}" in response.json()["detail"]


def test_a_host_that_resolves_to_a_private_address_at_delivery_is_blocked(
    pb: Tracker, admin_node: ServerProcess, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    # The template is saved through the admin node, which allows `localhost`; the delivering node does
    # not (as when the allowlist changed after the template was saved).
    admin = Tracker(admin_node)
    try:
        source, key = affiliate(admin, f"http://localhost:{partner.port}/pb?c={{conversion_id}}")
    finally:
        admin.close()

    conversion = convert(pb, key)

    blocked = wait_until(lambda: settled(pb, conversion, source["id"]), what="the blocked attempt")
    assert blocked["status"] == "blocked"
    assert blocked["attempts_made"] == 1
    [attempt] = blocked["attempts"]
    assert attempt["outcome"] == "blocked"
    assert "localhost resolves to 127.0.0.1, a loopback address" in attempt["error"]
    assert partner.calls == []


# Several workers, and a dispatcher killed mid-flight


def test_on_postgresql_a_conversion_recorded_on_another_node_wakes_the_dispatcher_at_once(
    backend: str, pb: Tracker, admin_node: ServerProcess, receiver: Callable[..., Receiver]
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no notification channel: other processes find jobs by polling")
    partner = receiver()
    _, key = affiliate(pb, partner.url + TEMPLATE)
    # The admin node records the conversions but does not deliver; the delivering node would look for
    # jobs only every 5 s: the NOTIFY after each conversion's commit is what wakes it.
    elsewhere = Tracker(admin_node)
    try:
        for n in range(1, 4):
            click_id = elsewhere.click(key)
            sent = time.time()
            conversion = convert(elsewhere, key, click_id=click_id)
            call = partner.wait_for_calls(n, timeout=5)[-1]
            assert call.query["conversion"] == conversion
            assert call.at - sent < 1.0
    finally:
        elsewhere.close()


def test_on_postgresql_a_dispatcher_whose_notification_channel_dropped_listens_again_and_catches_up(
    backend: str, pb: Tracker, admin_node: ServerProcess, receiver: Callable[..., Receiver]
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no notification channel: other processes find jobs by polling")
    partner = receiver()
    _, key = affiliate(pb, partner.url + TEMPLATE)
    elsewhere = Tracker(admin_node)
    try:
        # The database drops the delivering node's LISTEN connection (a restart, a proxy's idle cut).
        dropped = _terminate_listeners(admin_node.database_url)
        assert dropped >= 1
        sent = time.time()
        lost_notice = convert(elsewhere, key, click_id=elsewhere.click(key))  # its NOTIFY reaches nobody
        # The listener reconnects within a second and looks for what it missed: well before the 5 s poll.
        [call] = partner.wait_for_calls(1, timeout=5)
        assert call.query["conversion"] == lost_notice
        assert call.at - sent < 3.0
        sent = time.time()
        heard = convert(elsewhere, key, click_id=elsewhere.click(key))
        call = partner.wait_for_calls(2, timeout=5)[-1]
        assert call.query["conversion"] == heard
        assert call.at - sent < 1.0  # notified again
    finally:
        elsewhere.close()


def _terminate_listeners(database_url: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND application_name = :name"
                    ),
                    {"name": LISTENER_NAME},
                ).all()
            )
    finally:
        engine.dispose()


def test_two_workers_deliver_each_conversion_once(
    backend: str, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    with fresh_database(backend, tmp_path) as url:
        env = {**DELIVERY_ENV, "CLICKTRAIL_DELIVERY_POLL_SECONDS": "0.05"}  # both claim all the time
        server = start_server(url, tmp_path, workers=2, extra_env=env)
        tracker = Tracker(server)
        try:
            _, key = affiliate(tracker, partner.url + TEMPLATE)
            conversions = [convert(tracker, key, txid=f"w{n}") for n in range(20)]

            partner.wait_for_calls(20)
            time.sleep(0.5)
        finally:
            tracker.close()
            assert server.stop() == 0, server.log()
    assert Counter(call.query["conversion"] for call in partner.calls) == Counter(conversions)


def test_a_job_that_waited_for_a_sending_slot_too_long_for_its_lease_is_given_back_not_sent_twice(
    backend: str, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    # One postback at a time, each answered after 0.9 s; an attempt may take 1.6 s and a lease lasts
    # 1.7 s. The dispatcher claims a second job while the first is being sent: by the time the slot is
    # free (0.9 s on), an attempt could outlast that job's lease, and a poll (every 50 ms) would claim
    # it again once its lease ends (1.7 s) while it is still being sent (until 1.8 s), and send it a
    # second time. It must give the job back and claim it afresh instead. The margins leave a loaded
    # machine room: 0.6 s between the receiver's answer and the read timeout (a timed-out attempt is
    # rightly sent again), 0.8 s for the first job's attempt to be recorded within its lease.
    partner = receiver(delay=0.9)
    env = {
        **DELIVERY_ENV,
        "CLICKTRAIL_DELIVERY_CONCURRENCY": "1",
        "CLICKTRAIL_DELIVERY_POLL_SECONDS": "0.05",
        "CLICKTRAIL_DELIVERY_CONNECT_TIMEOUT": "0.1",
        "CLICKTRAIL_DELIVERY_READ_TIMEOUT": "1.5",
        "CLICKTRAIL_DELIVERY_LEASE_SECONDS": "1.7",
    }
    with fresh_database(backend, tmp_path) as url:
        server = start_server(url, tmp_path, extra_env=env)
        tracker = Tracker(server)
        try:
            _, key = affiliate(tracker, partner.url + TEMPLATE)
            conversions = [convert(tracker, key, txid=f"slot{n}") for n in range(3)]
            wait_until(
                lambda: len(deliveries_of(tracker, status="delivered")) == 3,
                timeout=15,
                what="the three deliveries",
            )
            time.sleep(1.5)  # a second copy, had one been sent, would arrive meanwhile
        finally:
            tracker.close()
            assert server.stop() == 0, server.log()
    assert Counter(call.query["conversion"] for call in partner.calls) == Counter(conversions)
    assert "ended after their leases ran out" not in server.log()


def test_a_killed_dispatcher_loses_nothing_and_resends_only_what_was_in_flight(
    backend: str, tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(delay=0.1)
    env = {**DELIVERY_ENV, "CLICKTRAIL_DELIVERY_CONCURRENCY": "2"}
    with fresh_database(backend, tmp_path) as url:
        first = start_server(url, tmp_path, extra_env=env)
        tracker = Tracker(first)
        _, key = affiliate(tracker, partner.url + TEMPLATE)
        conversions = [convert(tracker, key, txid=f"k{n}") for n in range(30)]
        tracker.close()
        partner.wait_for_calls(5)
        first.stop(signal.SIGKILL)
        delivered_before_kill = len(partner.calls)

        second = start_server(url, tmp_path, extra_env=env)
        tracker = Tracker(second)
        try:
            # Every job delivered, including those the killed process had leased (after their lease).
            wait_until(
                lambda: len(deliveries_of(tracker, status="delivered")) == 30,
                timeout=20,
                what="every conversion delivered after the restart",
            )
            assert deliveries_of(tracker, status="pending") == []
        finally:
            tracker.close()
            assert second.stop() == 0, second.log()
    received = Counter(call.query["conversion"] for call in partner.calls)
    assert set(received) == set(conversions)
    twice = [conversion for conversion, count in received.items() if count > 1]
    # At most what the killed process had in flight (its concurrency) is sent again, and only once.
    assert len(twice) <= 2, (delivered_before_kill, received)
    assert max(received.values()) <= 2


def test_on_sqlite_the_dispatcher_writes_only_in_its_write_turn(tmp_path: Path) -> None:
    """The click and postback writers stage their batches on the event loop: a claim holding SQLite's
    write lock made them sleep there, in its busy handler, with every request of the worker waiting.
    So the dispatcher waits for the write turn (storage/write_turn.py) before it writes."""
    database = tmp_path / "clicktrail.db"
    settings = Settings(database_url=f"sqlite:///{database}", secret_key=SECRET_KEY, analytics_dir=tmp_path)
    runtime = Runtime(settings, migrate=True)
    another_writer = WriteTurn(database)
    another_writer.take()
    try:
        with ThreadPoolExecutor(1) as pool:
            claim = pool.submit(runtime.dispatcher._claim, 8)
            time.sleep(0.3)
            assert not claim.done(), "the claim did not wait for the write turn"
            stager = sqlite3.connect(database, timeout=0)  # as a batch writer on the loop: no waiting
            stager.execute("BEGIN IMMEDIATE")  # SQLite's write lock is free meanwhile
            stager.rollback()
            stager.close()
            another_writer.give_back()
            assert claim.result(10) == ([], None)  # nothing queued, nothing due
    finally:
        another_writer.close()
        runtime.database.dispose()
