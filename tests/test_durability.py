"""Durability under load, through the real server, on SQLite and on PostgreSQL.

Many visitors click and their merchants post back concurrently; mid-run the server is killed
(SIGKILL: every process at once, no chance to clean up) or stopped (SIGTERM: a graceful drain).
Whatever the clients were told must be true in the database afterwards: every click whose 302
arrived is stored, every conversion whose 200 arrived is stored with the history and outbox rows of
every acknowledged status, and nothing is stored twice. The server then starts again on the same
database and keeps working.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from clicktrail.config import Settings
from clicktrail.storage.schema import clicks, conversion_status_history, conversions, deliveries, postback_log
from tests.support import CATALOG_POLL_SECONDS, ServerProcess, Tracker, fresh_database, start_server

VISITORS = 24  # concurrent clients, each clicking and posting back in a loop
LOAD_SECONDS = 1.0  # load before the signal
AFTER_SIGNAL_SECONDS = 1.0  # the clients keep going while the server dies or drains
MIN_CLICKS_BEFORE_SIGNAL = 50


@dataclass
class Acknowledged:
    """What the clients were told, and only that."""

    clicks: set[str] = field(default_factory=set)
    conversions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # key → conversion ID
    statuses: dict[str, set[str]] = field(default_factory=dict)  # conversion ID → acknowledged statuses
    updates: Counter[str] = field(default_factory=Counter)  # conversion ID → `updated` answers
    postbacks: int = 0
    unanswered: int = 0  # requests that got no HTTP answer (connection refused or cut)
    refused: list[str] = field(default_factory=list)  # HTTP answers other than 302 / 200


async def _visitor(
    client: httpx.AsyncClient, key: str, number: int, ack: Acknowledged, stop: asyncio.Event
) -> None:
    """Click, and for every other click post a new conversion, repeat it, then change its status."""
    visit = 0
    while not stop.is_set():
        visit += 1
        agent = f"Mozilla/5.0 (visitor {number}; visit {visit})"
        try:
            response = await client.get(
                f"/c/{key}", params={"sub1": f"v{number}", "sub2": str(visit)}, headers={"user-agent": agent}
            )
        except httpx.TransportError:
            ack.unanswered += 1
            await asyncio.sleep(0.01)
            continue
        if response.status_code != 302:
            ack.refused.append(f"click {response.status_code} {response.text[:200]}")
            continue
        click_id = parse_qs(urlsplit(response.headers["location"]).query)["cid"][0]
        ack.clicks.add(click_id)
        if visit % 2:
            continue
        txid = f"order-{number}-{visit}"
        for status in ("approved", "approved", "rejected"):  # new, duplicate, status update
            params = {"click_id": click_id, "event": "sale", "txid": txid, "payout": "3.50", "status": status}
            try:
                response = await client.get("/postback", params=params)
            except httpx.TransportError:
                ack.unanswered += 1
                break
            if response.status_code != 200:
                ack.refused.append(f"postback {response.status_code} {response.text[:200]}")
                break
            answer = response.json()
            ack.postbacks += 1
            ack.conversions[(click_id, "sale", txid)] = answer["conversion_id"]
            ack.statuses.setdefault(answer["conversion_id"], set()).add(status)
            if answer["result"] == "updated":
                ack.updates[answer["conversion_id"]] += 1


async def _load(base_url: str, key: str, ack: Acknowledged, signal_server: Callable[[], None]) -> None:
    """Run the visitors, call `signal_server` mid-run, and keep them going while the server goes away."""
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=VISITORS, max_keepalive_connections=VISITORS)
    # With several workers the supervisor keeps the listening socket open while its workers drain, so
    # a connection made then is accepted by the kernel and never answered: give up on it after 3 s.
    timeout = httpx.Timeout(3, connect=2)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as client:
        visitors = [asyncio.create_task(_visitor(client, key, n, ack, stop)) for n in range(VISITORS)]
        started = time.monotonic()
        # Until each kind of write has been acknowledged at least once: a click, a conversion, an update.
        while (
            time.monotonic() - started < LOAD_SECONDS
            or len(ack.clicks) < MIN_CLICKS_BEFORE_SIGNAL
            or not ack.updates
        ):
            assert time.monotonic() - started < 20, f"only {len(ack.clicks)} clicks in 20 s: {ack.refused}"
            await asyncio.sleep(0.05)
        signal_server()
        await asyncio.sleep(AFTER_SIGNAL_SECONDS)
        stop.set()
        await asyncio.gather(*visitors)


def _stored(database_url: str) -> dict[str, Any]:
    engine = create_engine(Settings(database_url=database_url).sqlalchemy_url)
    try:
        with engine.connect() as connection:
            click_ids = [row.click_id for row in connection.execute(select(clicks.c.click_id))]
            conversion_rows = connection.execute(
                select(
                    conversions.c.conversion_id,
                    conversions.c.click_id,
                    conversions.c.event,
                    conversions.c.txid,
                )
            ).all()
            history = Counter(
                row.conversion_id
                for row in connection.execute(select(conversion_status_history.c.conversion_id))
            )
            statuses: dict[str, set[str]] = {}
            for row in connection.execute(
                select(conversion_status_history.c.conversion_id, conversion_status_history.c.new_status)
            ):
                statuses.setdefault(row.conversion_id, set()).add(row.new_status)
            outbox = Counter(
                row.conversion_id for row in connection.execute(select(deliveries.c.conversion_id))
            )
            logged = connection.execute(
                select(func.count()).select_from(postback_log).where(postback_log.c.decision != "malformed")
            ).scalar_one()
    finally:
        engine.dispose()
    return {
        "click_ids": click_ids,
        "conversions": conversion_rows,
        "history": history,
        "statuses": statuses,
        "outbox": outbox,
        "logged": logged,
    }


def _assert_everything_acknowledged_is_stored_once(ack: Acknowledged, stored: dict[str, Any]) -> None:
    click_ids: list[str] = stored["click_ids"]
    assert len(click_ids) == len(set(click_ids)), "a click is stored twice"
    missing_clicks = ack.clicks - set(click_ids)
    assert not missing_clicks, f"{len(missing_clicks)} of {len(ack.clicks)} acknowledged clicks were lost"
    # Clicks stored but never acknowledged can only be the requests cut short by the signal.
    assert len(click_ids) - len(ack.clicks) <= ack.unanswered

    keys = [(row.click_id, row.event, row.txid) for row in stored["conversions"]]
    assert len(keys) == len(set(keys)), "a conversion is stored twice"
    by_key = {(row.click_id, row.event, row.txid): row.conversion_id for row in stored["conversions"]}
    lost = {key: cid for key, cid in ack.conversions.items() if by_key.get(key) != cid}
    assert not lost, f"{len(lost)} of {len(ack.conversions)} acknowledged conversions were lost or changed"

    for conversion_id, acknowledged_statuses in ack.statuses.items():
        assert acknowledged_statuses <= stored["statuses"][conversion_id]
        # One history row for the conversion itself, one per acknowledged status change.
        assert stored["history"][conversion_id] >= 1 + ack.updates[conversion_id]
        # Each of those queued an outbound postback in the same transaction.
        assert stored["outbox"][conversion_id] >= 1 + ack.updates[conversion_id]
    assert stored["logged"] >= ack.postbacks, "an acknowledged postback is missing from the postback log"


class HalfSentPostback:
    """A POST postback whose body is only half sent: a request in flight for as long as the test likes."""

    def __init__(self, base_url: str, click_id: str, txid: str) -> None:
        parts = urlsplit(base_url)
        self.body = urlencode({"click_id": click_id, "event": "sale", "txid": txid}).encode()
        head = (
            f"POST /postback HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
        self.sock.sendall(head + self.body[:10])

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Send the rest of the body; return the status and JSON answer (the server then closes)."""
        with self.sock:
            self.sock.sendall(self.body[10:])
            received = b""
            while chunk := self.sock.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        answer: dict[str, Any] = json.loads(body)
        return status, answer


