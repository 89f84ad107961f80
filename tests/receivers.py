"""Real HTTP(S) receivers on 127.0.0.1 that play an affiliate's postback endpoint, each in its own
thread: one that answers 200, one that fails the first N calls of each URL, one that hangs, one that
redirects, one that answers any status; over TLS with a certificate the test made. Each records every
call it receives, and `wait_for_calls` waits on an event, not on a sleep loop."""

import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import trustme


@dataclass(frozen=True)
class Call:
    at: float
    """time.time() when it arrived."""
    path: str
    query: dict[str, str]
    host_header: str
    raw_query: str = ""
    """The query string as it came over the wire, escapes and all."""


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5. The dispatcher opens a connection per delivery at once
    # (10 in a test); past the backlog the kernel drops the SYN and resends it after 1 s, beyond the
    # tests' 0.5 s connect timeout: a failed attempt that never reached us, then a retry (seen in CI
    # as a conversion delivered once but attempted twice). A real receiver's backlog is 128 or more.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that refused our certificate, or hung up: what the tests look at is recorded


class Receiver:
    def __init__(
        self,
        *,
        fail_first: int = 0,
        fail_status: int = 500,
        status: int = 200,
        hang: bool = False,
        redirect: bool = False,
        delay: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ):
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.delay = delay
        self.status = status
        """What it answers (once past `fail_first`); tests may change it while running."""
        self.hang = hang
        self.redirect = redirect
        self.calls: list[Call] = []
        self.server_names: list[str | None] = []
        """The TLS server name (SNI) of each handshake; None when the client sent none."""
        self._seen: dict[str, int] = {}
        self._arrived = threading.Condition()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        if tls is not None:
            tls.sni_callback = self._note_server_name
            # The handshake happens in the connection's own thread, not in the accepting one.
            self._server.socket = tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def _note_server_name(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        with self._arrived:
            self.server_names.append(name)

    def _answer(self, path_and_query: str, host: str) -> int:
        parts = urlsplit(path_and_query)
        query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._arrived:
            self.calls.append(Call(time.time(), parts.path, query, host, parts.query))
            seen = self._seen.get(path_and_query, 0)
            self._seen[path_and_query] = seen + 1
            self._arrived.notify_all()
        if self.hang:
            self._release.wait(30)
            return 200
        if self.delay:
            time.sleep(self.delay)
        if self.redirect and parts.path != "/landed":
            return 302
        return self.fail_status if seen < self.fail_first else self.status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
            timeout = 5  # an idle kept-alive connection ends, and its thread with it

            def do_GET(self) -> None:
                status = receiver._answer(self.path, self.headers.get("host", ""))
                body = b"ok" if status < 300 else b"nope"
                try:
                    self.send_response(status)
                    if status == 302:
                        self.send_header("Location", f"{receiver.url}/landed")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller gave up (a timeout, or a killed server)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def calls_for(self, conversion_id: str) -> list[Call]:
        with self._arrived:
            return [call for call in self.calls if call.query.get("conversion") == conversion_id]

    def wait_for_calls(self, count: int, timeout: float = 10) -> list[Call]:
        """Wait until at least `count` calls arrived; return them all."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.calls) >= count, timeout):
                raise AssertionError(f"{len(self.calls)} calls arrived within {timeout}s, expected {count}")
            return list(self.calls)


def tls_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A server context presenting a certificate for `names` signed by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context
