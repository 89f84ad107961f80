"""The server's HTTP/1.1 as clients see it on the wire: edge routes are answered by the lean path of
web/protocol.py, everything else by uvicorn's ASGI cycle, and a connection mixing both (keep-alive,
pipelining) still gets every answer, complete and in request order."""

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.server import ServerState

from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput
from clicktrail.config import Settings
from clicktrail.storage.database import Database
from clicktrail.web.app import ClicktrailApp
from clicktrail.web.protocol import DirectHandler, EdgeProtocol, Reply
from clicktrail.web.runtime import Runtime
from tests.support import ServerProcess, Tracker, fresh_database, start_server


def _connect(server: ServerProcess) -> socket.socket:
    address = urlsplit(server.base_url)
    sock = socket.create_connection((address.hostname, address.port), timeout=10)
    return sock


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` HTTP answers read off the socket: status, headers (lower-cased names), body."""
    answers: list[tuple[int, dict[str, str], bytes]] = []
    buffer = b""
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {len(answers)} answers"
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed inside a body"
            buffer += chunk
        body, buffer = buffer[:length], buffer[length:]
        answers.append((int(status_line.split()[1]), headers, body))
    return answers


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_pipelined_clicks_api_calls_and_postbacks_are_answered_in_request_order(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    key = campaign["key"]
    token = tracker.admin["Authorization"]
    requests = [
        f"GET /c/{key}?sub1=first HTTP/1.1\r\nHost: t\r\n\r\n",
        f"GET /api/v1/campaigns/{campaign['id']} HTTP/1.1\r\nHost: t\r\nAuthorization: {token}\r\n\r\n",
        f"GET /c/{key}?sub1=second HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /postback?click_id=nonsense HTTP/1.1\r\nHost: t\r\n\r\n",
        f"GET /api/v1/campaigns/{campaign['id']} HTTP/1.1\r\nHost: t\r\nAuthorization: {token}\r\n\r\n",
        f"HEAD /c/{key}?sub1=third HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /no-such-page HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    with _connect(tracker.server) as sock:
        sock.sendall("".join(requests).encode())  # all at once: the server reads them in one go
        answers = _read_answers(sock, len(requests))
    statuses = [status for status, _, _ in answers]
    assert statuses == [302, 200, 302, 200, 400, 200, 302, 404]
    first, second = answers[0][1]["location"], answers[2][1]["location"]
    assert "s1=first" in first
    assert "s1=second" in second
    assert answers[1][1]["content-type"].startswith("application/json")
    assert b'"status":"ok"' in answers[3][2]
    assert b'"bad_click_id"' in answers[4][2]
    assert "s1=third" in answers[6][1]["location"]
    assert answers[6][2] == b""


def test_edge_answers_carry_a_date_and_an_exact_length_and_keep_the_connection_open(
    tracker: Tracker,
) -> None:
    key = tracker.campaign()["key"]
    with _connect(tracker.server) as sock:
        for n in range(50):
            sock.sendall(f"GET /c/{key}?sub1=n{n} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            [(status, headers, body)] = _read_answers(sock, 1)
            assert status == 302
            assert f"s1=n{n}" in headers["location"]
            assert headers["content-length"] == str(len(body))
            assert headers["date"].endswith(" GMT")
            assert "connection" not in headers


def test_an_http_1_0_click_or_one_asking_to_close_is_answered_then_the_connection_is_closed(
    tracker: Tracker,
) -> None:
    key = tracker.campaign()["key"]
    for request in (
        f"GET /c/{key}?sub1=old HTTP/1.0\r\n\r\n",
        f"GET /c/{key}?sub1=close HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ):
        with _connect(tracker.server) as sock:
            sock.sendall(request.encode())
            [(status, headers, _)] = _read_answers(sock, 1)
            assert status == 302
            assert headers["connection"] == "close"
            assert _closed_by_server(sock)


def test_a_click_with_an_escaped_path_or_a_body_on_its_get_is_still_a_click(tracker: Tracker) -> None:
    key = tracker.campaign()["key"]
    escaped = "".join(f"%{ord(char):02X}" for char in key)
    with _connect(tracker.server) as sock:
        sock.sendall(
            f"GET /c/{escaped}?sub1=escaped HTTP/1.1\r\nHost: t\r\n\r\n"
            f"GET /c/{key}?sub1=body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            "GET /health HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        answers = _read_answers(sock, 3)
    assert [status for status, _, _ in answers] == [302, 302, 200]
    assert "s1=escaped" in answers[0][1]["location"]
    assert "s1=body" in answers[1][1]["location"]


def test_a_post_to_the_postback_url_between_pipelined_gets_is_answered_in_its_turn(tracker: Tracker) -> None:
    campaign = tracker.campaign()
    click_id = tracker.click(campaign["key"])
    body = f"click_id={click_id}&event=sale&txid=pipelined-1"
    with _connect(tracker.server) as sock:
        sock.sendall(
            f"GET /c/{campaign['key']}?sub1=before HTTP/1.1\r\nHost: t\r\n\r\n"
            "POST /postback HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
            f"GET /postback?{body} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        answers = _read_answers(sock, 3)
    assert answers[0][0] == 302
    assert (answers[1][0], b'"accepted"' in answers[1][2]) == (200, True)
    assert (answers[2][0], b'"duplicate"' in answers[2][2]) == (200, True)


def _past_a_queue_limit_of_one(
    tmp_path: Path, setting: str, requests: Callable[[Tracker], tuple[str, str]], stored_sql: str
) -> tuple[list[tuple[int, dict[str, str], bytes]], set[str]]:
    """A server whose queue `setting` lets one request wait for the commit: `requests` (given the
    tracker, with a campaign made) is five pipelined requests and one sent after their answers. The
    six answers, and what `stored_sql` reads once the server has stopped."""
    with fresh_database("sqlite", tmp_path) as url:
        server = start_server(url, tmp_path, extra_env={setting: "1"})
        try:
            tracker = Tracker(server)
            five, after = requests(tracker)
            tracker.close()
            with _connect(server) as sock:
                sock.sendall(five.encode())
                answers = _read_answers(sock, 5)
                sock.sendall(after.encode())
                answers += _read_answers(sock, 1)
        finally:
            assert server.stop() == 0, server.log()
        database = Database(Settings(database_url=url).sqlalchemy_url)
        with database.begin() as connection:
            stored = {row[0] for row in connection.exec_driver_sql(stored_sql)}
        database.dispose()
    return answers, stored


def test_clicks_past_the_queue_limit_are_answered_503_in_their_turn_and_only_redirected_ones_stored(
    tmp_path: Path,
) -> None:
    """With one click allowed to wait for the commit, the first of five pipelined clicks (read in one
    go) is queued and the other four are refused at once: each answered in its turn with a 503 the
    visitor's browser may retry, and none of them stored; the connection stays usable."""

    def clicks(tracker: Tracker) -> tuple[str, str]:
        click = f"GET /c/{tracker.campaign()['key']}?sub1={{}} HTTP/1.1\r\nHost: t\r\n\r\n"
        return "".join(click.format(f"n{n}") for n in range(5)), click.format("after")

    answers, stored = _past_a_queue_limit_of_one(
        tmp_path, "CLICKTRAIL_CLICK_QUEUE_LIMIT", clicks, "SELECT sub1 FROM clicks"
    )
    assert [status for status, _, _ in answers] == [302, 503, 503, 503, 503, 302]
    for _, headers, body in answers[1:5]:
        assert headers["retry-after"] == "1"
        assert b"try again" in body
        assert headers["content-length"] == str(len(body))
    assert stored == {"n0", "after"}


def test_postbacks_past_the_queue_limit_are_answered_503_in_their_turn_and_only_accepted_ones_stored(
    tmp_path: Path,
) -> None:
    """The postback's direct path keeps the queue's bound: with one postback allowed to wait for the
    commit, the first of five pipelined postbacks is queued and the other four are refused at once,
    each answered in its turn with a 503 and a JSON reason the merchant's server retries on, none of
    them stored; the connection stays usable and a retry is accepted."""

    def postbacks(tracker: Tracker) -> tuple[str, str]:
        click_id = tracker.click(tracker.campaign()["key"])
        postback = f"GET /postback?click_id={click_id}&event=sale&txid=n{{}} HTTP/1.1\r\nHost: t\r\n\r\n"
        return "".join(postback.format(n) for n in range(5)), postback.format(1)  # a refused one again

    answers, stored = _past_a_queue_limit_of_one(
        tmp_path, "CLICKTRAIL_POSTBACK_QUEUE_LIMIT", postbacks, "SELECT txid FROM conversions"
    )
    assert [status for status, _, _ in answers] == [200, 503, 503, 503, 503, 200]
    for _, headers, body in answers[1:5]:
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == str(len(body))
        assert json.loads(body)["error"] == "overloaded"
    assert json.loads(answers[5][2])["result"] == "accepted"
    assert stored == {"n0", "n1"}


class _App:
    """An app whose edge handler is `answer` for the paths under `edge`; other paths take uvicorn's own
    ASGI path to the same `answer`."""

    def __init__(self, answer: ASGIApp, *, edge: str) -> None:
        self._answer = answer
        self._edge = edge

    def edge_handler(self, path: str) -> ASGIApp | None:
        return self._answer if path.startswith(self._edge) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._answer(scope, receive, send)


class _Transport(asyncio.Transport):
    """Enough of a socket transport for the protocol: it records what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_under_uvicorns_own_wrappers_edge_routes_take_the_lean_path_and_others_the_asgi_cycle() -> None:
    """uvicorn wraps the application (proxy headers, trace logging) before the protocol sees it: the
    protocol must still find the edge routes under those wrappers, or every click silently pays for
    the full ASGI cycle again."""
    seen: list[tuple[str, bool]] = []

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["path"], "asgi" in scope))  # only uvicorn's full scope has "asgi"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(_App(answer, edge="/c/"), proxy_headers=True, log_level="trace", lifespan="off")
    loop = asyncio.new_event_loop()
    try:
        protocol = EdgeProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /c/key HTTP/1.1\r\nHost: t\r\n\r\nGET /api HTTP/1.1\r\nHost: t\r\n\r\n")
        loop.run_until_complete(asyncio.sleep(0.05))
        protocol.connection_lost(None)
    finally:
        loop.close()
    assert seen == [("/c/key", False), ("/api", True)]
    assert transport.written.count(b"HTTP/1.1 200 OK\r\n") == 2


def test_a_keep_alive_connection_is_closed_once_idle_for_the_timeout_never_while_it_keeps_asking() -> None:
    """uvicorn's keep-alive timeout, which web/protocol.py keeps with one timer per connection instead
    of one per answer: a connection asking more often than the timeout stays open however long it
    lasts, on either path, and is closed once it has been idle for the timeout since its last answer."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    timeout = 1  # seconds (uvicorn takes whole ones)
    config = uvicorn.Config(
        _App(answer, edge="/c/"), timeout_keep_alive=timeout, log_level="warning", lifespan="off"
    )
    loop = asyncio.new_event_loop()
    transport = _Transport()

    async def scenario() -> list[bool]:
        closed = []
        for n in range(8):  # twice the timeout, a request every quarter of it, edge and ASGI in turn
            path = b"/c/key" if n % 2 == 0 else b"/api"
            protocol.data_received(b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            await asyncio.sleep(timeout / 4)
            closed.append(transport.closed)
        await asyncio.sleep(timeout / 2)  # idle for three quarters of the timeout
        closed.append(transport.closed)
        await asyncio.sleep(timeout)
        closed.append(transport.closed)
        return closed

    try:
        protocol = EdgeProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        protocol.connection_made(transport)
        closed = loop.run_until_complete(scenario())
        protocol.connection_lost(None)
    finally:
        loop.close()
    assert transport.written.count(b"HTTP/1.1 200 OK\r\n") == 8
    assert closed == [False] * 9 + [True]


def test_an_edge_answer_with_a_line_break_in_a_header_name_or_value_is_refused_with_a_500() -> None:
    """The lean path writes headers itself, so it must refuse what would split them (header injection),
    as uvicorn's cycle does: the client gets a 500, never the smuggled line."""
    bad_headers = {
        "/c/value-lf": [(b"location", b"https://a.example/\nset-cookie: owned=1")],
        "/c/value-cr": [(b"location", b"https://a.example/\rx")],
        "/c/name": [(b"x-a\r\nset-cookie", b"owned=1")],
        "/c/fine": [(b"location", b"https://a.example/"), (b"content-length", b"0")],
    }

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        headers = bad_headers[scope["path"]]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(_App(answer, edge="/"), log_level="critical", lifespan="off")
    loop = asyncio.new_event_loop()
    statuses = []
    try:
        for path in bad_headers:
            protocol = EdgeProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
            transport = _Transport()
            protocol.connection_made(transport)
            protocol.data_received(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            loop.run_until_complete(asyncio.sleep(0.01))
            protocol.connection_lost(None)
            assert b"owned" not in transport.written
            statuses.append(int(transport.written.split(b" ", 2)[1]))
    finally:
        loop.close()
    assert statuses == [500, 500, 500, 302]


def test_edge_handlers_that_wait_yield_answer_at_once_or_fail_are_answered_in_request_order() -> None:
    """On the lean path (web/protocol.py), whatever a handler awaits (a future set later, a bare yield,
    a thread), or if it answers at once or fails after waiting, the answers leave complete and in
    request order, and nothing leaves while the first is still waiting."""
    loop = asyncio.new_event_loop()
    release: asyncio.Future[str] = loop.create_future()

    async def reply(send: Send, text: str) -> None:
        headers = [(b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text.encode()})

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/c/future":
            await reply(send, await release)
        elif path == "/c/yield":
            await asyncio.sleep(0)
            await reply(send, "yielded")
        elif path == "/c/thread":
            await reply(send, await asyncio.to_thread(str.upper, "threaded"))
        elif path == "/c/fail":
            await asyncio.sleep(0)
            raise ValueError("after waiting")
        else:
            await reply(send, "at once")

    config = uvicorn.Config(_App(answer, edge="/"), log_level="critical", lifespan="off")
    paths = ["/c/future", "/c/now", "/c/yield", "/c/thread", "/c/fail", "/c/now"]
    transport = _Transport()
    try:
        protocol = EdgeProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        protocol.connection_made(transport)
        requests = [b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n" for path in paths]
        loop.call_soon(protocol.data_received, b"".join(requests))  # as the loop calls it: running
        loop.run_until_complete(asyncio.sleep(0.05))
        assert transport.written == b""  # the first is still waiting, so nothing may leave
        release.set_result("released")
        loop.run_until_complete(asyncio.sleep(0.05))
        protocol.connection_lost(None)
    finally:
        loop.close()
    answers = transport.written.split(b"HTTP/1.1 ")[1:]
    bodies = [answer.split(b"\r\n\r\n", 1)[1] for answer in answers[:4]]
    assert bodies == [b"released", b"at once", b"yielded", b"THREADED"]
    assert answers[4].startswith(b"500 ")
    assert len(answers) == 5  # a failure closes the connection, as before
    assert transport.closed


class _DirectApp(_App):
    """`_App` whose edge routes also have a direct handler (as the click's is)."""

    def __init__(self, answer: ASGIApp, direct: DirectHandler, *, edge: str) -> None:
        super().__init__(answer, edge=edge)
        self._direct = direct

    def edge_direct(self, path: str) -> DirectHandler | None:
        return self._direct if path.startswith(self._edge) else None


def test_direct_handlers_that_answer_later_at_once_decline_or_fail_are_answered_in_request_order() -> None:
    """A direct handler (the click's: no task, its answer given when the group commit is done) may
    answer later from a loop callback or at once, leave the request to the route's ASGI handler, or
    fail: every answer leaves whole, in request order, a HEAD without its body, nothing while the
    first is still waiting, and a failure is a 500 that closes the connection in its turn."""
    loop = asyncio.new_event_loop()
    later: list[Reply] = []

    def direct(scope: Scope, reply: Reply) -> bool:
        path = scope["path"]
        if path == "/c/asgi":
            return False
        if path == "/c/fail":
            raise ValueError("before answering")
        body = path.encode()
        headers = [(b"content-length", str(len(body)).encode()), (b"x-direct", b"yes")]
        if path.startswith("/c/later"):
            later.append(lambda status, _, __: reply(status, headers, body))
        else:
            reply(200, headers, body)
        return True

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"asgi"})

    config = uvicorn.Config(_DirectApp(answer, direct, edge="/c/"), log_level="critical", lifespan="off")
    requests = [
        ("GET", "/c/later-1"),
        ("GET", "/c/now"),
        ("GET", "/c/asgi"),
        ("HEAD", "/c/later-2"),
        ("GET", "/c/now"),
        ("GET", "/c/fail"),
        ("GET", "/other"),
    ]
    transport = _Transport()
    try:
        protocol = EdgeProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        protocol.connection_made(transport)
        data = b"".join(f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for method, path in requests)
        loop.call_soon(protocol.data_received, data)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert transport.written == b""  # the first waits for its callback
        assert len(later) == 2
        for reply in reversed(later):  # the second is ready first: it must still wait its turn
            loop.call_soon(reply, 200, (), b"")
            loop.run_until_complete(asyncio.sleep(0.01))
        loop.run_until_complete(asyncio.sleep(0.05))
        protocol.connection_lost(None)
    finally:
        loop.close()
    answers = transport.written.split(b"HTTP/1.1 ")[1:]
    heads_and_bodies = [answer.split(b"\r\n\r\n", 1) for answer in answers]
    assert [body for _, body in heads_and_bodies[:5]] == [b"/c/later-1", b"/c/now", b"asgi", b"", b"/c/now"]
    assert b"x-direct: yes" in heads_and_bodies[3][0]
    assert b"content-length: 10" in heads_and_bodies[3][0]
    assert answers[5].startswith(b"500 ")
    assert len(answers) == 6  # the failure closed the connection: the last request is not answered
    assert transport.closed


def test_clicks_and_postbacks_on_the_tracker_are_answered_without_a_task_and_the_rest_with_one(
    runtime: Runtime,
) -> None:
    """The tracker wires its click and postback routes' direct handlers: a click whose key the
    catalog's snapshot holds is stored and answered 302 with no task started for it (the group commit
    answers it), and so is a GET postback (200 with its decision, once committed). A key the snapshot
    does not hold goes to the route's ASGI handler (a task: it may reload the catalog in a thread),
    which answers 404, and so does a HEAD postback, which that handler refuses with a 405."""
    offer = runtime.catalog.create_offer(OfferInput(name="O", url="https://m.example/?c={click_id}"))
    source = runtime.catalog.create_source(SourceInput(name="S"))
    campaign = runtime.catalog.create_campaign(
        CampaignInput(name="C", source_id=source.id, offer_id=offer.id)
    )
    app = ClicktrailApp(runtime)
    config = uvicorn.Config(app, log_level="critical", lifespan="off")
    loop = asyncio.new_event_loop()

    async def scenario() -> tuple[list[int], list[bytes]]:
        await runtime.start()
        state = ServerState()
        tasks: list[int] = []
        written: list[bytes] = []

        async def ask(request: str) -> bytes:
            protocol = EdgeProtocol(config=config, server_state=state, app_state={}, _loop=loop)
            transport = _Transport()
            protocol.connection_made(transport)
            protocol.data_received(f"{request} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            tasks.append(len(state.tasks))
            for _ in range(200):
                if transport.written:
                    break
                await asyncio.sleep(0.01)
            written.append(transport.written)
            protocol.connection_lost(None)
            return transport.written

        clicked = await ask(f"GET /c/{campaign.key}?sub1=direct")
        await ask("GET /c/nosuchkey")
        click_id = clicked.split(b"location: https://m.example/?c=", 1)[1].split(b"\r\n", 1)[0].decode()
        await ask(f"GET /postback?click_id={click_id}&event=sale&txid=t1&payout=3")
        await ask(f"HEAD /postback?click_id={click_id}&event=sale&txid=t2&payout=3")
        await runtime.stop()
        return tasks, written

    try:
        tasks, written = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert tasks == [0, 1, 0, 1]
    assert written[0].startswith(b"HTTP/1.1 302 ")
    assert written[1].startswith(b"HTTP/1.1 404 ")
    assert written[2].startswith(b"HTTP/1.1 200 ")
    assert b'{"result":"accepted","conversion_id":"' in written[2]
    assert written[3].startswith(b"HTTP/1.1 405 ")
    with runtime.database.begin() as connection:
        stored = connection.exec_driver_sql("SELECT sub1 FROM clicks").scalars().all()
        converted = connection.exec_driver_sql("SELECT txid, revenue FROM conversions").all()
    assert stored == ["direct"]
    assert [tuple(row) for row in converted] == [("t1", 3_000_000)]  # revenue in micros