def _campaign(tracker: Tracker) -> dict[str, Any]:
    """A campaign whose source has an outbound postback URL and asks for every status, so every
    conversion and every status change queues a delivery."""
    offer = tracker.create(
        "offers", name="Offer", url="https://merchant.example/land?cid={click_id}", revenue="10", payout="4"
    )
    source = tracker.create(
        "sources",
        name="Network",
        postback_url="https://network.example/pb?c={click_id}",
        postback_statuses=["approved", "pending", "rejected", "chargeback"],
    )
    campaign = tracker.create("campaigns", name="Campaign", source_id=source["id"], offer_id=offer["id"])
    # Another worker learns of a new campaign at its next catalog poll (0.2 s in tests): wait for it.
    time.sleep(CATALOG_POLL_SECONDS * 3)
    return campaign


def _assert_it_serves_again(database_url: str, directory: Path, ack: Acknowledged) -> None:
    """Restarted on the same database, the server takes new clicks and knows the old conversions."""
    server = start_server(database_url, directory)
    tracker = Tracker(server)
    try:
        key = _campaign(tracker)["key"]
        assert tracker.click(key)
        # A conversion whose change to `rejected` was acknowledged: sent again, it is a duplicate.
        (click_id, event, txid), conversion_id = next(
            (key, cid) for key, cid in ack.conversions.items() if ack.updates[cid]
        )
        repeat = tracker.postback(click_id=click_id, event=event, txid=txid, status="rejected")
        assert repeat.json() == {"result": "duplicate", "conversion_id": conversion_id}
        fresh = tracker.postback(click_id=click_id, event="lead", txid="after-restart")
        assert fresh.json()["result"] == "accepted"
    finally:
        tracker.close()
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_under_load_loses_no_acknowledged_click_or_conversion(
    backend: str, workdir: Path, workers: int
) -> None:
    with fresh_database(backend, workdir) as url:
        server = start_server(url, workdir, workers=workers, own_process_group=True)
        tracker = Tracker(server)
        key = _campaign(tracker)["key"]
        tracker.close()
        ack = Acknowledged()

        def kill() -> None:
            os.killpg(server.process.pid, signal.SIGKILL)  # every process at once, as an OOM kill would

        asyncio.run(_load(server.base_url, key, ack, kill))
        assert server.stop(signal.SIGKILL, group=True) == -signal.SIGKILL

        assert not ack.refused, ack.refused[:5]
        _assert_everything_acknowledged_is_stored_once(ack, _stored(url))
        _assert_it_serves_again(url, workdir, ack)


