"""Real HTTP receivers on 127.0.0.1 that play an affiliate's postback endpoint, each in its own thread:
one that answers 200, one that fails the first N calls of each URL, one that hangs, one that redirects.
Each records every call it receives."""

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Call:
    at: float
    """time.time() when it arrived."""
    path: str
    query: dict[str, str]
    host_header: str


class Receiver:
    def __init__(
        self,
        *,
        fail_first: int = 0,
        status: int = 200,
        hang: bool = False,
        redirect: bool = False,
        delay: float = 0.0,
    ):
        self.fail_first = fail_first
        self.delay = delay
        self.status = status
        """What it answers (once past `fail_first`); tests may change it while running."""
        self.hang = hang
        self.redirect = redirect
        self.calls: list[Call] = []
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _answer(self, path_and_query: str) -> int:
        with self._lock:
            parts = urlsplit(path_and_query)
            query = {
                name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()
            }
            self.calls.append(Call(time.time(), parts.path, query, ""))
            seen = self._seen.get(path_and_query, 0)
            self._seen[path_and_query] = seen + 1
        if self.hang:
            self._release.wait(30)
            return 200
        if self.delay:
            time.sleep(self.delay)
        if self.redirect and parts.path != "/landed":
            return 302
        return 500 if seen < self.fail_first else self.status

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = receiver._answer(self.path)
                with receiver._lock:
                    last = receiver.calls[-1]
                    receiver.calls[-1] = Call(last.at, last.path, last.query, self.headers.get("host", ""))
                body = b"ok" if status < 300 else b"nope"
                try:
                    self.send_response(status)
                    if status == 302:
                        self.send_header("Location", f"{receiver.url}/landed")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (a timeout, or a killed server)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def calls_for(self, conversion_id: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.query.get("conversion") == conversion_id]

    def wait_for_calls(self, count: int, timeout: float = 10) -> list[Call]:
        """Wait until at least `count` calls arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.calls) >= count:
                    return list(self.calls)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.calls)} calls arrived within {timeout}s, expected {count}")
