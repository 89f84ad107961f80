"""The HTTP/1.1 protocol the server runs: the edge routes answered straight from the parser, every
other request handed to uvicorn's own ASGI machinery.

A fixed 302 costs 42 µs of CPU through uvicorn's ASGI cycle (a full scope, a request-response cycle
object with its event, header checks by regular expression, a task) and 11 µs from a bare protocol
that only parses and writes (BENCHMARKS.md, "The HTTP layer"). A click is worth more than that: for
GET and HEAD requests to the edge's routes (`/c/{key}`, `/postback`, the pixels…) this protocol builds
the few scope keys those handlers read (method, path, query string, headers, client), runs the
handler as one task and writes its answer in one piece. Everything else (the API, the dashboard,
bodies, upgrades) goes through the parent class untouched.

A route may also have a direct handler (the click's and the GET postback's), tried first: a plain
call that starts the work and answers through a callback when it is done (when the group commit has
stored the click, or decided and stored the postback), so the request costs no task, no chain of
coroutines and no future. It hands anything it does not answer that way (a key not in the catalog's
snapshot, the rate limit, a HEAD postback) to the route's ASGI handler.

Answers leave in request order on a connection: edge answers queue behind each other, a pipelined
non-edge request waits behind them in uvicorn's own pipeline, and an edge request that arrives while
a non-edge one is still being answered takes the ordinary path.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp, Message, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger(__name__)


_NATIVE_METHODS = (b"GET", b"HEAD")
_MAX_QUEUED = 64
"""Edge answers one connection may have in progress before it stops reading (a client that pipelines
without reading its answers must not grow the queue without end)."""
_EMPTY_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class Reply(Protocol):
    def __call__(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        """The whole answer at once: status, headers (without the server's Date and Server) and body."""


DirectHandler = Callable[[Scope, Reply], bool]
"""Starts answering a request without a task of its own and calls the Reply once, then or later, from
the event loop; returns False, having done nothing, to leave the request to the route's ASGI handler."""


class EdgeRouter(Protocol):
    """The application's edge routes. It may also have `edge_direct(path) -> DirectHandler | None`:
    for an edge route's path, the direct handler tried first, if the route has one."""

    def edge_handler(self, path: str) -> ASGIApp | None:
        """The handler answering `path` on the lean path, or None for the ASGI application."""


class _NoEvent:
    """An event nobody waits for (uvicorn's cycle sets its `message_event`)."""

    def set(self) -> None:
        pass


class _Busy:
    """Stands in for uvicorn's current cycle while edge answers are outstanding, so the parent queues a
    pipelined non-edge request behind them instead of starting it at once."""

    response_complete = False
    disconnected = False
    keep_alive = True

    message_event = _NoEvent()


_BUSY = _Busy()


class _Answer:
    """One request's answer on its way out: the bytes of the whole HTTP answer once `ready`. An ASGI
    handler's two messages reach it through `send`; a direct handler calls it with the answer whole."""

    __slots__ = ("chunks", "complete", "data", "head", "keep_alive", "notify", "prefix", "ready")

    def __init__(self, prefix: bytes, head: bool, keep_alive: bool) -> None:
        self.prefix = prefix
        self.head = head
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.complete = False
        self.ready = False
        self.data: bytes | None = b""
        """The whole answer once ready; None when its task was cancelled (the connection closes)."""
        self.notify: Callable[[], None] | None = None
        """Called when a direct handler's answer becomes ready later (the protocol writes what is ready)."""

    def _head(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
        fields = [name + b": " + value for name, value in headers]
        block = b"\r\n".join(fields)
        # One count per character over the joined block, not four searches per header: a line
        # break inside a name or value shows as one more than the separators put there.
        if fields and (block.count(b"\r") != len(fields) - 1 or block.count(b"\n") != len(fields) - 1):
            raise RuntimeError("a header with a line break")
        return b"".join(
            (
                STATUS_LINE[status],
                self.prefix,
                block,
                b"\r\n" if fields else b"",
                b"" if self.keep_alive else b"connection: close\r\n",
                b"\r\n",
            )
        )

    async def send(self, message: Message) -> None:
        if not self.chunks:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.chunks.append(self._head(message["status"], message.get("headers", ())))
            return
        if message["type"] != "http.response.body" or self.complete:
            raise RuntimeError(f"unexpected {message['type']} on the edge path")
        if message.get("more_body", False):
            raise RuntimeError("edge answers are sent in one piece")
        if not self.head:
            self.chunks.append(message.get("body", b""))
        self.complete = True

    async def receive(self) -> Message:
        return _EMPTY_REQUEST

    def reply(self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> None:
        """A direct handler's answer (the Reply it was given); the first call counts."""
        if self.ready:
            return
        try:
            head = self._head(status, headers)
        except Exception:
            log.exception("a direct edge answer could not be written")
            self.fail()
        else:
            self.data = head if self.head else head + body
            self.ready = True
        if self.notify is not None:
            self.notify()

    def fail(self) -> None:
        """A 500 that closes the connection, in this answer's turn."""
        self.data, self.keep_alive, self.ready = _INTERNAL_ERROR, False, True


class EdgeProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._router = _find_router(self.app)
        self._direct_for: Callable[[str], DirectHandler | None] | None = getattr(
            self._router, "edge_direct", None
        )
        self._native: tuple[ASGIApp, Scope, bool, DirectHandler | None] | None = None
        self._answers: deque[_Answer] = deque()
        self._close_when_answered = False
        self._prefix_for: list[tuple[bytes, bytes]] | None = None
        self._prefix = b""
        self._idle_since: float | None = None
        """When the connection last went idle (its last answer out, nothing read since), in loop time."""
        self._idle_timer: asyncio.TimerHandle | None = None

    def on_message_begin(self) -> None:
        # uvicorn's own full scope (nine keys, a copy of the app state) is built only when the request
        # turns out to need it, in on_headers_complete: an edge request never reads it.
        self._native = None
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def _begin_uvicorn_scope(self) -> None:
        """What uvicorn's on_message_begin sets up, built late: keeps the URL and headers read so far."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        if self._router is not None and (self.cycle is None or self.cycle.response_complete):
            method = self.parser.get_method()
            if method in _NATIVE_METHODS and not self.parser.should_upgrade():
                # Any: httptools' stub types `query` as bytes, but it is None without a query, and
                # mypyc (this module is compiled) checks a value against its declared type.
                parsed: Any = httptools.parse_url(self.url)
                path = parsed.path.decode("ascii")
                if "%" in path:
                    path = unquote(path)
                handler = self._router.edge_handler(path)
                if handler is not None:
                    scope: Scope = {
                        "type": "http",
                        "method": method.decode("ascii"),
                        "path": path,
                        "query_string": parsed.query or b"",
                        "headers": self.headers,
                        "client": self.client,
                    }
                    keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                    direct = self._direct_for(path) if self._direct_for is not None else None
                    self._native = (handler, scope, keep_alive, direct)
                    return
        self._begin_uvicorn_scope()
        if self._answers:
            self.cycle = _BUSY  # type: ignore[assignment]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._native is None:
            super().on_body(body)
        # A GET's body means nothing to the edge routes: dropped, as they would ignore it.

    def on_message_complete(self) -> None:
        if self._native is None:
            super().on_message_complete()
            return
        handler, scope, keep_alive, direct = self._native
        self._native = None
        answer = _Answer(self._default_headers(), scope["method"] == "HEAD", keep_alive)
        self._answers.append(answer)
        if direct is None or not self._answer_directly(direct, scope, answer):
            task = self.loop.create_task(self._answer(handler, scope, answer))
            self.tasks.add(task)
            task.add_done_callback(partial(self._task_done, answer))
        if len(self._answers) >= _MAX_QUEUED:
            self.flow.pause_reading()

    def _answer_directly(self, direct: DirectHandler, scope: Scope, answer: _Answer) -> bool:
        """Start `direct`; False if it left the request to the ASGI handler. An answer it gives at once
        is written from the loop's next turn, not from inside the parser's callback."""
        try:
            taken = direct(scope, answer.reply)
        except Exception:
            log.exception("edge request %s %s failed", scope["method"], scope["path"])
            answer.fail()
            taken = True
        if not taken:
            return False
        if answer.ready:
            self.loop.call_soon(self._write_ready)
        else:
            answer.notify = self._write_ready
        return True

    async def _answer(self, handler: ASGIApp, scope: Scope, answer: _Answer) -> None:
        try:
            await handler(scope, answer.receive, answer.send)
            if not answer.complete:
                raise RuntimeError("the handler returned without completing its answer")
        except Exception:
            log.exception("edge request %s %s failed", scope["method"], scope["path"])
            answer.fail()
            return
        answer.data, answer.ready = b"".join(answer.chunks), True

    def _task_done(self, answer: _Answer, task: "asyncio.Task[None]") -> None:
        self.tasks.discard(task)
        if task.cancelled():  # only at a forced exit: the connection closes in this answer's turn
            answer.data, answer.ready = None, True
        self._write_ready()

    def _write_ready(self) -> None:
        """Write the answers that are ready, in request order, up to the first still in progress."""
        while self._answers and self._answers[0].ready:
            answer = self._answers.popleft()
            if self.transport.is_closing():
                continue
            if answer.data is None:
                self.transport.close()
                continue
            self.transport.write(answer.data)
            if not answer.keep_alive:
                self.transport.close()
            elif self._answers:
                self.server_state.total_requests += 1
            else:
                # The last one out: uvicorn's own bookkeeping (the count, reading resumed, a pipelined
                # non-edge request started, or the keep-alive timer armed).
                self.on_response_complete()
        if self._close_when_answered and not self._answers and not self.transport.is_closing():
            self.transport.close()

    # The keep-alive timeout without a timer per request. uvicorn arms a fresh `call_later` after every
    # answer and cancels it on the next read: 2.0 µs of CPU per request on uvloop (a timer object and a
    # libuv handle each time). Here one timer per connection is armed when it first goes idle; when it
    # fires it closes the connection if it has been idle for the whole timeout since its last answer,
    # and otherwise waits out the rest (or, busy, leaves re-arming to the next answer). A connection
    # still closes `timeout_keep_alive` seconds after its last answer, as in uvicorn.

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn calls this on every read (and when the connection is lost): the connection is busy."""
        self._idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's own (the count, reading resumed, a pipelined request started), arming the idle check
        above instead of a timer per answer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = self.loop.time()
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_at(
                    self._idle_since + self.timeout_keep_alive, self._idle_check
                )

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._idle_since is None:
            return  # busy: the next answer arms the check again
        due = self._idle_since + self.timeout_keep_alive
        if self.loop.time() >= due:
            self.timeout_keep_alive_handler()
        else:
            self._idle_timer = self.loop.call_at(due, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._idle_since = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _default_headers(self) -> bytes:
        """The server's default headers (Date, refreshed every second by uvicorn) as bytes, built once
        per refresh."""
        headers = self.server_state.default_headers
        if headers is not self._prefix_for:
            self._prefix_for = headers
            self._prefix = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return self._prefix

    def shutdown(self) -> None:
        if self._answers:
            self._close_when_answered = True
            return
        super().shutdown()


def _find_router(app: Any) -> EdgeRouter | None:
    """The application under uvicorn's wrappers (each keeps the one it wraps as `.app`), when it has edge
    routes."""
    for _ in range(8):
        if hasattr(app, "edge_handler"):
            return app  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