def test_sigterm_under_load_drains_in_flight_requests_and_loses_nothing(backend: str, workdir: Path) -> None:
    """Two workers: the supervisor passes SIGTERM on, each worker drains (one worker drains the same way)."""
    workers = 2
    with fresh_database(backend, workdir) as url:
        server = start_server(url, workdir, workers=workers)
        tracker = Tracker(server)
        key = _campaign(tracker)["key"]
        in_flight_click = tracker.click(key)
        tracker.close()
        ack = Acknowledged(clicks={in_flight_click})
        in_flight: list[HalfSentPostback] = []

        def terminate() -> None:
            in_flight.append(HalfSentPostback(server.base_url, in_flight_click, "in-flight"))
            time.sleep(0.2)  # let the server start handling it
            server.process.send_signal(signal.SIGTERM)

        asyncio.run(_load(server.base_url, key, ack, terminate))
        # The request that was in flight when SIGTERM arrived is still answered, and recorded.
        status, answer = in_flight[0].finish()
        assert (status, answer["result"]) == (200, "accepted"), answer
        ack.conversions[(in_flight_click, "sale", "in-flight")] = answer["conversion_id"]
        ack.statuses[answer["conversion_id"]] = {"approved"}
        ack.postbacks += 1
        assert server.stop() == 0, server.log()

        assert not ack.refused, ack.refused[:5]
        _assert_everything_acknowledged_is_stored_once(ack, _stored(url))
        _assert_it_serves_again(url, workdir, ack)


def _workers(server: ServerProcess) -> set[int]:
    """The server's worker processes: the children multiprocessing spawned (not the report feed, the
    report engine, nor multiprocessing's resource tracker)."""
    children: set[int] = set()
    for listed in Path(f"/proc/{server.process.pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.update(int(pid) for pid in listed.read_text().split())
    workers = set()
    for pid in children:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in command:
                workers.add(pid)
    return workers


def _visits(tracker: Tracker, campaign_id: int) -> list[dict[str, Any]]:
    answer = tracker.api("GET", "/clicks", params={"campaign_id": campaign_id})
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_a_worker_killed_under_load_is_replaced_and_loses_nothing_acknowledged(
    backend: str, workdir: Path
) -> None:
    """The kernel's OOM killer picks one process, not the server: the other worker goes on answering,
    the supervisor starts a new one, and the memory of who clicked (the shared unique-visitor table)
    outlives the worker that died. (A worker killed while it holds one of that table's locks:
    tests/test_shared_memory.py, where the moment of the kill can be chosen.)"""
    with fresh_database(backend, workdir) as url:
        server = start_server(url, workdir, workers=2)
        tracker = Tracker(server)
        try:
            key = _campaign(tracker)["key"]
            returning = _campaign(tracker)
            ack = Acknowledged()

            def return_again() -> None:
                """A click of the same visitor on a connection of its own (the kernel picks the worker)."""
                answer = httpx.get(
                    returning["tracking_url"], headers={"user-agent": "Mozilla/5.0 (returning visitor)"}
                )
                assert answer.status_code == 302, answer.text
                ack.clicks.add(parse_qs(urlsplit(answer.headers["location"]).query)["cid"][0])

            return_again()
            before = _workers(server)
            assert len(before) == 2, before
            victim = min(before)
            asyncio.run(_load(server.base_url, key, ack, lambda: os.kill(victim, signal.SIGKILL)))

            deadline = time.monotonic() + 60
            while len(after := _workers(server)) < 2 or victim in after:
                assert time.monotonic() < deadline, f"no new worker in 60 s: {after}\n{server.log()}"
                time.sleep(0.2)
            # The new worker listens too: new connections reach both, and each is answered.
            time.sleep(CATALOG_POLL_SECONDS * 3)
            for _ in range(12):
                return_again()

            assert not ack.refused, ack.refused[:5]
            _assert_everything_acknowledged_is_stored_once(ack, _stored(url))
            visits = _visits(tracker, returning["id"])
            assert len(visits) == 13
            assert sum(visit["is_unique"] for visit in visits) == 1, "a worker's death reset who clicked"
        finally:
            tracker.close()
            assert server.stop() == 0, server.log()
