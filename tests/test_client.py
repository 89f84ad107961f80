"""`clicktrail.client.send_postback`, the helper for merchants' servers, against the real tracker and,
for retries, a real HTTP server on 127.0.0.1 that fails before it answers."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clicktrail.client import PostbackUnreachable, send_postback
from tests.support import Tracker, codec, free_port


def test_a_postback_is_accepted_then_recognised_as_a_duplicate(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    base = tracker.server.base_url

    first = send_postback(base, click_id, event="sale", payout="49.90", currency="EUR", txid="order-1")
    again = send_postback(base, click_id, event="sale", payout="49.90", currency="EUR", txid="order-1")

    assert (first.result, first.recorded, first.attempts) == ("accepted", True, 1)
    assert first.conversion_id is not None
    assert (again.result, again.conversion_id) == ("duplicate", first.conversion_id)


def test_a_refusal_is_final_and_not_retried(tracker: Tracker) -> None:
    waits: list[float] = []
    unknown = codec().mint(datetime.now(UTC))

    answer = send_postback(tracker.server.base_url, unknown, event="lead", sleep=waits.append)

    assert (answer.status_code, answer.error, answer.recorded, answer.attempts) == (
        404,
        "unknown_click",
        False,
        1,
    )
    assert waits == []


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `failures` requests, then a tracker's accepted answer."""

    failures = 0
    seen: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.seen.append(self.rfile.read(length).decode())
        if len(self.seen) <= self.failures:
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"result": "accepted", "conversion_id": "c-1"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Handler", (_Flaky,), {"failures": 2, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_a_busy_tracker_is_retried_with_growing_waits_until_it_answers(
    flaky: tuple[str, type[_Flaky]],
) -> None:
    base, handler = flaky
    waits: list[float] = []

    answer = send_postback(base, "c" * 32, event="lead", txid="t-9", backoff=0.25, sleep=waits.append)

    assert (answer.result, answer.attempts) == ("accepted", 3)
    assert waits == [0.25, 0.5]
    assert len(handler.seen) == 3
    assert all("txid=t-9" in body for body in handler.seen)


def test_an_unreachable_tracker_raises_after_the_last_attempt() -> None:
    waits: list[float] = []
    with pytest.raises(PostbackUnreachable) as caught:
        send_postback(f"http://127.0.0.1:{free_port()}", "c" * 32, attempts=3, sleep=waits.append)
    assert caught.value.attempts == 3
    assert "ConnectError" in caught.value.last
    assert waits == [0.5, 1.0]
